"""``--attention M``: one attention head over the last M hidden states of the top recurrent layer,
after the RNN stack and before the output head — the single-headed attention of SHA-RNN
(Merity 2019, "Single Headed Attention RNN: Stop Thinking With Your Head", arXiv 1911.11423).

What is computed, for the top layer's hidden states h_t (H wide) of a window t = 1..T:

    S_t   = (h_{t-M}, ..., h_{t-1}, h_t)        the last M states and the current one (causal)
    m_s   = LN_m(h_s)                            layer norm of every state attended to
    q_t   = (W_q LN_q(h_t) + b_q) * sigmoid(s_q)     a query: the one matrix of the head
    k_s   = m_s * sigmoid(s_k),  v_s = m_s * sigmoid(s_v)   keys and values: the states themselves,
                                                            scaled per unit (SHA-RNN's qs, ks, vs)
    a_t   = sum_s softmax_s(q_t . k_s / sqrt(H)) v_s
    out_t = h_t + a_t                            the residual; the head reads out_t (after dropout)

As in SHA-RNN the keys and values are not projected (only the query has a matrix) and a gate
vector per unit, squashed by a sigmoid, scales query, keys and values; the states are layer-normed
before they are attended to (pre-norm) and the attention's output is added to h (residual).
SHA-RNN's feed-forward "Boom" layer and its memory of the whole previous window are left out: the
window here is exactly the last M states, so the output at t depends on h_{t-M..t} only and not
on where the TBPTT windows are cut — a forward over 2T tokens equals two of T with the memory
carried, and sampling one token at a time equals the full forward.

Computed as (q_t * sigmoid(s_k)) . m_s and sigmoid(s_v) * sum_s w_s m_s: the gates folded into the
query and the output, so that the memory holds m_s = LN_m(h_s), the last M normalised states
(M, B, H). It is part of the model's state (state.py): carried between windows (detached), saved
in checkpoints and resumed, built by evaluation's warm-up and kept by the Stepper (``Step``: one
new row normalised per token). Before a stream's start it holds zero vectors (the zero state, like
the LSTM's h_0 = c_0 = 0): a zero slot scores 0 and its value is 0, so it takes a share of the
softmax's weight and adds nothing (a fixed "nothing yet").
Parameters: H^2 + H (W_q, b_q), 3H (s_q, s_k, s_v), 4H (two layer norms): H^2 + 8H
(sizes.attention_parameters). Cost per window: O(T (M + C) H) with queries taken in chunks of
C = max(M, 64) rows (batched matmuls, ``F.scaled_dot_product_attention`` with a band mask; no loop
over time steps), against the LSTM's O(T H^2) per layer.
"""

from __future__ import annotations

import torch
import torch.nn as nn
import torch.nn.functional as F

MIN_CHUNK = 64  # queries per attention call at least (fewer, bigger products for a short span)
# The value gate starts at sigmoid(-2) = 0.12: the values are layer-normed (unit size) while an LSTM's
# h starts small, so at 1/2 the residual branch swamps h at first. After 300 steps on tinyshakespeare
# (docs/BENCHMARKS.md) the val loss was 2.107 with the gate at 1/2, 1.993 at 0.12; the LSTM's 1.953.
VALUE_GATE_INIT = -2.0


def band_mask(queries: int, span: int, device) -> torch.Tensor:
    """(queries, span + queries) bool: query i (at key position span + i) sees keys i .. span + i."""
    j = torch.arange(span + queries, device=device)
    i = torch.arange(queries, device=device).unsqueeze(1)
    return (j >= i) & (j <= i + span)


class Attention(nn.Module):
    def __init__(self, hidden: int, span: int):
        super().__init__()
        self.span = span
        self.ln_q, self.ln_m = nn.LayerNorm(hidden), nn.LayerNorm(hidden)
        self.query = nn.Linear(hidden, hidden)
        self.qs, self.ks, self.vs = (nn.Parameter(torch.zeros(hidden)) for _ in range(3))

    def init_weights(self) -> None:
        nn.init.normal_(self.query.weight, std=self.query.in_features ** -0.5)
        nn.init.zeros_(self.query.bias)
        nn.init.zeros_(self.qs)  # query and key gates at sigmoid(0) = 1/2
        nn.init.zeros_(self.ks)
        nn.init.constant_(self.vs, VALUE_GATE_INIT)

    def empty_memory(self, batch: int, like: torch.Tensor) -> torch.Tensor:
        return like.new_zeros(self.span, batch, like.shape[-1])

    def forward(self, h: torch.Tensor, memory: torch.Tensor | None):
        """h (B, T, H), memory (M, B, H) or None (zeros) -> out (B, T, H) and the new memory (M, B, H)."""
        B, T, H = h.shape
        M = self.span
        m = self.ln_m(h)
        mem = self.empty_memory(B, m) if memory is None else memory.to(m.dtype)
        seq = torch.cat([mem.transpose(0, 1), m], 1)                 # (B, M + T, H): m_s of S_t for every t
        q = self.query(self.ln_q(h)) * (torch.sigmoid(self.qs) * torch.sigmoid(self.ks)).to(m.dtype)
        C = max(M, MIN_CHUNK)
        outs = []
        for c in range(0, T, C):  # chunks of C queries: each reads its M + C keys, not all M + T
            n = min(C, T - c)
            keys = seq[:, None, c:c + M + n]
            outs.append(F.scaled_dot_product_attention(q[:, None, c:c + n], keys, keys,
                                                       attn_mask=band_mask(n, M, h.device))[:, 0])
        a = outs[0] if len(outs) == 1 else torch.cat(outs, 1)
        return h + a * torch.sigmoid(self.vs), seq[:, T:].transpose(0, 1)  # the last M: the next memory

    def prepared(self) -> "Step":
        """The one-token step with these weights copied and folded (the Stepper's; build another after a change)."""
        return Step(self)


class Step:
    """``Attention`` one token per stream, for sampling: LN_q's gain and bias and the query's gates and
    1/sqrt(H) folded into one matrix and bias (q = n W' + b', n = h normalised without affine), h
    normalised once for both layer norms; no gradient. State: the memory (B, M, H), the Stepper's
    layout (rows first). Equal to the forward up to float32 rounding (the folding reorders sums)."""

    def __init__(self, attn: Attention):
        with torch.no_grad():
            H = attn.query.in_features
            gate = torch.sigmoid(attn.qs) * torch.sigmoid(attn.ks) / H ** 0.5
            w = attn.query.weight * attn.ln_q.weight                       # W diag(gamma_q)
            self.b = ((attn.query.weight @ attn.ln_q.bias + attn.query.bias) * gate).detach().clone()
            self.w = (w * gate[:, None]).t().contiguous()                   # (H in, H out)
            self.gain_m, self.bias_m = attn.ln_m.weight.detach().clone(), attn.ln_m.bias.detach().clone()
            self.gate_v = torch.sigmoid(attn.vs).detach().clone()
        self.eps, self.H = attn.ln_q.eps, H  # both layer norms are built with the same eps: one normalisation

    def step(self, h: torch.Tensor, memory: torch.Tensor):
        """h (B, H), memory (B, M, H) -> out (B, H) and the new memory (B, M, H)."""
        n = F.layer_norm(h, (self.H,), eps=self.eps)
        q = torch.addmm(self.b, n, self.w)
        seq = torch.cat([memory, torch.addcmul(self.bias_m, n, self.gain_m).unsqueeze(1)], 1)  # (B, M + 1, H)
        w = torch.softmax(torch.bmm(seq, q.unsqueeze(2)).squeeze(2), -1)
        return torch.addcmul(h, torch.bmm(w.unsqueeze(1), seq).squeeze(1), self.gate_v), seq[:, 1:]
