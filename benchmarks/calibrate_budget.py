"""Calibrate the budget's compute model: short trainings of several shapes and budgets, then a fit.

    python benchmarks/calibrate_budget.py [--corpus ../shared/corpora/tinyshakespeare.txt] [--out runs.jsonl]
    python benchmarks/calibrate_budget.py --fit-only runs.jsonl

Each run is `charrnn train CORPUS --val-frac 0.1 --test-frac 0 --precision fp32 --max-steps S`
with its shape given explicitly (nothing chosen for it) and one evaluation, at the end. What is fitted
is the final validation loss against what the run did: N parameters (without the embedding), S
optimizer steps and D = S x batch x window tokens. Step budgets (not seconds) make every point independent of
how busy the machine is; what a second buys is the probe's business (charrnn/probe.py). The step
budgets span what each shape reaches in 30 s to 300 s on a 2-core fp32 CPU. On a shared machine,
run it with OMP_NUM_THREADS=1: the points do not depend on the thread count, and one thread per
process is not stalled by descheduled partner threads.

    L(N, S, D) = E + A / N^alpha + B / S^beta + C / D^gamma      (N, D in millions)

Both the number of updates and the text they have seen count: at the same steps, 4x the tokens
per step lowers the loss (a less noisy gradient), but less than 4x the steps would. alpha, beta
and gamma are searched on a grid; E, A, B, C (all >= 0) are then least squares. (A form with one
critical batch, S_eff = S b / (b + b_crit), fitted these points worse: rmse 0.040 against 0.023,
leave-one-out 0.069 against 0.038.)
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
    (2, 256, 16, 64, (200, 600, 1500, 4000)),
    (2, 256, 32, 128, (100, 250)),
    (2, 512, 16, 64, (50, 150, 500)),
    (2, 512, 32, 128, (50, 150)),
]

# Longer runs of the same recipe already in docs/BENCHMARKS.md (2026-11-23, the Xeon with AMX, 250 s
# each, same corpus and split, intermediate evaluations every 200 steps): they reach step counts a
# 20-minute calibration on a 2-core fp32 CPU cannot, and a step is a step on any machine.
DOCUMENTED = [
    {"layers": 2, "hidden": 512, "batch": 32, "window": 128, "seconds": 250, "steps": 1151, "loss": 1.4405,
     "source": "quality per time, bf16"},
    {"layers": 2, "hidden": 512, "batch": 32, "window": 128, "seconds": 250, "steps": 1211, "loss": 1.4348,
     "source": "tokenizers (char), bf16"},
    {"layers": 2, "hidden": 512, "batch": 32, "window": 128, "seconds": 250, "steps": 539, "loss": 1.5895,
     "source": "fp32"},
    {"layers": 2, "hidden": 384, "batch": 32, "window": 128, "seconds": 250, "steps": 907, "loss": 1.5105,
     "source": "fp32"},
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
    from charrnn.model.sizes import n_parameters
    return n_parameters(vocab, "lstm", r["layers"], r["hidden"], 64) - vocab * 64  # without the embedding


def columns(N, S, b):
    return N / 1e6, S, S * b / 1e6


GRID = (np.arange(0.05, 1.001, 0.025), np.arange(0.1, 1.201, 0.025), np.arange(0.02, 0.601, 0.02))


def fit(runs: list[dict]) -> dict:
    """Grid over the exponents; least squares for (E, A, B, C) >= 0; the lowest squared error wins."""
    N = np.array([n_params(r) for r in runs], float)
    S = np.array([r["steps"] for r in runs], float)
    b = np.array([r["batch"] * r["window"] for r in runs], float)
    L = np.array([r["loss"] for r in runs], float)
    n, s, d = columns(N, S, b)
    ex = np.array(list(itertools.product(*GRID)))  # (G, 3) exponents
    X = np.stack([np.ones((len(ex), len(L))), n[None] ** -ex[:, :1], s[None] ** -ex[:, 1:2], d[None] ** -ex[:, 2:3]],
                 2)  # (G, runs, 4)
    coef = np.linalg.solve(np.einsum("gri,grj->gij", X, X) + 1e-12 * np.eye(4), np.einsum("gri,r->gi", X, L)[..., None])[..., 0]
    err = ((np.einsum("gri,gi->gr", X, coef) - L) ** 2).mean(1)
    err[(coef < 0).any(1)] = np.inf
    g = int(np.argmin(err))
    (alpha, beta, gamma), (E, A, B, C) = ex[g], coef[g]
    return {"E": float(E), "A": float(A), "alpha": round(float(alpha), 3), "B": float(B), "beta": round(float(beta), 3),
            "C": float(C), "gamma": round(float(gamma), 3), "rmse": float(err[g]) ** 0.5}


def leave_one_out(runs: list[dict]) -> float:
    """RMSE of each run's loss predicted by a fit to the other runs."""
    errs = []
    for i, r in enumerate(runs):
        k = fit(runs[:i] + runs[i + 1:])
        errs.append(predict(k, n_params(r), r["steps"], r["batch"] * r["window"]) - r["loss"])
    return float(np.sqrt(np.mean(np.square(errs))))


def predict(k: dict, N, S, b):
    n, s, d = columns(N, S, b)
    return k["E"] + k["A"] * n ** -k["alpha"] + k["B"] * s ** -k["beta"] + k["C"] * d ** -k["gamma"]


def report(runs: list[dict], k: dict) -> None:
    import torch

    print(f"\n{time.strftime('%Y-%m-%d')}, {cpu_model()}, {torch.get_num_threads()} threads, "
          f"torch {torch.__version__}, fp32, tinyshakespeare (nanoGPT split)\n")
    print("| model | batch x window | steps | seconds (shared machine) | tokens/s | val loss | fit | fit - measured |")
    print("|---|---|---:|---:|---:|---:|---:|---:|")
    for r in runs:
        p = predict(k, n_params(r), r["steps"], r["batch"] * r["window"])
        where = f" (Xeon, {r['source']})" if "source" in r else ""
        tok_s = f"{r['tok_s']:,.0f}" if r.get("tok_s") else "-"
        print(f"| {r['layers']}x{r['hidden']}{where} | {r['batch']} x {r['window']} | {r['steps']} | {r['seconds']:.0f} | "
              f"{tok_s} | {r['loss']:.4f} | {p:.4f} | {p - r['loss']:+.4f} |")
    print(f"\nrmse {k['rmse']:.4f} nats/char; leave-one-out rmse {leave_one_out(runs):.4f}")
    print("COMPUTE_MODEL = " + json.dumps({key: float(f"{v:.5g}") for key, v in k.items() if key != "rmse"}))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--corpus", default=DEFAULT_CORPUS)
    ap.add_argument("--out", default="calibration_runs.jsonl", help="where each run's result is appended")
    ap.add_argument("--fit-only", metavar="RUNS_JSONL", help="fit the runs of an earlier calibration")
    ap.add_argument("--no-documented", action="store_true", help="fit this machine's runs only")
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
    if not a.no_documented:
        runs = runs + DOCUMENTED
    report(runs, fit(runs))


if __name__ == "__main__":
    main()
