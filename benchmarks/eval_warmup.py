"""The evaluation's warm-up (issue "Numbers you can trust"): how far eval's parallel streams are from one
pass over the whole text, by warm-up length, and what the warm-up costs.

    nice python benchmarks/eval_warmup.py --run RUN [--file TEXT] [--warm 0 64 256 1024] [--repeat 3]
        [--threads 1] [--timing-only]

The run's validation split (or --file) is scored as `charrnn eval` reads it (up to 32 streams of at least
4,096 tokens, each warmed on W tokens before its cut) for each W, and as one stream (the reference: every
token given everything before it). Printed per W: the gap to the reference in nats per token and per cut
(e(W), the excess a cut leaves; evaluate.EVAL_WARM's comment), and the time against W = 0 in the same
process, the two alternated --repeat times (medians): CPU seconds of this process (what the warm-up
adds, steady on a shared machine) and wall seconds (which a busy machine scatters). --timing-only
skips the one-stream reference (batch 1: slow).
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import time

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.dirname(HERE))

import torch  # noqa: E402

import charrnn  # noqa: E402
import charrnn.evaluation.evaluate as ev  # noqa: E402
from charrnn.data.batching import eval_plan  # noqa: E402


def total(model, ids, warm: int) -> tuple[float, float, float]:
    ev.EVAL_WARM = warm
    t0, c0 = time.perf_counter(), time.process_time()
    nll, _ = ev.score(model.module, ids, model.device, "fp32")
    return nll, time.process_time() - c0, time.perf_counter() - t0


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--run", required=True, help="a run directory or checkpoint")
    ap.add_argument("--file", help="score this text instead of the run's validation split")
    ap.add_argument("--warm", type=int, nargs="+", default=[0, 64, 256, 1024])
    ap.add_argument("--repeat", type=int, default=3)
    ap.add_argument("--threads", type=int, default=0, help="torch threads (0: torch's default)")
    ap.add_argument("--timing-only", action="store_true")
    a = ap.parse_args()
    if a.threads:
        torch.set_num_threads(a.threads)
    model = charrnn.load(a.run, device="cpu")
    if a.file:
        ids = ev.file_ids(model.tokenizer, a.file)[0]
    else:
        ids = ev.split_ids(model._ckpt, model.path, "val")[0]
    n = len(ids) - 1
    plan = eval_plan(ids)
    cuts = plan.streams - 1
    print(f"{model!r}, {torch.get_num_threads()} threads\n{n:,} targets, {plan.streams} streams of {plan.length:,} "
          f"({cuts} cuts)", flush=True)
    one = None
    if not a.timing_only:
        t0 = time.perf_counter()
        one, _ = ev._stateful_pass(model.module, ids, eval_plan(ids, max_streams=1), model.device, "fp32", False, "")
        print(f"one stream: {one / n:.6f} nats/token ({time.perf_counter() - t0:.1f}s)", flush=True)
    print(f"{'W':>6} {'W / stream':>10} {'gap nats/token':>15} {'e(W) nats/cut':>14} {'CPU s / W=0':>12} "
          f"{'wall s / W=0':>13} {'W=0 CPU s':>10}", flush=True)
    for w in a.warm:
        cpu, wall, cpu0, wall0 = [], [], [], []
        for _ in range(a.repeat):
            nll, c, t = total(model, ids, w)
            cpu.append(c), wall.append(t)
            _, c, t = total(model, ids, 0)
            cpu0.append(c), wall0.append(t)
        med = statistics.median
        gap = f"{(nll - one) / n:>15.2e} {(nll - one) / max(cuts, 1):>14.3f}" if one is not None else f"{'':>30}"
        print(f"{w:>6} {w / plan.length:>10.3f} {gap} {med(cpu) / med(cpu0):>12.3f} {med(wall) / med(wall0):>13.3f} "
              f"{med(cpu0):>10.2f}", flush=True)


if __name__ == "__main__":
    main()
