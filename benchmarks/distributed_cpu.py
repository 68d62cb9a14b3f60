"""Training throughput of one process against torchrun ranks on the same CPU.

    python benchmarks/distributed_cpu.py [--corpus ../shared/corpora/tinyshakespeare.txt] [--steps 120]
                                         [--ranks 2] [--repeats 2]

One process with all the cores as intra-op threads (OMP_NUM_THREADS = cores), one process with one
thread, and N ranks started by torchrun (gloo on 127.0.0.1) with cores/N threads each and the
batch's streams split among them.
Both train the same shapes for the same steps; the figure is the median of the train lines'
tok_s after the first (the whole batch's tokens per second, all ranks together), runs alternated
to spread a shared machine's load over both. Prints a markdown table for docs/BENCHMARKS.md.
"""

from __future__ import annotations

import argparse
import json
import os
import socket
import statistics
import subprocess
import sys
import tempfile

HERE = os.path.dirname(os.path.abspath(__file__))
DEFAULT_CORPUS = os.path.join(HERE, "..", "..", "shared", "corpora", "tinyshakespeare.txt")
SHAPES = [("lstm 2x128, batch 16 x 64", ["--layers", "2", "--hidden", "128", "--batch-size", "16", "--seq-len", "64"]),
          ("lstm 2x512, batch 32 x 128 (default)", ["--layers", "2", "--hidden", "512", "--batch-size", "32",
                                                    "--seq-len", "128"])]


def cpu_model() -> str:
    try:
        with open("/proc/cpuinfo") as f:
            return next(line.split(":", 1)[1].strip() for line in f if line.startswith("model name"))
    except (OSError, StopIteration):
        return "unknown CPU"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def run(corpus: str, shape: list[str], steps: int, ranks: int, threads: int, ck: str, name: str) -> float:
    env = dict(os.environ, OMP_NUM_THREADS=str(threads),
               PYTHONPATH=os.path.join(HERE, "..") + os.pathsep + os.environ.get("PYTHONPATH", ""))
    launch = ([sys.executable, "-m", "torch.distributed.run", "--nproc-per-node", str(ranks), "--master-addr",
               "127.0.0.1", "--master-port", str(free_port())] if ranks > 1 else [sys.executable])
    subprocess.run([*launch, "-m", "charrnn", "train", corpus, "--checkpoint-dir", ck, "--name", name, *shape,
                    "--max-steps", str(steps), "--log-every", "10", "--eval-every", str(10 * steps), "--device", "cpu",
                    "--precision", "fp32", "--dropout", "0"], check=True, env=env, stderr=subprocess.DEVNULL)
    with open(os.path.join(ck, name, "metrics.jsonl")) as f:
        tok_s = [r["tok_s"] for r in map(json.loads, f) if r["split"] == "train"]
    return statistics.median(tok_s[1:])


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--corpus", default=DEFAULT_CORPUS)
    ap.add_argument("--steps", type=int, default=120)
    ap.add_argument("--ranks", type=int, default=2)
    ap.add_argument("--repeats", type=int, default=2)
    args = ap.parse_args()
    cores = os.cpu_count() or 1
    per_rank = max(1, cores // args.ranks)
    setups = [(f"1 process, {cores} threads", 1, cores), ("1 process, 1 thread", 1, 1),
              (f"{args.ranks} ranks x {per_rank} thread(s)", args.ranks, per_rank)]
    print(f"{cpu_model()}, {cores} cores; {args.steps} steps; median train tok/s (runs in brackets), "
          "runs alternated\n")
    print("| shape | " + " | ".join(label for label, _, _ in setups) + " |")
    print("|---|" + "---|" * len(setups))
    with tempfile.TemporaryDirectory() as ck:
        for j, (label, shape) in enumerate(SHAPES):
            figs = [[] for _ in setups]
            for i in range(args.repeats):
                for n, (_, ranks, threads) in enumerate(setups):
                    figs[n].append(run(args.corpus, shape, args.steps, ranks, threads, ck, f"r{i}-s{j}-{n}"))
            cells = [f"{statistics.median(v) / 1000:.1f}k ({', '.join(f'{x / 1000:.1f}k' for x in v)})" for v in figs]
            print(f"| {label} | " + " | ".join(cells) + " |", flush=True)


if __name__ == "__main__":
    main()
