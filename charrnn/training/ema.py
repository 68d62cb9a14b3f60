"""An exponential moving average of a model's weights (``--ema DECAY``): updated after every optimizer
step, swapped in for evaluation and ``best.pt``, and saved whole in ``last.pt`` so that resume is exact.

The decay warms up as min(DECAY, (1 + n) / (10 + n)) after n updates, so the average does not lean
on the random initial weights early in a run.
"""

from __future__ import annotations

import contextlib

import torch
import torch.nn as nn

from charrnn.system import compat


class EMA:
    """The averaged copy of every floating-point parameter and buffer of a model."""

    def __init__(self, model: nn.Module, decay: float):
        self.decay, self.updates = float(decay), 0
        self.names = [n for n, t in model.state_dict().items() if t.is_floating_point()]
        sd = model.state_dict()
        self.shadow = [sd[n].detach().clone() for n in self.names]

    def _live(self, model: nn.Module) -> list[torch.Tensor]:
        sd = model.state_dict(keep_vars=True)
        return [sd[n].detach() for n in self.names]

    def current_decay(self) -> float:
        return min(self.decay, (1 + self.updates) / (10 + self.updates))

    @torch.no_grad()
    def update(self, model: nn.Module) -> None:
        """shadow <- d * shadow + (1 - d) * weights, after an optimizer step."""
        compat.foreach_lerp_(self.shadow, self._live(model), 1.0 - self.current_decay())
        self.updates += 1

    @contextlib.contextmanager
    def applied(self, model: nn.Module):
        """The model holds the averaged weights inside the block, its own weights again afterwards."""
        live = self._live(model)
        with torch.no_grad():
            raw = [t.clone() for t in live]
            compat.foreach_copy_(live, self.shadow)
        try:
            yield model
        finally:
            with torch.no_grad():
                compat.foreach_copy_(live, raw)

    def state(self) -> dict:
        """Plain data for a checkpoint's training state."""
        return {"decay": self.decay, "updates": self.updates,
                "weights": {n: t.detach().cpu().clone() for n, t in zip(self.names, self.shadow)}}

    def load(self, state: dict) -> None:
        weights = state["weights"]
        if set(weights) != set(self.names):
            raise KeyError(f"EMA weights {sorted(set(self.names) ^ set(weights))[:3]}")
        self.updates = int(state["updates"])
        with torch.no_grad():
            for t, n in zip(self.shadow, self.names):
                t.copy_(weights[n])
