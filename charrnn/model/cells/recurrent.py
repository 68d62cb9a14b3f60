"""Cells with a recurrent matrix product per step: JANET and the peephole LSTM. The input
projection W_ih x_t + b runs once over all B x T rows; each step is one product h_{t-1} W_hh^T added
to it (``addmm``) and the cell's elementwise update, autograd through the loop over time. --weight-drop
masks W_hh once per forward (DropConnect, as for the LSTM).
"""

from __future__ import annotations

import torch
import torch.nn as nn
import torch.nn.functional as F

from charrnn.model.cells.stack import CellStack, uniform_, zeros

CHRONO_T_MAX = 128  # JANET's chrono initialisation: the longest dependency expected (the default --seq-len)


class _RecurrentWeightGrad(torch.autograd.Function):
    """The identity on a (B, T, G h) whose backward also returns W_hh's gradient, sum_t da_t^T h_{t-1},
    from the previous hidden states that the loop puts into ``holder`` (B, T, h) once it has run."""

    @staticmethod
    def forward(ctx, a, w_hh, holder):
        ctx.holder = holder
        return a.view_as(a)

    @staticmethod
    def backward(ctx, grad):
        h_prev = ctx.holder[0]
        gw = grad.reshape(-1, grad.shape[-1]).t().mm(h_prev.reshape(-1, h_prev.shape[-1]))
        return grad, gw, None


class _Recurrent(nn.Module):
    """Shared by JANET and the peephole LSTM: weight_ih (G h x m), weight_hh (G h x h), bias (G h)."""

    G, PEEPHOLES = 1, 0

    def __init__(self, m: int, h: int):
        super().__init__()
        self.m, self.h = m, h
        self.weight_ih = nn.Parameter(torch.empty(self.G * h, m))
        self.weight_hh = nn.Parameter(torch.empty(self.G * h, h))
        self.bias = nn.Parameter(torch.empty(self.G * h))
        if self.PEEPHOLES:
            self.peephole = nn.Parameter(torch.empty(self.PEEPHOLES * h))
        self.reset_parameters()

    def reset_parameters(self) -> None:
        uniform_(self.weight_ih, self.h)
        uniform_(self.weight_hh, self.h)
        nn.init.zeros_(self.bias)

    def forward(self, x, state, weight_drop: float = 0.0):
        w_hh = self.weight_hh if weight_drop == 0 else F.dropout(self.weight_hh, weight_drop, training=True)
        a = F.linear(x, self.weight_ih, self.bias).float()   # (B, T, G h): every row at once
        holder = []
        if torch.is_grad_enabled() and w_hh.requires_grad:
            a = _RecurrentWeightGrad.apply(a, w_hh, holder)
        w_t = w_hh.detach().t()                               # its gradient: _RecurrentWeightGrad
        st = self.zero_state(x) if state is None else state
        h0, out = st[0], []
        for a_t in a.unbind(1):  # unbind: one backward node for all steps (a[:, t] would zero-fill a
            h, st = self.update(torch.addmm(a_t, st[0], w_t), st)  # (B, T, G h) gradient per step)
            out.append(h)
        out = torch.stack(out, 1)
        holder.append(torch.cat([h0.unsqueeze(1), out[:, :-1]], 1).detach())
        return out, st

    def step(self, x, state):
        a = F.linear(x, self.weight_ih, self.bias).float()
        st = self.zero_state(x) if state is None else state
        return self.update(torch.addmm(a, st[0], self.weight_hh.t()), st)


class JANETLayer(_Recurrent):
    """JANET, "just another network": an LSTM with only a forget gate (van der Westhuizen & Lasenby
    2018, arXiv 1804.04849), its two gates as in the paper (beta = 1) but their sum normalised to 1:

        s_t = W_f x_t + U_f h_{t-1} + b_f        c~_t = tanh(W_c x_t + U_c h_{t-1} + b_c)
        f_t = sigmoid(s_t)        i_t = 1 - sigmoid(s_t - beta) = sigmoid(beta - s_t)       (beta = 1)
        c_t = (f_t * c_{t-1} + i_t * c~_t) / (f_t + i_t)                                  h_t = c_t

    The paper has c_t = f_t c_{t-1} + i_t c~_t. Here c_t is a convex combination of c_{t-1} and c~_t, so
    |c_t| <= 1 for good, and the ratio of writing to keeping, i_t / f_t, is the paper's. Why: f + i = sigmoid(s) +
    sigmoid(1 - s) > 1 for every s (up to 1.245), and the paper's c has the fixed point i / (1 - f) =
    (1 + e^s) / (1 + e^(s-1)) -> e under a steady gate: |c| (= h, fed back through U) can sit near 2.7.
    The paper trains fixed-length sequences from a zero state; charrnn carries the state across TBPTT
    windows and evaluates in one stateful pass, where the paper's form drove units to |c| = 2.69-2.71
    (60k tokens through a 2x128 model after 300 steps) and validation loss rose while training loss fell.
    The other bounded choice, beta = 0 (i = 1 - f), learned less in the same 300 steps (docs/cells.md).

    State: h (= c). Parameters: 2(mh + h^2 + h). Chrono initialisation as the paper recommends:
    b_f ~ log(U(1, T_max - 1)) (T_max = CHRONO_T_MAX), b_c = 0; weights U(+-1/sqrt(h)).
    """

    G = 2
    BETA = 1.0

    def reset_parameters(self) -> None:
        super().reset_parameters()
        with torch.no_grad():
            self.bias[:self.h].uniform_(1, CHRONO_T_MAX - 1).log_()

    def zero_state(self, x):
        return (zeros(x, self.h),)

    def update(self, g, st):
        s, cand = g.chunk(2, 1)
        f, i = torch.sigmoid(s), torch.sigmoid(self.BETA - s)  # i = 1 - sigmoid(s - beta) (an identity)
        c = (f * st[0] + i * torch.tanh(cand)) / (f + i)
        return c, (c,)


class PeepholeLayer(_Recurrent):
    """LSTM with peephole connections (Gers & Schmidhuber 2000, "Recurrent nets that time and count";
    the forget gate of Gers, Schmidhuber & Cummins 2000):

        i_t = sigmoid(W_i x_t + U_i h_{t-1} + p_i * c_{t-1} + b_i)
        f_t = sigmoid(W_f x_t + U_f h_{t-1} + p_f * c_{t-1} + b_f)
        c_t = f_t * c_{t-1} + i_t * tanh(W_g x_t + U_g h_{t-1} + b_g)
        o_t = sigmoid(W_o x_t + U_o h_{t-1} + p_o * c_t + b_o)        h_t = o_t * tanh(c_t)

    State: (h, c). Parameters: 4(mh + h^2 + h) + 3h (one bias per gate, three peephole vectors).
    Initialisation: forget-gate bias 1 (positive, as Gers et al. recommend, so the cell remembers
    from the start), peepholes 0, weights U(+-1/sqrt(h)).
    """

    G, PEEPHOLES = 4, 3

    def reset_parameters(self) -> None:
        super().reset_parameters()
        with torch.no_grad():
            self.bias[self.h:2 * self.h].fill_(1.0)
            self.peephole.zero_()

    def zero_state(self, x):
        return zeros(x, self.h), zeros(x, self.h)

    def update(self, g, st):
        gi, gf, gg, go = g.chunk(4, 1)
        pi, pf, po = self.peephole.chunk(3)
        c0 = st[1]
        c = torch.sigmoid(gf + pf * c0) * c0 + torch.sigmoid(gi + pi * c0) * torch.tanh(gg)
        h = torch.sigmoid(go + po * c) * torch.tanh(c)
        return h, (h, c)


class JANET(CellStack):
    layer_class, has_w_hh = JANETLayer, True


class PeepholeLSTM(CellStack):
    layer_class, n_states, has_w_hh = PeepholeLayer, 2, True
