"""Fit the regularisation a --max-time plan adds for its epochs (charrnn/training/generalise.py).

    python3 benchmarks/fit_generalise.py [benchmarks/data/generalise_runs.json]

The runs (benchmarks/small_corpora.py --fit) train the first part of each small corpus for the same
number of steps (a busy machine moves no point) with the shape the budget picks on this CPU (lstm
2x128, batch 16 x 64) and `--weight-drop s --dropout max(0.1, s)` for a few strengths s (--patience
0: every run goes to the end; the best evaluation counts). For each corpus and budget, the
best strength s* is the minimum of the parabola through its three (s, best loss) points (the best
grid point when the parabola opens downwards), clipped to [0, S_MAX]; the epochs are the run's
steps over its windows per epoch. Issue #14's two measured points join them (docs/BENCHMARKS.md: 31 epochs of 40,000
characters, where --weight-drop 0.3 was best of 0 and 0.3; 0.6 epochs of tinyshakespeare, where
no regulariser helped). Then s* = K ln(epochs / E0) by least squares (on the points with s* > 0 and
the others as s* = 0 where the line would be above 0), K >= 0. Prints GENERALISE and the table.
"""

from __future__ import annotations

import json
import math
import os
import sys
from collections import defaultdict

import numpy as np

HERE = os.path.dirname(os.path.abspath(__file__))
S_MAX = 0.5
DOCUMENTED = [  # issue #14 (docs/BENCHMARKS.md, "Regularisation"): (label, epochs, best strength)
    ("tinyshakespeare 40k chars, 600 steps (#14)", 31.0, 0.3),
    ("tinyshakespeare 1 MB, 300 steps (#14)", 0.6, 0.0),
]


def best_strength(points: list[tuple[float, float]]) -> float:
    """The strength of lowest loss: the vertex of the parabola through the points, or the best point."""
    points = sorted(points)
    s, loss = np.array([p[0] for p in points]), np.array([p[1] for p in points])
    best = float(s[int(np.argmin(loss))])
    if len(points) >= 3:
        a, b, _ = np.polyfit(s, loss, 2)
        if a > 0:
            best = -b / (2 * a)
    return float(min(S_MAX, max(0.0, best)))


def fit(points: list[tuple[float, float]]) -> tuple[float, float]:
    """K, E0 of s = K ln(E / E0) through (epochs, s*) points; points at s* = 0 count only where the line
    would predict above 0 (a hinge: the strength is clipped at 0)."""
    best, best_err = (0.0, 1.0), math.inf
    for e0 in np.exp(np.linspace(math.log(0.3), math.log(20), 200)):
        x = np.array([math.log(e / e0) for e, _ in points])
        y = np.array([s for _, s in points])
        use = (y > 0) | (x > 0)
        if not use.any():
            continue
        xs, ys = x[use], y[use]
        k = max(0.0, float((xs * ys).sum() / max((xs * xs).sum(), 1e-12)))
        pred = np.clip(k * x, 0, S_MAX)
        err = float(((pred - y) ** 2).sum())
        if err < best_err:
            best, best_err = (k, float(e0)), err
    return best


def main() -> None:
    path = sys.argv[1] if len(sys.argv) > 1 else os.path.join(HERE, "data", "generalise_runs.json")
    with open(path) as f:
        runs = json.load(f)
    groups = defaultdict(list)
    for r in runs:
        groups[(r["corpus"], r["steps_budget"], r.get("fraction", 1.0))].append(r)
    points, rows = [], []
    for (corpus, steps, fraction), rs in sorted(groups.items()):
        if len({r["strength"] for r in rs}) < 3:
            continue  # a group cut short (fewer than three strengths) says nothing of the best one
        epochs = next((r["planned_epochs"] for r in rs if r["strength"] == 0), rs[0]["planned_epochs"])
        s = best_strength([(r["strength"], r["best_val"]) for r in rs])
        points.append((epochs, s))
        rows.append((f"{corpus} (first {fraction:.0%}), {steps} steps", epochs, s, {r["strength"]: r["best_val"] for r in rs}))
    for label, e, s in DOCUMENTED:
        points.append((e, s))
        rows.append((label, e, s, {}))
    k, e0 = fit(points)
    print(f'GENERALISE = {{"K": {k:.3f}, "E0": {e0:.2f}, "S_MAX": {S_MAX}}}\n')
    strengths = sorted({r["strength"] for r in runs})
    print("| runs | planned epochs | " + " | ".join(f"best val at s={s:g}" for s in strengths) + " | best s | fit |")
    print("|---|---:|" + "---:|" * len(strengths) + "---:|---:|")
    for label, e, s, losses in rows:
        fitted = min(S_MAX, max(0.0, k * math.log(e / e0)))
        cells = " | ".join(f"{losses[x]:.4f}" if x in losses else "" for x in strengths)
        print(f"| {label} | {e:.1f} | {cells} | {s:.2f} | {fitted:.2f} |")


if __name__ == "__main__":
    main()
