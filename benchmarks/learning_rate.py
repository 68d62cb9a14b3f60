"""The peak learning rate at equal steps (issue #24): what a higher --lr is worth to a short run.

The six corpora of benchmarks/small_corpora.py, the shape the budget picks for them on a 2-core CPU
(2x256, batch 16 x 64; --cell lstm unless given), evaluations every 200 steps, --max-steps STEPS (the cosine decays over
exactly those steps, as a --max-time run's does over its time), --no-adaptive-dropout (the rate
alone). Each corpus runs every --lrs value; the first is the reference (today's default, 3e-3) and the
table gives each other rate's best validation loss and its gain over the reference, in the same run
of this script. With a step budget a run is deterministic: the machine's load changes its time, never
its figures. Two runs at once, one thread each.

    python3 benchmarks/learning_rate.py --work /tmp/lr --steps 1000 --lrs 3e-3,6e-3,1e-2

Finished runs are reused from --work (delete it to measure again).
"""

from __future__ import annotations

import argparse
import concurrent.futures as cf
import datetime
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from small_corpora import KINDS, ROOT, build, run  # noqa: E402

from charrnn.system.device import cpu_model  # noqa: E402

SHAPE = ["--layers", "2", "--hidden", "256", "--batch-size", "16", "--seq-len", "64", "--eval-every", "200",
         "--save-every", "200", "--no-adaptive-dropout"]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--work", default="/tmp/learning_rate")
    ap.add_argument("--steps", type=int, default=1000, help="--max-steps of each run")
    ap.add_argument("--lrs", default="3e-3,6e-3,1e-2", help="peak rates; the first is the reference")
    ap.add_argument("--corpora", default=",".join(KINDS))
    ap.add_argument("--seed", type=int, default=1337)
    ap.add_argument("--cell", default="lstm")
    a = ap.parse_args()
    a.work = os.path.abspath(a.work)
    lrs = [x for x in a.lrs.split(",") if x]
    names = [c for c in a.corpora.split(",") if c]
    cell = "" if a.cell == "lstm" else f"-{a.cell}"
    label = lambda name, lr: f"{name}-lr{lr}-{a.steps}-s{a.seed}{cell}"  # noqa: E731
    jobs = [(a.work, ROOT, build(a.work, name), name, label(name, lr), 0,
             [*SHAPE, "--cell", a.cell, "--max-steps", str(a.steps), "--lr", lr, "--seed", str(a.seed)])
            for name in names for lr in lrs]
    with cf.ThreadPoolExecutor(2) as ex:
        results = dict(zip([j[4] for j in jobs], ex.map(lambda j: run(*j), jobs)))
    now = datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%d %H:%M UTC")
    print(f"peak learning rate at {a.steps} steps, seed {a.seed}, {a.cell} 2x256 16x64; {cpu_model()}, 1 thread per "
          f"run, 2 runs at once; {now}\n")
    print("| corpus | kind | " + " | ".join(f"--lr {lr}: best val (step)" for lr in lrs) + " | " +
          " | ".join(f"{lr} lower by" for lr in lrs[1:]) + " |")
    print("|---|---|" + "---:|" * (2 * len(lrs) - 1))
    gains = {lr: [] for lr in lrs[1:]}
    for name in names:
        r = [results[label(name, lr)] for lr in lrs]
        for lr, x in zip(lrs[1:], r[1:]):
            gains[lr].append(r[0]["best_val"] - x["best_val"])
        print(f"| {name} | {KINDS[name]} | " + " | ".join(f"{x['best_val']:.4f} ({x['best_step']:,})" for x in r) +
              " | " + " | ".join(f"{g[-1]:+.4f}" for g in gains.values()) + " |")
    for lr, g in gains.items():
        print(f"\n--lr {lr}: lower than --lr {lrs[0]} by {sum(g) / len(g):+.4f} nats/token on average, "
              f"on {sum(x > 0 for x in g)} of {len(g)} corpora")


if __name__ == "__main__":
    main()
