"""Choosing the next token of each stream: temperature, top-k, top-p, then one uniform draw per row.

The draw is by the inverse of the cumulative distribution: a uniform u in [0, 1) per row (float64,
from the seeded generator: 53 random bits, the same numbers on every CPU), and the token is the
first whose cumulative weight (summed in float64) exceeds u times the total. So a seed gives the
same tokens wherever the model's probabilities agree, and a token can change between two
computations of the probabilities (other kernels, another CPU) only when u lands within their
difference of an interval's edge: ``margin`` says how far it landed (tests/test_kernels.py).

``Chooser`` keeps its buffers between steps (sampling's hot loop allocates nothing at the
defaults: no top-k, no top-p); ``choose`` is the same for one call.
"""

from __future__ import annotations

import torch


class Chooser:
    def __init__(self, temperature: float, top_k: int = 0, top_p: float = 1.0, gen: torch.Generator | None = None):
        self.temperature, self.top_k, self.top_p, self.gen = temperature, top_k, top_p, gen
        self.rows = None

    def _alloc(self, logp: torch.Tensor) -> None:
        B, V = logp.shape
        dev = logp.device
        self.rows = (B, V, dev)
        self.mx = torch.empty(B, 1, device=dev)
        self.w = torch.empty(B, V, device=dev)
        self.cdf = torch.empty(B, V, dtype=torch.float64, device=dev)
        self.u = torch.empty(B, 1, dtype=torch.float64, device=dev)
        self.target = torch.empty(B, 1, dtype=torch.float64, device=dev)
        self.tok = torch.empty(B, 1, dtype=torch.long, device=dev)
        self.total, self.flat = self.cdf[:, -1:], self.tok.view(-1)  # views made once, not per token
        self.temp = torch.tensor(self.temperature, dtype=logp.dtype, device=dev)  # a Python float operand is
                                                                  # wrapped into a tensor on every call (same value)

    def weights(self, logp: torch.Tensor) -> torch.Tensor:
        """Unnormalised probabilities (B, V) after temperature, top-k and top-p (the largest is 1)."""
        torch.amax(logp, -1, keepdim=True, out=self.mx)
        w = torch.sub(logp, self.mx, out=self.w).div_(self.temp)
        if 0 < self.top_k < w.shape[-1]:
            kth = torch.topk(w, self.top_k, dim=-1).values[:, -1:]
            w.masked_fill_(w < kth, -float("inf"))
        w.exp_()
        if self.top_p < 1:  # the smallest set of most likely tokens whose probabilities reach top_p
            p, order = (w / w.sum(-1, keepdim=True)).sort(-1, descending=True)
            p = p.masked_fill(p.cumsum(-1) - p >= self.top_p, 0.0)
            w.zero_().scatter_(-1, order, p)
        return w

    def __call__(self, logp: torch.Tensor) -> torch.Tensor:
        """Next tokens (B,) from log-probabilities (B, V)."""
        if self.temperature == 0:
            return logp.argmax(-1)
        if self.rows != (*logp.shape, logp.device):
            self._alloc(logp)
        w = self.weights(logp)
        torch.cumsum(w, -1, dtype=torch.float64, out=self.cdf)
        self.u.uniform_(generator=self.gen)  # = torch.rand(..., out=u): the same draws, without the out= checks
        torch.mul(self.u, self.total, out=self.target)
        # the first token whose cumulative weight exceeds the target (zero-weight tokens never are)
        torch.searchsorted(self.cdf, self.target, right=True, out=self.tok).clamp_(max=w.shape[-1] - 1)
        return self.flat


def choose(logp: torch.Tensor, temperature: float, top_k: int = 0, top_p: float = 1.0,
           gen: torch.Generator | None = None) -> torch.Tensor:
    """Next tokens (B,) from log-probabilities (B, V): temperature, then top-k, then top-p; 0 is greedy."""
    return Chooser(temperature, top_k, top_p, gen)(logp)


def margin(logp: torch.Tensor, temperature: float, u: torch.Tensor) -> torch.Tensor:
    """How far each row's draw u landed from the edges of its chosen interval, as a share of the
    total probability (no top-k/top-p): a token can differ between two computations of logp only
    where their cumulative probabilities differ by more than this."""
    w = ((logp.double() - logp.double().amax(-1, keepdim=True)) / temperature).exp()
    cdf = w.cumsum(-1) / w.sum(-1, keepdim=True)
    u = u.view(-1, 1).double()
    tok = torch.searchsorted(cdf, u, right=True).clamp_(max=cdf.shape[-1] - 1)
    hi = cdf.gather(-1, tok)
    lo = torch.where(tok > 0, cdf.gather(-1, (tok - 1).clamp_(min=0)), torch.zeros_like(hi))
    return torch.minimum(hi - u, u - lo).view(-1)
