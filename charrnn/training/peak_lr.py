"""The peak learning rate a --max-time plan picks from its own length (budget.py), when --lr is not given.

--lr 3e-3 suits a long run. A plan of a thousand or two steps decays its cosine long before AdamW at
that rate has gone where it could, and on the small corpora of issue #24 a higher peak measured far
better at equal steps (benchmarks/learning_rate.py; docs/BENCHMARKS.md, "The peak learning rate"):
the plan raises the peak as its steps fall,

    lr = default x (REF_STEPS / steps) ** POWER x min(1, REF_HIDDEN / hidden),  within [default, MAX],

rounded to two significant digits, for the cells it was measured on (CELLS, without --attention; the
others keep the default until measured: a ReLU cell or an attention layer may not take the same rate).
The width factor is Adam's usual 1/width rule: the rule was measured on 2x256 and smaller, and never
raises a wider model's rate above what its width would allow there. A run that fine-tunes (its
architecture is the source's) or resumes keeps its rate; a given --lr is never changed."""

from __future__ import annotations

RULE = {"REF_STEPS": 10_000, "POWER": 0.5, "REF_HIDDEN": 256, "MAX": 1e-2}
CELLS = ("lstm",)


def peak_lr(steps: float, hidden: int, default: float, cell: str = "lstm", k: dict = RULE) -> float:
    """The peak learning rate for a plan of ``steps`` optimizer steps of a ``cell`` model ``hidden`` wide."""
    if cell not in CELLS:
        return default
    raw = default * (k["REF_STEPS"] / max(steps, 1.0)) ** k["POWER"] * min(1.0, k["REF_HIDDEN"] / hidden)
    return float(f"{min(k['MAX'], max(default, raw)):.2g}")
