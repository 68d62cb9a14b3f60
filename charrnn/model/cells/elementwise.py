"""Cells whose recurrence is elementwise: QRNN and SRU (a linear recurrence, the parallel scan of
scan.py, no Python loop over time) and IndRNN (a ReLU recurrence with a diagonal weight: one
elementwise step per token, forward and backward in a custom autograd.Function). Their matrix
products run once over all B x T rows; none has a recurrent matrix W_hh (no --weight-drop).
"""

from __future__ import annotations

import math

import torch
import torch.nn as nn
import torch.nn.functional as F

from charrnn.model.cells.scan import linear_scan
from charrnn.model.cells.stack import CellStack, uniform_, zeros


class QRNNLayer(nn.Module):
    """Quasi-recurrent layer (Bradbury, Merity, Xiong & Socher 2016, arXiv 1611.01576), fo-pooling with
    filter width 1 (the convolution is a per-token product; a width-2 filter would also need the
    previous window's last input carried in the state):

        z_t = tanh(W_z x_t + b_z)    f_t = sigmoid(W_f x_t + b_f)    o_t = sigmoid(W_o x_t + b_o)
        c_t = f_t * c_{t-1} + (1 - f_t) * z_t          h_t = o_t * c_t

    State: c. Parameters: W (3h x m), b (3h): 3(mh + h). The paper recommends no special
    initialisation: weights U(+-1/sqrt(m)), biases 0.
    """

    def __init__(self, m: int, h: int):
        super().__init__()
        self.m, self.h = m, h
        self.weight, self.bias = nn.Parameter(torch.empty(3 * h, m)), nn.Parameter(torch.empty(3 * h))
        self.reset_parameters()

    def reset_parameters(self) -> None:
        uniform_(self.weight, self.m)
        nn.init.zeros_(self.bias)

    def _gates(self, x):
        z, f, o = F.linear(x, self.weight, self.bias).float().chunk(3, -1)
        f = torch.sigmoid(f)
        return f, (1 - f) * torch.tanh(z), torch.sigmoid(o)

    def forward(self, x, state, weight_drop: float = 0.0):
        f, u, o = self._gates(x)
        c = linear_scan(f, u, None if state is None else state[0])
        return o * c, (c[:, -1],)

    def step(self, x, state):
        f, u, o = self._gates(x)
        c = u.addcmul(f, zeros(x, self.h) if state is None else state[0])
        return o * c, (c,)


class SRULayer(nn.Module):
    """Simple Recurrent Unit (Lei, Zhang, Wang, Dai & Artzi 2017, arXiv 1709.02755), with its highway
    connection (the 2017 form: the gates read x_t only, so the recurrence is a linear scan):

        x~_t = W x_t    f_t = sigmoid(W_f x_t + b_f)    r_t = sigmoid(W_r x_t + b_r)
        c_t = f_t * c_{t-1} + (1 - f_t) * x~_t
        h_t = r_t * tanh(c_t) + (1 - r_t) * x'_t       x'_t = x_t (m = h) or W' x_t (m != h)

    State: c. Parameters: 3mh + 2h (m = h) or 4mh + 2h (a first layer whose input width differs).
    Initialisation as the paper recommends: weights with variance 1/m (U(+-sqrt(3/m))), biases 0.
    """

    def __init__(self, m: int, h: int):
        super().__init__()
        self.m, self.h, self.k = m, h, 3 if m == h else 4
        self.weight, self.bias = nn.Parameter(torch.empty(self.k * h, m)), nn.Parameter(torch.empty(2 * h))
        self.reset_parameters()

    def reset_parameters(self) -> None:
        bound = math.sqrt(3 / self.m)
        nn.init.uniform_(self.weight, -bound, bound)
        nn.init.zeros_(self.bias)

    def _gates(self, x):
        g = F.linear(x, self.weight).float()
        parts = g.chunk(self.k, -1)
        bf, br = self.bias.chunk(2)
        f, r = torch.sigmoid(parts[1] + bf), torch.sigmoid(parts[2] + br)
        skip = x.float() if self.k == 3 else parts[3]
        return f, (1 - f) * parts[0], r, skip

    def _out(self, c, r, skip):
        return skip.addcmul(r, torch.tanh(c) - skip)  # r tanh(c) + (1 - r) x'

    def forward(self, x, state, weight_drop: float = 0.0):
        f, u, r, skip = self._gates(x)
        c = linear_scan(f, u, None if state is None else state[0])
        return self._out(c, r, skip), (c[:, -1],)

    def step(self, x, state):
        f, u, r, skip = self._gates(x)
        c = u.addcmul(f, zeros(x, self.h) if state is None else state[0])
        return self._out(c, r, skip), (c,)


U_MAX = 2 ** (1 / 128)  # IndRNN's |u| <= gamma^(1/T) with gamma = 2 at T = 128 (the default --seq-len)


class _IndRecurrence(torch.autograd.Function):
    """h_t = relu(a_t + u * h_{t-1}) over a (T, B, H); backward by the reversed recurrence
    d_t = (grad_t + u * d_{t+1}) * [h_t > 0]: da_t = d_t, du = sum d_t h_{t-1}, dh_0 = u d_1."""

    @staticmethod
    def forward(ctx, a, u, h0):
        out, h = torch.empty_like(a), h0
        for t in range(a.shape[0]):
            h = torch.addcmul(a[t], u, h, out=out[t]).clamp_min_(0)
        ctx.save_for_backward(u, h0, out)
        return out

    @staticmethod
    def backward(ctx, grad):
        u, h0, out = ctx.saved_tensors
        da, d = torch.empty_like(grad), torch.zeros_like(h0)
        for t in range(grad.shape[0] - 1, -1, -1):
            d = torch.addcmul(grad[t], u, d, out=da[t]).mul_(out[t] > 0)
        prev = torch.cat([h0.unsqueeze(0), out[:-1]], 0)
        return da, (da * prev).sum((0, 1)), u * da[0]


class IndRNNLayer(nn.Module):
    """Independently recurrent layer (Li, Li, Cook, Zhu & Gao 2018, arXiv 1803.04831), ReLU:

        h_t = relu(W x_t + u * h_{t-1} + b)       (u a vector: each unit recurs on itself only)

    State: h. Parameters: W (h x m), u (h), b (h): mh + 2h. Initialisation and constraint as the
    paper recommends for ReLU: u ~ U(0, 1) and |u| <= gamma^(1/T) (U_MAX, gamma = 2: a gradient over T
    steps grows at most 2x), applied as a clamp in the forward; W ~ U(+-1/sqrt(m)), b = 0.
    """

    def __init__(self, m: int, h: int):
        super().__init__()
        self.m, self.h = m, h
        self.weight, self.bias = nn.Parameter(torch.empty(h, m)), nn.Parameter(torch.empty(h))
        self.weight_hh = nn.Parameter(torch.empty(h))
        self.reset_parameters()

    def reset_parameters(self) -> None:
        uniform_(self.weight, self.m)
        nn.init.zeros_(self.bias)
        nn.init.uniform_(self.weight_hh, 0, 1)

    def _u(self):
        return self.weight_hh.clamp(-U_MAX, U_MAX)

    def forward(self, x, state, weight_drop: float = 0.0):
        a = F.linear(x, self.weight, self.bias).float().transpose(0, 1).contiguous()  # (T, B, H)
        h0 = zeros(x, self.h) if state is None else state[0]
        out = _IndRecurrence.apply(a, self._u(), h0).transpose(0, 1)
        return out, (out[:, -1],)

    def step(self, x, state):
        a = F.linear(x, self.weight, self.bias).float()
        h = torch.addcmul(a, self._u(), zeros(x, self.h) if state is None else state[0]).clamp_min_(0)
        return h, (h,)


class QRNN(CellStack):
    layer_class = QRNNLayer


class SRU(CellStack):
    layer_class = SRULayer


class IndRNN(CellStack):
    layer_class = IndRNNLayer
