"""Regularisers against the baseline at a fixed number of steps, on a budget that overfits (issue #14).

Trains the same model on a slice of tinyshakespeare (the first --train-chars characters; validation:
the --val-chars characters that follow them) once with today's settings and once
with each regulariser (and all together), each run a `charrnn train` process with one intra-op thread,
--jobs at a time, and prints one table: best and final validation loss beside the baseline's, the
final train loss (the gap shows the overfitting), steps and seconds. Steps, not seconds, are compared:
on a shared machine a time budget is not repeatable. The slice is small so that a model a busy 2-core
CPU can train in minutes overfits it, as the default model overfits the whole corpus in a long run.

    OMP_NUM_THREADS=1 python3 benchmarks/regularise.py --work /tmp/regbench

Finished runs are reused from --work (delete it to measure again).
"""

from __future__ import annotations

import argparse
import concurrent.futures as cf
import datetime
import json
import os
import platform
import subprocess
import sys
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
CORPUS = os.path.join(ROOT, "..", "shared", "corpora", "tinyshakespeare.txt")
RUNS = {  # name -> extra flags (the baseline is today's defaults)
    "baseline": [],
    "locked": ["--locked-dropout"],
    "weight-drop": ["--weight-drop", "0.3"],
    "embed-dropout": ["--embed-dropout", "0.1"],
    "ema": ["--ema", "0.99"],
    "variable-len": ["--variable-len"],
    "baseline-seed": ["--seed", "7"],  # the baseline again with another seed: the noise of one figure
    "dropout-0.3": ["--dropout", "0.3"],
    "locked-0.3": ["--locked-dropout", "--dropout", "0.3"],
    "weight-drop+ema": ["--weight-drop", "0.3", "--ema", "0.99"],
    "all": ["--locked-dropout", "--weight-drop", "0.3", "--embed-dropout", "0.1", "--ema", "0.99",
            "--variable-len"],
}

EXTRA = ("baseline-seed", "dropout-0.3", "locked-0.3", "weight-drop+ema")
DEFAULT_SET = [n for n in RUNS if n not in EXTRA]  # the extra runs: with --only


def cpu_model() -> str:
    try:
        out = subprocess.run(["lscpu"], capture_output=True, text=True).stdout
        return next(line.split(":", 1)[1].strip() for line in out.splitlines() if line.startswith("Model name"))
    except (OSError, StopIteration):
        return platform.processor() or "unknown CPU"


def make_corpus(a) -> tuple[str, str]:
    with open(a.corpus, encoding="utf-8") as f:
        text = f.read()
    train, val = os.path.join(a.work, "train.txt"), os.path.join(a.work, "val.txt")
    for path, part in ((train, text[:a.train_chars]), (val, text[a.train_chars:a.train_chars + a.val_chars])):
        with open(path, "w", encoding="utf-8") as f:
            f.write(part)
    return train, val


def train(a, name: str, flags: list[str], train_txt: str, val_txt: str) -> dict:
    run = os.path.join(a.work, "runs", name)
    metrics = os.path.join(run, "metrics.jsonl")
    done = os.path.join(run, "done.json")
    if not os.path.exists(done):
        cmd = [sys.executable, "-m", "charrnn", "train", train_txt, "--val-file", val_txt, "--val-frac", "0",
               "--test-frac", "0", "--checkpoint-dir", os.path.join(a.work, "runs"), "--name", name,
               "--max-steps", str(a.steps), "--eval-every", str(a.eval_every), "--log-every", str(a.eval_every),
               "--save-every", str(a.steps), "--layers", str(a.layers), "--hidden", str(a.hidden),
               "--batch-size", str(a.batch_size), "--seq-len", str(a.seq_len), "--device", "cpu",
               "--precision", a.precision, "--seed", str(a.seed), *flags]
        if os.path.isdir(run):
            cmd = [sys.executable, "-m", "charrnn", "train", "--resume", run, "--checkpoint-dir",
                   os.path.join(a.work, "runs")]
        env = dict(os.environ, OMP_NUM_THREADS=str(a.threads), PYTHONPATH=ROOT)
        t0 = time.perf_counter()
        r = subprocess.run(cmd, capture_output=True, text=True, env=env)
        if r.returncode != 0:
            raise SystemExit(f"{name} failed: {r.stderr.strip().splitlines()[-1:]}")
        with open(done, "w") as f:
            json.dump({"seconds": time.perf_counter() - t0, "flags": flags}, f)
    recs = [json.loads(line) for line in open(metrics, encoding="utf-8")]
    val = [r for r in recs if r["split"] == "val"]
    tr = [r for r in recs if r["split"] == "train"]
    with open(done) as f:
        info = json.load(f)
    best = min(val, key=lambda r: r["loss"])
    return {"name": name, "flags": " ".join(flags) or "(defaults)", "best": best["loss"], "best_step": best["step"],
            "final": val[-1]["loss"], "train": tr[-1]["loss"] if tr else float("nan"), "steps": val[-1]["step"],
            "seconds": info["seconds"], "curve": [(r["step"], r["loss"]) for r in val]}


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--corpus", default=CORPUS)
    p.add_argument("--work", default="/tmp/charrnn-regbench")
    p.add_argument("--train-chars", type=int, default=40_000)
    p.add_argument("--val-chars", type=int, default=20_000)
    p.add_argument("--steps", type=int, default=600)
    p.add_argument("--eval-every", type=int, default=50)
    p.add_argument("--layers", type=int, default=2)
    p.add_argument("--hidden", type=int, default=256)
    p.add_argument("--batch-size", type=int, default=16)
    p.add_argument("--seq-len", type=int, default=128)
    p.add_argument("--precision", default="fp32")
    p.add_argument("--seed", type=int, default=1337)
    p.add_argument("--threads", type=int, default=1, help="intra-op threads per run")
    p.add_argument("--jobs", type=int, default=2, help="runs at once")
    p.add_argument("--only", nargs="*", default=None, help=f"a subset of {', '.join(RUNS)}")
    a = p.parse_args()
    os.makedirs(os.path.join(a.work, "runs"), exist_ok=True)
    train_txt, val_txt = make_corpus(a)
    names = ["baseline"] + [n for n in (a.only or DEFAULT_SET) if n != "baseline"]
    with cf.ThreadPoolExecutor(a.jobs) as pool:
        res = list(pool.map(lambda n: train(a, n, RUNS[n], train_txt, val_txt), names))
    base = res[0]
    print(f"Regularisers at {a.steps} steps: lstm {a.layers}x{a.hidden}, batch {a.batch_size} x {a.seq_len}, "
          f"{a.precision}; train: first {a.train_chars:,} chars of tinyshakespeare, val: the next {a.val_chars:,}")
    print(f"{cpu_model()}, {a.threads} thread(s) per run, {a.jobs} runs at once; "
          f"{datetime.datetime.now(datetime.timezone.utc):%Y-%m-%d %H:%M} UTC\n")
    print("| run | flags | best val (baseline) | at step | final val (baseline) | final train (baseline) | steps | s |")
    print("|---|---|---:|---:|---:|---:|---:|---:|")
    for r in res:
        print(f"| {r['name']} | `{r['flags']}` | {r['best']:.4f} ({base['best']:.4f}) | {r['best_step']} | "
              f"{r['final']:.4f} ({base['final']:.4f}) | {r['train']:.4f} ({base['train']:.4f}) | {r['steps']} | "
              f"{r['seconds']:.0f} |")
    print("\nvalidation loss by step:")
    print("| step | " + " | ".join(r["name"] for r in res) + " |")
    print("|---:|" + "---:|" * len(res))
    for i, (step, _) in enumerate(base["curve"]):
        print(f"| {step} | " + " | ".join(f"{r['curve'][i][1]:.4f}" if i < len(r["curve"]) else "" for r in res)
              + " |")


if __name__ == "__main__":
    main()
