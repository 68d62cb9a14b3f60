"""Training-time regularisers of the model (AWD-LSTM, Merity et al. 2017), none with parameters of its own:
dropout, weight drop (DropConnect on the recurrent matrices W_hh), locked (variational) dropout and
embedding dropout. Each acts only in training mode, so evaluation, sampling and the state_dict are unchanged.

Every mask comes from ``dropout_mask``: 16 random bits per element, four elements from each 64-bit
draw of torch's global generator (so a checkpoint's RNG state resumes it exactly), compared with a
threshold in float arithmetic that is exact. ``bernoulli_`` draws 32 bits per element, one at a time
on most CPUs (and by another algorithm where PyTorch uses MKL's, on Intel CPUs): this costs a
fraction of that and gives the same masks on every CPU class and thread count.

Weight drop keeps the fused kernel: the raw W_hh stays the parameter, and a masked copy is passed to
the same ``nn.LSTM/GRU/RNN`` through ``torch.func.functional_call`` (one ``aten::lstm`` call, no
Python loop over time). Dropout between layers (plain or locked, with ``dropout_mask``'s masks, not
the kernel's own ``bernoulli_``) needs each layer's output, so in training it runs the fused kernel
once per layer with that layer's own parameters (a parameterless "meta" copy of a one-layer RNN is
called with them); the state_dict names are those of the one stacked RNN.

The cells of cells/ (a ``CellStack``) take both as arguments of their forward: weight drop masks W_hh
once per forward (JANET, peephole LSTM; QRNN, SRU and IndRNN have no W_hh, and settings refuse
--weight-drop for them), dropout (plain or locked) runs between their layers. Embedding dropout and dropout act
on every cell alike.
"""

from __future__ import annotations


import torch
import torch.nn as nn
import torch.nn.functional as F
from torch.func import functional_call

from charrnn.model.cells import CellStack

_LEVELS = 1 << 16  # p is used to 1/65536: an element is dropped where its 16 random bits are below round(p * 2**16)


def random_words(n: int, device) -> torch.Tensor:
    """n uniform 16-bit words (int16), four from each 64-bit draw of the device's global generator (on
    the CPU: mt19937, drawn one 64-bit value at a time: the same words on every CPU class and thread
    count, and part of the RNG state a checkpoint saves)."""
    words = torch.empty(-(-n // 4), dtype=torch.int64, device=device).random_(-(1 << 63), None)  # all 64 bits
    return words.view(torch.int16)[:n]


def _dropped(p: float) -> int:
    return min(round(p * _LEVELS), _LEVELS - 1)


def dropout_scale(p: float) -> float:
    """What a kept element is multiplied by: 1 / (1 - q), q = round(p * 2**16) / 2**16 the probability
    of a drop (p used to 1/65536: 0.1 drops 6554 in 65536)."""
    return _LEVELS / (_LEVELS - _dropped(p))


def dropout_mask(shape, p: float, dtype: torch.dtype, device, like: torch.Tensor | None = None) -> torch.Tensor:
    """A mask of ``shape`` with each element 0 with probability q (``dropout_scale``) and 1 / (1 - q)
    otherwise, independently (so its mean is 1: x * mask keeps x's expectation). With ``like`` (a
    tensor of that shape) the mask has like's memory layout, its words in memory order: x * mask is
    then a plain pass (an RNN's batch-first output is a transposed view, and a mask in the other
    layout makes the product, its gradient and the next layer's input copy strided)."""
    scale, below = dropout_scale(p), -(_LEVELS // 2) + _dropped(p)  # dropped: a word < below
    if torch.device(device).type not in ("cpu", "cuda"):  # MPS & co.: not measured, torch's own draw
        return torch.empty(shape, dtype=dtype, device=device).bernoulli_(1 - 1 / scale).mul_(scale)
    r = (torch.empty_like(like, dtype=torch.float32, device=device) if like is not None  # dense: its strides
         else torch.empty(shape, dtype=torch.float32, device=device))                   # or contiguous ones
    r.as_strided((r.numel(),), (1,)).copy_(random_words(r.numel(), device))  # in memory order
    # r - below + 1 is an integer >= 1 where kept and <= 0 where dropped: times scale, clamped to
    # [0, scale], it is exactly scale (rounding is monotonic) or 0
    return r.sub_(below - 1).mul_(scale).clamp_(0, scale).to(dtype)


class Dropout(nn.Dropout):
    """nn.Dropout with its masks from ``dropout_mask``: x * m, each m 0 or 1 / (1 - p), p to 1/65536.

    A subclass of nn.Dropout so that whatever switches dropouts off by their ``p`` (dynamic.py) also
    switches this one off."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if not self.training or self.p == 0:
            return x
        if self.p >= 1:
            return x * 0
        return x * self.mask(x)

    def mask(self, x: torch.Tensor) -> torch.Tensor:
        return dropout_mask(x.shape, self.p, x.dtype, x.device, like=x)


class LockedDropout(Dropout):
    """Dropout with one mask per sequence, shared across time: x (B, T, D) * m (B, 1, D)."""

    def mask(self, x: torch.Tensor) -> torch.Tensor:
        return dropout_mask((x.shape[0], 1, x.shape[2]), self.p, x.dtype, x.device)


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
        per_layer = rnn.num_layers > 1 and between.training and between.p > 0
        dropping = weight_drop.training and weight_drop.p > 0
        if isinstance(rnn, CellStack):
            return rnn(x, state, weight_drop.p if dropping else 0.0, between if per_layer else None)
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
