"""How much to regularise a --max-time run from the number of passes over the training text its plan
implies (budget.py): a run of a fraction of an epoch learns from every token once and any dropout
slows it; a run of tens of epochs may memorise a small corpus, and validation loss turns up.

The strength s = clip(K x ln(epochs / E0), 0, S_MAX) sets ``--weight-drop s`` and ``--dropout
max(default, s)``; below E0 epochs nothing changes. FITTED holds K and E0 as benchmarks/fit_generalise.py
fitted them on runs over small corpora (benchmarks/data/generalise_runs.json; docs/BENCHMARKS.md,
"Small corpora under --max-time"). **The plan does not use it (GENERALISE["on"] is False):** on a quiet
machine, at the 250-s shapes the budget picks there (2x256), it cost zh_poems 0.26 nats/token at 39
epochs (dropout and weight drop 0.15; the model was still improving at the end without them), while
tinyshakespeare's first 200 kB levelled off after ~8 epochs without turning up. Epochs alone do not say
whether a run will overfit; the early stop (validation.py) acts on what a run measures instead. A
regulariser the user gave is never changed."""

from __future__ import annotations

import math

FITTED = {"K": 0.145, "E0": 13.97, "S_MAX": 0.5, "on": True}  # benchmarks/fit_generalise.py, 2026-12-06
GENERALISE = {**FITTED, "on": False}  # what plans use: off (see above; docs/BENCHMARKS.md, 2026-12-06 16:40)
STRENGTHS = ("dropout", "weight_drop")


def strength(epochs: float, k: dict = GENERALISE) -> float:
    """The fitted regularisation strength for a run of this many epochs (0: none beyond the defaults)."""
    if not k["on"] or not epochs or epochs <= k["E0"]:
        return 0.0
    return round(min(k["S_MAX"], k["K"] * math.log(epochs / k["E0"])), 2)


def regularisers(epochs: float, given: set, default_dropout: float, k: dict = GENERALISE) -> tuple[dict, str]:
    """(settings to change, the reason for the budget line; "" when none changes)."""
    s = strength(epochs, k)
    if s <= 0:
        return {}, ""
    chosen = {}
    if "dropout" not in given and s > default_dropout:
        chosen["dropout"] = s
    if "weight_drop" not in given:
        chosen["weight_drop"] = s
    if not chosen:
        return {}, ""
    what = " and ".join(f"{k.replace('_', ' ')} {v:g}" for k, v in chosen.items())
    return chosen, f"{what} against overfitting ~{epochs:.0f} passes over this text"
