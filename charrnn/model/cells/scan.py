"""The linear recurrence c_t = f_t * c_{t-1} + x_t over the time axis without a Python loop over time
steps, forward and backward (QRNN's fo-pooling and SRU's cell state are this recurrence).

``linear_scan(f, x, c0)``: f, x (B, T, H), c0 (B, H) or None -> c (B, T, H). It is a blocked scan:
the T steps are cut into T / CHUNK chunks; all chunks advance together from a zero carry (CHUNK
vectorised rounds, each over every chunk at once: the number of rounds does not grow with T), the
chunks' end values are combined by a Hillis-Steele doubling scan over the chunks (log2(T / CHUNK)
vectorised rounds: (f, x)_t <- (f_t f_{t-k}, x_t + f_t x_{t-k}) for k = 1, 2, 4, ...), and every position
is fixed up with its chunk's carry: c_t = local_t + (prod of f inside the chunk up to t) * carry. No
division and no logarithm: with f near 0 the products underflow to 0, which is their true value (the
log-space form, cumsum(log f), needs guards there and loses precision to cancellation; it measured
~25x slower on the CPU: benchmarks/cells.py --scan).

The backward is the same recurrence reversed (a custom autograd.Function; nothing per step is kept):
with g_t = dL/dc_t in total, g_t = grad_t + f_{t+1} g_{t+1}, so dL/dx_t = g_t, dL/df_t = g_t c_{t-1}
and dL/dc0 = f_1 g_1.

Rounding: every c_t is a sum of terms x_s * prod(f_{s+1..t}); each term passes through at most
CHUNK rounds inside a chunk, 2 log2(T) doubling operations across chunks and 3 for the cumprod,
fix-up and carry-in, each a multiply and an add rounded once, so |c - exact| <= 2 (CHUNK + 2 log2 T + 3)
u sum_s |x_s| prod f (u = 2^-24 in fp32): the bound tests/test_cells.py checks against a float64
step-by-step reference (the backward is the same scan, so the same bound holds for g).
"""

from __future__ import annotations

import torch

CHUNK = 16  # positions per chunk (measured: benchmarks/cells.py --scan)


def _doubling(f: torch.Tensor, x: torch.Tensor, dim: int) -> torch.Tensor:
    """Inclusive scan of c_t = f_t c_{t-1} + x_t along ``dim`` from c = 0 (f, x not modified)."""
    n, k = x.shape[dim], 1
    while k < n:
        head_f, tail_f = f.narrow(dim, 0, n - k), f.narrow(dim, k, n - k)
        x_new = x.clone()
        x_new.narrow(dim, k, n - k).addcmul_(tail_f, x.narrow(dim, 0, n - k))
        if 2 * k < n:  # the products are needed for the next round only
            f_new = f.clone()
            f_new.narrow(dim, k, n - k).mul_(head_f)
            f = f_new
        x, k = x_new, 2 * k
    return x


def _scan(f: torch.Tensor, x: torch.Tensor, c0: torch.Tensor | None, chunk: int = 0) -> torch.Tensor:
    """The blocked scan (no autograd): f, x (B, T, H), c0 (B, H) or None."""
    chunk = chunk or CHUNK
    if c0 is not None:
        x = x.clone()
        x[:, 0].addcmul_(f[:, 0], c0)
    B, T, H = x.shape
    if T <= chunk:
        return _doubling(f, x, 1)
    n = -(-T // chunk)
    pad = n * chunk - T
    if pad:  # padded with f = 1, x = 0: the padding changes nothing before it
        f = torch.cat([f, f.new_ones(B, pad, H)], 1)
        x = torch.cat([x, x.new_zeros(B, pad, H)], 1)
    fc = f.reshape(B, n, chunk, H)
    local = x.reshape(B, n, chunk, H).clone()          # each chunk from a zero carry, all chunks at once:
    for j in range(1, chunk):                          # CHUNK rounds, each over T / CHUNK positions
        local[:, :, j].addcmul_(fc[:, :, j], local[:, :, j - 1])
    decay = torch.cumprod(fc, 2)                       # prod of f inside the chunk up to each position
    ends = _doubling(decay[:, :, -1], local[:, :, -1], 1)  # c at each chunk's end (log2 rounds)
    c = local[:, 1:].addcmul_(decay[:, 1:], ends[:, :-1].unsqueeze(2))
    c = local.reshape(B, n * chunk, H)
    return c[:, :T] if pad else c


class _LinearScan(torch.autograd.Function):
    @staticmethod
    def forward(ctx, f, x, c0):
        c = _scan(f, x, c0)
        ctx.save_for_backward(f, c, c0)
        return c

    @staticmethod
    def backward(ctx, grad):
        f, c, c0 = ctx.saved_tensors
        B, T, H = f.shape
        f_next = torch.cat([f[:, 1:], f.new_zeros(B, 1, H)], 1)
        g = _scan(f_next.flip(1), grad.flip(1), None).flip(1)  # g_t = grad_t + f_{t+1} g_{t+1}
        prev = torch.cat([(c0 if c0 is not None else c.new_zeros(B, H)).unsqueeze(1), c[:, :-1]], 1)
        grad_c0 = f[:, 0] * g[:, 0] if c0 is not None and ctx.needs_input_grad[2] else None
        return g * prev if ctx.needs_input_grad[0] else None, g, grad_c0


def linear_scan(f: torch.Tensor, x: torch.Tensor, c0: torch.Tensor | None = None) -> torch.Tensor:
    """c_t = f_t c_{t-1} + x_t for t = 1..T, c_0 = c0 (zeros if None); f, x (B, T, H) -> c (B, T, H)."""
    return _LinearScan.apply(f.contiguous(), x.contiguous(), c0)


def scan_loop(f: torch.Tensor, x: torch.Tensor, c0: torch.Tensor | None = None) -> torch.Tensor:
    """The step-by-step reference (a Python loop over time, autograd through it): tests and benchmarks."""
    c = torch.zeros_like(x[:, 0]) if c0 is None else c0
    out = []
    for t in range(x.shape[1]):
        c = f[:, t] * c + x[:, t]
        out.append(c)
    return torch.stack(out, 1)


def scan_logspace(f: torch.Tensor, x: torch.Tensor, c0: torch.Tensor | None = None) -> torch.Tensor:
    """The log-space form (benchmarks only): c_t = sum_s exp(a_t - a_s) x_s, a = cumsum(log f), the
    signed sum as two logcumsumexp; f clamped above 0 (log 0 = -inf) and no chunking, so it loses
    precision as |a| grows: kept to measure against, not used."""
    if c0 is not None:
        x = torch.cat([c0.unsqueeze(1), x], 1)
        f = torch.cat([torch.ones_like(c0).unsqueeze(1), f], 1)
    a = torch.cumsum(torch.log(f.clamp_min(1e-30)), 1)
    pos = torch.logcumsumexp(torch.log(x.clamp_min(0)) - a, 1)
    neg = torch.logcumsumexp(torch.log((-x).clamp_min(0)) - a, 1)
    c = torch.exp(a + pos) - torch.exp(a + neg)
    return c[:, 1:] if c0 is not None else c
