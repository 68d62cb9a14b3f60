"""--adaptive-dropout on and off, at equal steps (issue #24): what the rule itself is worth.

A --max-time run's learning-rate schedule follows the clock, so two runs of the same code and seed
part ways from the first steps, and on these corpora one run against another moves the best
validation loss by 0.02-0.1 nats/token (benchmarks/small_corpora.py's --noise). Here each pair is
the same code, seed and shape with a step budget (--max-steps) instead: the two runs are identical,
bit for bit, until the rule first raises dropout, so their difference is the rule's effect (on this
seed); where it never fires the difference is exactly 0.

The six corpora of benchmarks/small_corpora.py, the shape the budget picked for every one of them
at 250 s on a quiet 2-core machine (lstm 2x256, batch 16 x 64), evaluations every 200 steps as there,
the two runs of a pair side by side (one thread each). A pair's runs are "off" (today's defaults:
--no-adaptive-dropout) and "on".

    python3 benchmarks/adaptive_dropout.py --work /tmp/adapt --steps 2600

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
         "--save-every", "200"]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--work", default="/tmp/adaptive_dropout")
    ap.add_argument("--steps", type=int, default=2600, help="--max-steps of each run")
    ap.add_argument("--corpora", default=",".join(KINDS))
    ap.add_argument("--seed", type=int, default=1337)
    a = ap.parse_args()
    a.work = os.path.abspath(a.work)
    rows = []
    for name in [c for c in a.corpora.split(",") if c]:
        corpus = build(a.work, name)
        flags = [*SHAPE, "--max-steps", str(a.steps), "--seed", str(a.seed)]
        jobs = [(a.work, ROOT, corpus, name, f"{name}-{which}-s{a.seed}", 0, [*flags, f"--{switch}"])
                for which, switch in (("off", "no-adaptive-dropout"), ("on", "adaptive-dropout"))]
        before = os.getloadavg()[0]
        with cf.ThreadPoolExecutor(2) as ex:
            off, on = ex.map(lambda j: run(*j), jobs)
        rows.append((name, off, on, f"{before:.1f}-{os.getloadavg()[0]:.1f}"))
        print(f"{name}: done", file=sys.stderr, flush=True)
    now = datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%d %H:%M UTC")
    print(f"--adaptive-dropout off against on, {a.steps} steps each, seed {a.seed}, lstm 2x256 16x64; {cpu_model()}, "
          f"1 thread per run, 2 runs at once; {now}\n")
    print("| corpus | kind | dropout raised at (step: to) | best val off (step) | best val on (step) | on lower by "
          "| load |")
    print("|---|---|---|---:|---:|---:|---|")
    gains = []
    for name, off, on, load in rows:
        raised = ", ".join(f"{s:,}: {p:g}" for s, p in on["raised"]) or "never"
        gain = off["best_val"] - on["best_val"]
        gains.append(gain)
        print(f"| {name} | {KINDS[name]} | {raised} | {off['best_val']:.4f} ({off['best_step']:,}) | "
              f"{on['best_val']:.4f} ({on['best_step']:,}) | {gain:+.4f} | {load} |")
    print(f"\nmean: on lower by {sum(gains) / len(gains):+.4f} nats/token over {len(gains)} corpora")


if __name__ == "__main__":
    main()
