"""Calibrate the budget's compute model: short trainings of several shapes and budgets, then a fit.

    python benchmarks/calibrate_budget.py [--corpus ../shared/corpora/tinyshakespeare.txt] [--out runs.jsonl]
    python benchmarks/calibrate_budget.py --fit-only runs.jsonl

Each run is `charrnn train CORPUS --val-frac 0.1 --test-frac 0 --precision fp32 --max-steps S`
with its shape given explicitly (nothing chosen for it) and one evaluation, at the end. What is fitted
is the final validation loss against what the run did: N parameters (without the embedding), S
optimizer steps and b tokens per step. Step budgets (not seconds) make every point independent of
how busy the machine is; what a second buys is the probe's business (charrnn/probe.py). The step
budgets span what each shape reaches in 30 s to 300 s on a 2-core fp32 CPU. On a shared machine,
run it with OMP_NUM_THREADS=1: the points do not depend on the thread count, and one thread per
process is not stalled by descheduled partner threads.

    L(N, S, b) = E + A / N^alpha + C / S_eff^beta,   S_eff = S * b / (b + b_crit)

S_eff counts steps that each carry a full "critical batch" of b_crit tokens: with small batches a
step is worth less (noisier gradient), with large ones a step is worth one step (McCandlish et al.
2018). alpha, beta and b_crit are searched on a grid; E, A, C are then least squares.
The constants go into charrnn/budget.py (COMPUTE_MODEL) and docs/BENCHMARKS.md.
"""

from __future__ import annotations

import argparse
import itertools
import json
import os
import subprocess
import sys
import tempfile
import time

import numpy as np

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.dirname(HERE))
DEFAULT_CORPUS = os.path.join(HERE, "..", "..", "shared", "corpora", "tinyshakespeare.txt")

# layers, hidden, batch, window, step budgets
PLAN = [
    (2, 128, 16, 64, (100, 300, 1000, 3000)),
    (2, 192, 16, 64, (1000,)),
    (2, 256, 16, 64, (200, 600, 1500)),
    (2, 256, 32, 128, (100, 250)),
    (2, 512, 16, 64, (50, 150, 500)),
    (2, 512, 32, 128, (50, 150)),
]


def run_one(corpus: str, layers: int, hidden: int, batch: int, window: int, steps: int) -> dict:
    with tempfile.TemporaryDirectory() as ck:
        cmd = [sys.executable, "-m", "charrnn", "train", corpus, "--val-frac", "0.1", "--test-frac", "0",
               "--precision", "fp32", "--max-steps", str(steps), "--layers", str(layers), "--hidden", str(hidden),
               "--batch-size", str(batch), "--seq-len", str(window), "--eval-every", "1000000",
               "--checkpoint-dir", ck, "--name", "cal"]
        subprocess.run(cmd, check=True, stderr=subprocess.DEVNULL, cwd=os.path.dirname(HERE))
        with open(os.path.join(ck, "cal", "metrics.jsonl")) as f:
            rows = [json.loads(line) for line in f]
    val = [r for r in rows if r["split"] == "val"][-1]
    train = [r for r in rows if r["split"] == "train"]
    return {"layers": layers, "hidden": hidden, "batch": batch, "window": window, "seconds": val["elapsed"],
            "steps": val["step"], "loss": val["loss"], "bpc": val["bpc"],
            "tok_s": float(np.median([r["tok_s"] for r in train])) if train else None}


def cpu_model() -> str:
    try:
        with open("/proc/cpuinfo") as f:
            return next(line.split(":", 1)[1].strip() for line in f if line.startswith("model name"))
    except (OSError, StopIteration):
        import platform
        return platform.processor() or "unknown CPU"


def n_params(r: dict, vocab: int = 65) -> int:
    from charrnn.memory import n_parameters
    return n_parameters(vocab, "lstm", r["layers"], r["hidden"], 64) - vocab * 64  # without the embedding


def design(alpha, beta, b_crit, N, S, b):
    s_eff = S * b / (b + b_crit)
    return np.stack([np.ones_like(N), N ** -alpha, s_eff ** -beta], 1)


def fit(runs: list[dict]) -> dict:
    """Grid over (alpha, beta, b_crit); least squares for (E, A, C) >= 0; the best squared error wins."""
    N = np.array([n_params(r) for r in runs], float)
    S = np.array([r["steps"] for r in runs], float)
    b = np.array([r["batch"] * r["window"] for r in runs], float)
    L = np.array([r["loss"] for r in runs], float)
    best = None
    for alpha, beta, b_crit in itertools.product(np.arange(0.1, 1.51, 0.05), np.arange(0.1, 1.51, 0.05),
                                                 [2.0 ** k for k in range(6, 17)]):
        X = design(alpha, beta, b_crit, N, S, b)
        coef, *_ = np.linalg.lstsq(X, L, rcond=None)
        if (coef[1:] < 0).any():
            continue
        err = float(((X @ coef - L) ** 2).mean())
        if best is None or err < best[0]:
            best = (err, dict(E=float(coef[0]), A=float(coef[1]), alpha=round(float(alpha), 2),
                              C=float(coef[2]), beta=round(float(beta), 2), b_crit=float(b_crit)))
    err, k = best
    k["rmse"] = err ** 0.5
    return k


def predict(k: dict, N, S, b):
    return k["E"] + k["A"] * N ** -k["alpha"] + k["C"] * (S * b / (b + k["b_crit"])) ** -k["beta"]


def report(runs: list[dict], k: dict) -> None:
    import torch

    print(f"\n{time.strftime('%Y-%m-%d')}, {cpu_model()}, {torch.get_num_threads()} threads, "
          f"torch {torch.__version__}, fp32, tinyshakespeare (nanoGPT split)\n")
    print("| model | batch x window | steps | seconds (shared machine) | tokens/s | val loss | fit | fit - measured |")
    print("|---|---|---:|---:|---:|---:|---:|---:|")
    for r in runs:
        p = predict(k, n_params(r), r["steps"], r["batch"] * r["window"])
        print(f"| {r['layers']}x{r['hidden']} | {r['batch']} x {r['window']} | {r['steps']} | {r['seconds']:.0f} | "
              f"{r['tok_s'] or 0:,.0f} | {r['loss']:.4f} | {p:.4f} | {p - r['loss']:+.4f} |")
    print("\nCOMPUTE_MODEL = " + json.dumps({key: float(f"{v:.5g}") for key, v in k.items()}))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--corpus", default=DEFAULT_CORPUS)
    ap.add_argument("--out", default="calibration_runs.jsonl", help="where each run's result is appended")
    ap.add_argument("--fit-only", metavar="RUNS_JSONL", help="fit the runs of an earlier calibration")
    a = ap.parse_args()
    if a.fit_only:
        with open(a.fit_only) as f:
            runs = [json.loads(line) for line in f if line.strip()]
    else:
        runs = []
        if os.path.exists(a.out):  # an interrupted calibration continues where it stopped
            with open(a.out) as f:
                runs = [json.loads(line) for line in f if line.strip()]
        done = {(r["layers"], r["hidden"], r["batch"], r["window"], r["steps"]) for r in runs}
        for layers, hidden, batch, window, budgets in PLAN:
            for steps in budgets:
                if (layers, hidden, batch, window, steps) in done:
                    continue
                r = run_one(os.path.abspath(a.corpus), layers, hidden, batch, window, steps)
                print(json.dumps(r), file=sys.stderr, flush=True)
                with open(a.out, "a") as f:
                    f.write(json.dumps(r) + "\n")
                runs.append(r)
    report(runs, fit(runs))


if __name__ == "__main__":
    main()
