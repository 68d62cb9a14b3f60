"""``CellStack``: a stack of one cell's layers with nn.LSTM's interface, so the rest of charrnn takes
it where it takes ``nn.LSTM/GRU/RNN``: ``(input_size, hidden_size, num_layers, batch_first=True,
dropout)``, ``forward(x (B, T, E), state) -> (out (B, T, H), state)``, the state a tensor (L, B, H)
or a tuple of them (``n_states`` of them per layer, like nn.LSTM's (h, c)), None meaning zeros.

Beyond nn.LSTM: ``forward(..., weight_drop=p, between=module)`` (DropConnect on W_hh where the cell
has one; ``between`` in place of the inter-layer dropout, e.g. locked dropout), and ``step(x, states)``,
one token of every layer on (B, .) tensors for sampling (generation/stepper.py), with the same math
as the forward. A layer class has ``forward(x, state, weight_drop)``, ``step(x, state)`` (state: a
tuple of (B, H) tensors or None) and ``reset_parameters()``.
"""

from __future__ import annotations

import torch
import torch.nn as nn
import torch.nn.functional as F


class CellStack(nn.Module):
    layer_class: type = None
    n_states: int = 1          # state tensors per layer
    has_w_hh: bool = False     # a recurrent matrix for --weight-drop

    def __init__(self, input_size: int, hidden_size: int, num_layers: int = 1, batch_first: bool = True,
                 dropout: float = 0.0):
        super().__init__()
        if not batch_first:
            raise ValueError("CellStack is batch_first only")
        self.input_size, self.hidden_size, self.num_layers = input_size, hidden_size, num_layers
        self.batch_first, self.dropout = True, dropout
        self.layers = nn.ModuleList(self.layer_class(input_size if i == 0 else hidden_size, hidden_size)
                                    for i in range(num_layers))

    def reset_parameters(self) -> None:
        for layer in self.layers:
            layer.reset_parameters()

    def layer_states(self, state) -> list:
        """(L, B, H) or a tuple of them -> per layer a tuple of (B, H) tensors (None: None per layer)."""
        if state is None:
            return [None] * self.num_layers
        parts = state if isinstance(state, tuple) else (state,)
        return [tuple(p[i] for p in parts) for i in range(self.num_layers)]

    def stacked(self, finals: list):
        parts = tuple(torch.stack(ps, 0) for ps in zip(*finals))
        return parts if self.n_states > 1 else parts[0]

    def forward(self, x: torch.Tensor, state=None, weight_drop: float = 0.0, between=None):
        finals = []
        for i, (layer, st) in enumerate(zip(self.layers, self.layer_states(state))):
            x, st = layer(x, st, weight_drop)
            finals.append(st)
            if i < self.num_layers - 1:
                if between is not None:
                    x = between(x)
                elif self.dropout > 0 and self.training:
                    x = F.dropout(x, self.dropout, True)
        return x, self.stacked(finals)

    def step(self, x: torch.Tensor, states: list):
        """One token: x (B, E), per-layer state tuples -> top h (B, H), the new per-layer tuples."""
        new = []
        for layer, st in zip(self.layers, states):
            x, st = layer.step(x, st)
            new.append(st)
        return x, new


def zeros(x: torch.Tensor, hidden: int) -> torch.Tensor:
    """A zero (B, H) state for input x (B, ...), fp32 (the states stay fp32 under autocast)."""
    return torch.zeros(x.shape[0], hidden, device=x.device, dtype=torch.float32)


def uniform_(w: torch.Tensor, fan_in: int) -> None:
    """U(-1/sqrt(fan_in), 1/sqrt(fan_in)): nn.LSTM's and nn.Linear's default scale."""
    bound = fan_in ** -0.5
    nn.init.uniform_(w, -bound, bound)
