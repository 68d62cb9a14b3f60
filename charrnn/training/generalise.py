"""How much to regularise a --max-time run from the number of passes over the training text its plan
implies (budget.py): a run of a fraction of an epoch learns from every token once and any dropout
slows it; a run of tens of epochs memorises a small corpus and validation loss turns up.

The strength s = clip(K x ln(epochs / E0), 0, S_MAX) sets ``--weight-drop s`` and ``--dropout
max(default, s)``; below E0 epochs nothing changes. K and E0 are fitted by
benchmarks/fit_generalise.py on measured runs over small corpora of several kinds (verse, Python
code, a word list as records, Chinese; benchmarks/data/generalise_runs.json) and issue #14's two
runs: for each corpus the strength with the lowest best validation loss, then K and E0 by least
squares (docs/BENCHMARKS.md, "Small corpora under --max-time"). On this 2-core CPU no strength
helped a 2x128 model below ~36 epochs, so E0 is high: the fit is weak (epochs alone; overfitting
grows with parameters per token too). A regulariser the user gave is never changed."""

from __future__ import annotations

import math

GENERALISE = {"K": 0.145, "E0": 13.97, "S_MAX": 0.5}  # benchmarks/fit_generalise.py, 2026-12-06 (docs/BENCHMARKS.md)
STRENGTHS = ("dropout", "weight_drop")


def strength(epochs: float, k: dict = GENERALISE) -> float:
    """The fitted regularisation strength for a run of this many epochs (0: none beyond the defaults)."""
    if not epochs or epochs <= k["E0"]:
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
