"""Training-time regularisers of the model (AWD-LSTM, Merity et al. 2017), none with parameters of its own:
weight drop (DropConnect on the recurrent matrices W_hh), locked (variational) dropout and embedding
dropout. Each acts only in training mode, so evaluation, sampling and the state_dict are unchanged.

Weight drop keeps the fused kernel: the raw W_hh stays the parameter, and a masked copy is passed to
the same ``nn.LSTM/GRU/RNN`` through ``torch.func.functional_call`` (one ``aten::lstm`` call, no
Python loop over time). Locked dropout between layers needs each layer's output, so in training it
runs the fused kernel once per layer with that layer's own parameters (a parameterless "meta" copy
of a one-layer RNN is called with them); the state_dict names are those of the one stacked RNN.

The cells of cells/ (a ``CellStack``) take both as arguments of their forward: weight drop masks W_hh
once per forward (JANET, peephole LSTM; QRNN, SRU and IndRNN have no W_hh, and settings refuse
--weight-drop for them), locked dropout runs between their layers. Embedding dropout and dropout act
on every cell alike.
"""

from __future__ import annotations

import torch
import torch.nn as nn
import torch.nn.functional as F
from torch.func import functional_call

from charrnn.model.cells import CellStack


class LockedDropout(nn.Dropout):
    """Dropout with one mask per sequence, shared across time: x (B, T, D) * m (B, 1, D) / (1 - p).

    A subclass of nn.Dropout so that whatever switches dropouts off by their ``p`` (dynamic.py) also
    switches this one off."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if not self.training or self.p == 0:
            return x
        mask = torch.empty(x.shape[0], 1, x.shape[2], dtype=x.dtype, device=x.device).bernoulli_(1 - self.p)
        return x * (mask / (1 - self.p))


class EmbeddingDropout(nn.Dropout):
    """Drops whole rows of the embedding matrix (every occurrence of a token in the batch at once) and
    rescales the kept rows by 1 / (1 - p): AWD-LSTM's ``embedded_dropout``."""

    def forward(self, embed: nn.Embedding, x: torch.Tensor) -> torch.Tensor:
        w = embed.weight
        if self.training and self.p > 0:
            mask = torch.empty(w.shape[0], 1, dtype=w.dtype, device=w.device).bernoulli_(1 - self.p)
            w = w * (mask / (1 - self.p))
        return F.embedding(x, w)


class WeightDrop(nn.Dropout):
    """DropConnect on every layer's W_hh; ``p`` is the probability of dropping one recurrent weight."""


def _layer_names(layer: int) -> list[str]:
    return [f"weight_ih_l{layer}", f"weight_hh_l{layer}", f"bias_ih_l{layer}", f"bias_hh_l{layer}"]


class RecurrentStack:
    """Runs a model's stacked ``nn.LSTM/GRU/RNN`` with weight drop and (in training) locked dropout
    between layers. Not a module: it owns no parameters, so the model's state_dict is unchanged."""

    def __init__(self, rnn: nn.RNNBase):
        if isinstance(rnn, CellStack):
            self.layers = []
            return
        kw = {"nonlinearity": rnn.nonlinearity} if isinstance(rnn, nn.RNN) else {}
        self.layers = [type(rnn)(rnn.input_size if i == 0 else rnn.hidden_size, rnn.hidden_size, 1,
                                 batch_first=rnn.batch_first, device="meta", **kw)
                       for i in range(rnn.num_layers)]

    def __call__(self, rnn: nn.RNNBase, x: torch.Tensor, state, weight_drop: WeightDrop, between: nn.Module):
        """The fused forward of ``rnn`` on x with W_hh dropped and ``between`` applied to the output of
        every layer but the last; without either it is exactly ``rnn(x, state)``."""
        per_layer = rnn.num_layers > 1 and isinstance(between, LockedDropout) and between.training and between.p > 0
        dropping = weight_drop.training and weight_drop.p > 0
        if isinstance(rnn, CellStack):
            return rnn(x, state, weight_drop.p if dropping else 0.0, between if per_layer else None)
        if not (per_layer or dropping):
            return rnn(x, state)
        params = dict(rnn.named_parameters())
        if dropping:
            for layer in range(rnn.num_layers):
                name = f"weight_hh_l{layer}"
                params[name] = F.dropout(params[name], weight_drop.p, training=True)
        if not per_layer:
            return functional_call(rnn, params, (x, state))
        lstm = isinstance(rnn, nn.LSTM)
        finals = []
        for layer, one in enumerate(self.layers):
            st = None if state is None else (
                tuple(s[layer:layer + 1] for s in state) if lstm else state[layer:layer + 1])
            own = dict(zip(_layer_names(0), (params[n] for n in _layer_names(layer))))
            x, st = functional_call(one, own, (x, st))
            finals.append(st)
            if layer < rnn.num_layers - 1:
                x = between(x)
        if lstm:
            return x, tuple(torch.cat(parts, 0) for parts in zip(*finals))
        return x, torch.cat(finals, 0)
