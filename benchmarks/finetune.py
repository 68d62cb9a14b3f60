"""Fine-tuning against training from scratch on a small corpus of another kind, for the same seconds.

    nice python benchmarks/finetune.py [--small ../shared/corpora/tinyshakespeare.txt] [--chars 300000]
                                       [--pretrain 250] [--seconds 60] [--dir DIR] [--flags "..."]

1. pretrain: ``charrnn train`` with its defaults on the built-in pystdlib corpus (Python source) for
   --pretrain seconds (1% held out, evaluated once at the end: a full pass over 5% costs minutes);
2. on the first --chars characters of --small (English verse; nanoGPT's split, last 10% validation):
   scratch for --seconds, and fine-tuned from the pretrained run (``--init-from``) for as many steps
   as scratch took (load-proof: the steps a second buys on a shared machine vary severalfold) at the
   default learning rate (0.003) and at --lr 0.001; each evaluated at its end on the same
   validation text.

--flags go to every run (default: a 2x256 LSTM at 16 x 64 tokens per step; the 2x512 default at
32 x 128 takes 1-5 s per step on 2 shared cores without AMX: too few steps in 60 s to compare).
Run it with OMP_NUM_THREADS=1 on a busy machine: two threads that keep waiting for each other
made every step ~9x slower there (docs/BENCHMARKS.md). Prints a markdown table (CPU model,
threads, torch) for docs/BENCHMARKS.md and keeps every run, its stderr log and a sample under --dir
(run it from the repository root).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import sys
import tempfile
import time

import numpy as np
import torch

HERE = os.path.dirname(os.path.abspath(__file__))
DEFAULT_SMALL = os.path.join(HERE, "..", "..", "shared", "corpora", "tinyshakespeare.txt")


def cpu_model() -> str:
    try:
        out = subprocess.run(["lscpu"], capture_output=True, text=True).stdout
        for line in out.splitlines():
            if line.startswith("Model name:"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown CPU"


def train(where: str, name: str, corpus: str | None, *flags) -> dict:
    """One ``charrnn train`` run; its last validation, steps and median tokens/s."""
    cmd = [sys.executable, "-m", "charrnn", "train", *([corpus] if corpus else []), "--checkpoint-dir", where,
           "--name", name, "--eval-every", "100000", *map(str, flags)]
    t0 = time.time()
    with open(os.path.join(where, f"{name}.log"), "w") as log:
        log.write("$ charrnn " + " ".join(cmd[3:]) + "\n")
        log.flush()
        subprocess.run(cmd, check=True, stderr=log)
    rows = [json.loads(line) for line in open(os.path.join(where, name, "metrics.jsonl"))]
    val = [r for r in rows if r["split"] == "val"][-1]
    train_rows = [r for r in rows if r["split"] == "train"]
    tok_s = float(np.median([r["tok_s"] for r in train_rows])) if train_rows else float("nan")
    return {**val, "tok_s": tok_s, "wall": time.time() - t0}


def sample(where: str, name: str) -> str:
    out = subprocess.run([sys.executable, "-m", "charrnn", "sample", os.path.join(where, name), "--length", "300",
                          "--seed", "1", "--temp", "0.8", "--prime", "ROMEO:"], capture_output=True, text=True,
                         check=True).stdout
    with open(os.path.join(where, f"{name}.sample.txt"), "w") as f:
        f.write(out)
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--small", default=DEFAULT_SMALL)
    ap.add_argument("--chars", type=int, default=300_000)
    ap.add_argument("--pretrain", type=float, default=250.0)
    ap.add_argument("--seconds", type=float, default=60.0)
    ap.add_argument("--dir", default=None, help="where the runs go (default: a new temporary directory, kept)")
    ap.add_argument("--flags", default="--hidden 256 --batch-size 16 --seq-len 64",
                    help="charrnn train flags for every run")
    a = ap.parse_args()
    if not os.path.exists(a.small):
        sys.exit(f"corpus {a.small} not found (see ../shared/corpora/README.md)")
    where = a.dir or tempfile.mkdtemp(prefix="charrnn-finetune-")
    os.makedirs(where, exist_ok=True)
    small = os.path.join(where, "small.txt")
    with open(a.small, encoding="utf-8", newline="") as f, open(small, "w", encoding="utf-8", newline="") as g:
        g.write(f.read()[: a.chars])
    split = ["--val-frac", "0.1", "--test-frac", "0", *a.flags.split()]
    if not os.path.exists(os.path.join(where, "pretrain", "best.pt")):
        pre = train(where, "pretrain", None, "--val-frac", "0.01", "--test-frac", "0", *a.flags.split(),
                    "--max-time", a.pretrain)
    else:
        pre = {"loss": float("nan"), "bpc": float("nan"), "step": "(kept)", "tok_s": float("nan")}
    init = ["--init-from", os.path.join(where, "pretrain"), "--extend-vocab"]
    rows = [("pretrain: pystdlib (val: last 1% of pystdlib)", pre, f"{a.pretrain:g}")]
    scratch = train(where, "scratch", small, *split, "--max-time", a.seconds)
    rows.append(("scratch (lr 0.003)", scratch, f"{a.seconds:g}"))
    # The fine-tuned runs take as many steps as scratch did in its seconds: on a shared machine the
    # steps one second buys vary severalfold with the load, steps do not (same model, same batch).
    n = scratch["step"]
    for name, lr in (("finetune", []), ("finetune-lr1e-3", ["--lr", "0.001"])):
        m = train(where, name, small, *split, *init, *lr, "--max-steps", n)
        rows.append((f"fine-tuned: --init-from{' ' + ' '.join(lr) if lr else ' (lr 0.003)'}", m,
                     f"{m['elapsed']:.0f}"))
    print(f"\n{time.strftime('%Y-%m-%d')}, {cpu_model()}, {torch.get_num_threads()} threads, torch "
          f"{torch.__version__}; small corpus: first {a.chars:,} characters of {os.path.basename(a.small)} "
          f"(last 10% validation); flags {a.flags!r}; runs in {where}\n")
    print("| run | seconds (training) | steps | tokens/s | val loss (nats/char) | val bits/char |")
    print("|---|---:|---:|---:|---:|---:|")
    for name, m, secs in rows:
        print(f"| {name} | {secs} | {m['step']} | {m['tok_s']:,.0f} | {m['loss']:.4f} | {m['bpc']:.4f} |")
    for name in ("scratch", "finetune"):
        print(f"\n{name} sample (--seed 1 --temp 0.8 --prime ROMEO:):\n{sample(where, name)}")


if __name__ == "__main__":
    main()
