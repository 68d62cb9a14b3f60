"""Training-time regularisers of the model (AWD-LSTM, Merity et al. 2017), none with parameters of its own:
dropout, weight drop (DropConnect on the recurrent matrices W_hh), locked (variational) dropout and
embedding dropout. Each acts only in training mode, so evaluation, sampling and the state_dict are unchanged.

Every mask comes from ``dropout_mask``: one seed drawn from torch's global generator (so a checkpoint's
RNG state resumes it exactly), hashed with splitmix64 over a counter in integer tensor arithmetic,
16 bits per element. That is about a third of the cost of ``bernoulli_`` (which draws one element
at a time on most CPUs, and by another algorithm where PyTorch uses MKL's), runs on every thread,
and gives the same masks on every CPU class and thread count (integer arithmetic: exact everywhere).

Weight drop keeps the fused kernel: the raw W_hh stays the parameter, and a masked copy is passed to
the same ``nn.LSTM/GRU/RNN`` through ``torch.func.functional_call`` (one ``aten::lstm`` call, no
Python loop over time). Dropout between layers (plain or locked, from ``dropout_mask``, not the
kernel's own ``bernoulli_``) needs each layer's output, so in training it
runs the fused kernel once per layer with that layer's own parameters (a parameterless "meta" copy
of a one-layer RNN is called with them); the state_dict names are those of the one stacked RNN.
"""

from __future__ import annotations

import functools
import math

import torch
import torch.nn as nn
import torch.nn.functional as F
from torch.func import functional_call

_GOLDEN, _MIX1, _MIX2 = (v - (1 << 64) for v in (0x9E3779B97F4A7C15, 0xBF58476D1CE4E5B9, 0x94D049BB133111EB))
_LEVELS = 1 << 15  # a dropped element: 15 random bits below round(p * 2**15)


@functools.lru_cache(maxsize=8)
def _counters(n: int, device: torch.device) -> torch.Tensor:
    """(i + 1) * golden ratio for i < n, splitmix64's increments (int64, wrapping): one buffer per size."""
    with torch.inference_mode(False), torch.no_grad():
        return torch.arange(1, n + 1, dtype=torch.int64, device=device).mul_(_GOLDEN)


def _shr(z: torch.Tensor, k: int) -> torch.Tensor:
    return (z >> k) & ((1 << (64 - k)) - 1)  # logical: torch's >> on int64 is arithmetic


def random_bits(n: int, seed: int, device) -> torch.Tensor:
    """n 16-bit words (int16) of splitmix64(seed + (i + 1) * golden), four per 64-bit output."""
    z = _counters(-(-n // 4), torch.device(device)) + seed
    z ^= _shr(z, 30)
    z *= _MIX1
    z ^= _shr(z, 27)
    z *= _MIX2
    z ^= _shr(z, 31)
    return z.view(torch.int16)[:n]


def _dropped(p: float) -> int:
    return min(round(p * _LEVELS), _LEVELS - 1)


def dropout_scale(p: float) -> float:
    """What a kept element is multiplied by: 1 / (1 - q), q = round(p * 2**15) / 2**15 the probability
    of a drop (p used to 1/32768: 0.1 drops 3277 in 32768)."""
    return _LEVELS / (_LEVELS - _dropped(p))


def dropout_mask(shape, p: float, dtype: torch.dtype, device) -> torch.Tensor:
    """A mask of ``shape`` with each element 0 with probability q (``dropout_scale``) and 1 / (1 - q)
    otherwise, independently (so its mean is 1: x * mask keeps x's expectation); its seed is one draw
    from torch's global generator."""
    dropped = _dropped(p)
    seed = int(torch.randint(-(1 << 62), 1 << 62, ()).item())
    r = random_bits(math.prod(shape), seed, device) & (_LEVELS - 1)
    r -= dropped  # < 0 exactly where dropped
    r >>= 15      # -1 where dropped, 0 where kept
    r += 1        # 0 where dropped, 1 where kept
    return r.view(shape).to(dtype).mul_(dropout_scale(p))


class Dropout(nn.Dropout):
    """nn.Dropout with its masks from ``dropout_mask``: x * m, each m 0 or 1 / (1 - p), p to 1/32768.

    A subclass of nn.Dropout so that whatever switches dropouts off by their ``p`` (dynamic.py) also
    switches this one off."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if not self.training or self.p == 0:
            return x
        if self.p >= 1:
            return x * 0
        return x * dropout_mask(x.shape, self.p, x.dtype, x.device)


class LockedDropout(Dropout):
    """Dropout with one mask per sequence, shared across time: x (B, T, D) * m (B, 1, D)."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if not self.training or self.p == 0:
            return x
        if self.p >= 1:
            return x * 0
        return x * dropout_mask((x.shape[0], 1, x.shape[2]), self.p, x.dtype, x.device)


class EmbeddingDropout(nn.Dropout):
    """Drops whole rows of the embedding matrix (every occurrence of a token in the batch at once) and
    rescales the kept rows by 1 / (1 - p): AWD-LSTM's ``embedded_dropout``."""

    def forward(self, embed: nn.Embedding, x: torch.Tensor) -> torch.Tensor:
        w = embed.weight
        if self.training and self.p > 0:
            w = w * (dropout_mask((w.shape[0], 1), self.p, w.dtype, w.device) if self.p < 1 else 0)
        return F.embedding(x, w)


class WeightDrop(nn.Dropout):
    """DropConnect on every layer's W_hh; ``p`` is the probability of dropping one recurrent weight."""


def _layer_names(layer: int) -> list[str]:
    return [f"weight_ih_l{layer}", f"weight_hh_l{layer}", f"bias_ih_l{layer}", f"bias_hh_l{layer}"]


class RecurrentStack:
    """Runs a model's stacked ``nn.LSTM/GRU/RNN`` with weight drop and (in training) dropout between
    layers. Not a module: it owns no parameters, so the model's state_dict is unchanged."""

    def __init__(self, rnn: nn.RNNBase):
        kw = {"nonlinearity": rnn.nonlinearity} if isinstance(rnn, nn.RNN) else {}
        self.layers = [type(rnn)(rnn.input_size if i == 0 else rnn.hidden_size, rnn.hidden_size, 1,
                                 batch_first=rnn.batch_first, device="meta", **kw)
                       for i in range(rnn.num_layers)]

    def __call__(self, rnn: nn.RNNBase, x: torch.Tensor, state, weight_drop: WeightDrop, between: nn.Module):
        """The fused forward of ``rnn`` on x with W_hh dropped and ``between`` applied to the output of
        every layer but the last; without either it is exactly ``rnn(x, state)``."""
        per_layer = rnn.num_layers > 1 and between.training and between.p > 0
        dropping = weight_drop.training and weight_drop.p > 0
        if not (per_layer or dropping):
            return rnn(x, state)
        params = dict(rnn.named_parameters())
        if dropping:
            for layer in range(rnn.num_layers):
                name = f"weight_hh_l{layer}"
                w = params[name]
                params[name] = w * (dropout_mask(w.shape, weight_drop.p, w.dtype, w.device) if weight_drop.p < 1 else 0)
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
