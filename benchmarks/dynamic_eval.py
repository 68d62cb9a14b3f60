"""Dynamic evaluation against static evaluation on tinyshakespeare's validation text.

    python benchmarks/dynamic_eval.py [--corpus ../shared/corpora/tinyshakespeare.txt] [--seconds 250]
    python benchmarks/dynamic_eval.py --run checkpoints/tinyshakespeare     # score a run you already have

Trains the default model for --seconds with nanoGPT's split (--val-frac 0.1 --test-frac 0), unless
--run gives a run, then scores the whole validation split three ways: static as `charrnn eval`
reads it (a few parallel streams, state reset at their starts), static as one stream (what dynamic
evaluation reads, with no adaptation), and dynamic (`charrnn eval --dynamic`). Prints a markdown
table for docs/BENCHMARKS.md with the CPU, threads and load average (other work on the machine
slows the timings, never the bits per character, which are deterministic).
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time

import torch

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))  # this checkout's charrnn
import charrnn  # noqa: E402
from charrnn.system.device import resolve_precision  # noqa: E402
from charrnn.settings import EVAL, by_name  # noqa: E402

DEFAULT_CORPUS = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "..", "shared", "corpora",
                              "tinyshakespeare.txt")


def cpu_model() -> str:
    """The CPU's name as lscpu gives it (platform's processor string is often empty on Linux)."""
    try:
        out = subprocess.run(["lscpu"], capture_output=True, text=True, timeout=10).stdout
        return next(line.split(":", 1)[1].strip() for line in out.splitlines() if line.startswith("Model name"))
    except (OSError, StopIteration, subprocess.SubprocessError):
        return "unknown CPU"


def train(corpus: str, seconds: float, ck: str) -> str:
    log_path = os.path.join(ck, "train.log")
    with open(log_path, "w") as log:
        subprocess.run([sys.executable, "-m", "charrnn", "train", corpus, "--val-frac", "0.1", "--test-frac", "0",
                        "--max-time", str(seconds), "--checkpoint-dir", ck, "--name", "ts"], check=True, stderr=log)
    return os.path.join(ck, "ts")


def timed(fn):
    """The result, wall seconds and CPU seconds of this process (less sensitive to a busy machine)."""
    t0, c0 = time.perf_counter(), time.process_time()
    out = fn()
    return out, time.perf_counter() - t0, time.process_time() - c0


def main() -> None:
    d = by_name(EVAL)
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--corpus", default=DEFAULT_CORPUS)
    ap.add_argument("--seconds", type=float, default=250.0)
    ap.add_argument("--run", metavar="DIR", help="score this run instead of training one")
    ap.add_argument("--keep", metavar="DIR", help="train into DIR (kept) instead of a temporary directory")
    ap.add_argument("--dyn-lr", type=float, default=d["dyn_lr"].default)
    ap.add_argument("--dyn-seq", type=int, default=d["dyn_seq"].default)
    ap.add_argument("--dyn-decay", type=float, default=d["dyn_decay"].default)
    a = ap.parse_args()
    load_before = os.getloadavg()
    with tempfile.TemporaryDirectory() as tmp:
        run = a.run
        if run is None:
            if not os.path.exists(a.corpus):
                sys.exit(f"corpus {a.corpus} not found (see ../shared/corpora/README.md)")
            os.makedirs(a.keep or tmp, exist_ok=True)
            run = train(a.corpus, a.seconds, a.keep or tmp)
        model = charrnn.load(run, device="cpu")
        with open(os.path.join(run, "metrics.jsonl")) as f:
            steps = [json.loads(line) for line in f][-1]["step"]
        dyn = dict(dyn_lr=a.dyn_lr, dyn_seq=a.dyn_seq, dyn_decay=a.dyn_decay)
        rows = [("static, as `charrnn eval` reads it", *timed(lambda: model.evaluate(progress=False))),
                ("static, one stream (`--dynamic --dyn-lr 0`)",
                 *timed(lambda: model.evaluate(progress=False, dynamic=True, dyn_lr=0.0, dyn_seq=a.dyn_seq))),
                (f"dynamic (`--dynamic --dyn-lr {a.dyn_lr:g} --dyn-seq {a.dyn_seq} --dyn-decay {a.dyn_decay:g}`)",
                 *timed(lambda: model.evaluate(progress=False, dynamic=True, **dyn)))]
    load_after = os.getloadavg()
    m = rows[0][1]
    print(f"\n{time.strftime('%Y-%m-%d')}, {cpu_model()}, {torch.get_num_threads()} threads, torch {torch.__version__}, "
          f"{resolve_precision(model.config.precision, model.device)} -> {model.module.cfg.cell} {model.module.cfg.layers}x"
          f"{model.module.cfg.hidden} trained {steps} steps; {m['text']} ({m['tokens']:,} tokens scored); "
          f"load average {load_before[0]:.1f} before, {load_after[0]:.1f} after\n")
    print("| evaluation | val loss (nats/token) | val bits/char | wall s | CPU s |")
    print("|---|---:|---:|---:|---:|")
    for name, r, secs, cpu in rows:
        print(f"| {name} | {r['loss']:.4f} | {r['bpc']:.4f} | {secs:.0f} | {cpu:.0f} |")
    print(f"\ndynamic minus static (one stream): {rows[2][1]['bpc'] - rows[1][1]['bpc']:+.4f} bits/char")


if __name__ == "__main__":
    main()
