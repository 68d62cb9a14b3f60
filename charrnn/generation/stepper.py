"""One-token steps of a batch of streams through the model: ``Stepper``, the math of nn.LSTM/GRU/RNN.

Calling the fused nn.LSTM for a single step costs ~3 ms on a CPU (it prepares its kernels on every
call); the same step as one matrix product per layer costs a fraction of that. The weights are
prepared once, when the Stepper is built: [W_ih, W_hh] stacked so that an LSTM or RNN layer is one
product of [x, h], and on CPUs with oneDNN packed into its blocked layout (``Product``), which
multiplies a batch of streams 2-3x faster than the default BLAS on CPUs it does not tune for (AMD)
and gives a row the same bits whatever the batch beside it (the same packing for every Stepper;
hidden sizes that are multiples of 32, else torch's elementwise tail loop may differ in a last bit).
A full softmax head's product is prepared the same way (fp32 always).
An LSTM's g-gate columns are scaled by 2 so that one sigmoid covers all four gates
(tanh(x) = 2 sigmoid(2x) - 1; scaling by 2 is exact), fused into the product where oneDNN does it;
tanh(c) is taken the same way (torch's CPU tanh is ~20x slower than its sigmoid on a (64, 512) batch).
"""

from __future__ import annotations

import torch

from charrnn.model.network import RNNLM

PACK_ROWS = 64  # the batch oneDNN's weight layout is chosen for; fixed, so every Stepper packs alike


def _onednn_ok(device: torch.device) -> bool:
    return (device.type == "cpu" and torch.backends.mkldnn.is_available()
            and hasattr(torch.ops.mkldnn, "_linear_pointwise") and hasattr(torch.ops.mkldnn, "_reorder_linear_weight"))


def cpu_multiplies_bf16() -> bool:
    """The CPU has bf16 dot-product instructions (AVX512-BF16 or AMX) and oneDNN is there to use them."""
    checks = (getattr(torch.cpu, "_is_avx512_bf16_supported", None), getattr(torch.cpu, "_is_amx_tile_supported", None))
    try:
        return _onednn_ok(torch.device("cpu")) and any(bool(f()) for f in checks if f is not None)
    except Exception:  # noqa: BLE001 - private API; absent means "don't know"
        return False


def resolve_precision(precision: str, device) -> str:
    """Sampling's ``auto``: bf16 products on CPUs that multiply bf16 in hardware, fp32 elsewhere
    (benchmarks/sampling_bf16.py: next-token distributions within KL ~1e-6 nats of fp32's)."""
    if precision != "auto":
        return precision
    return "bf16" if torch.device(device).type == "cpu" and cpu_multiplies_bf16() else "fp32"


class Product:
    """``act(x @ W + b)`` for (B, K) inputs with W prepared once; act is "none", "sigmoid" or "tanh".

    bf16: the product in bfloat16 (inputs rounded, bf16 result), bias and activation in fp32 — the
    pre-activations are rounded, never the gates. fp32: exact fp32 (oneDNN's packed kernel when it
    is there and agrees with ``addmm`` on a probe; ``addmm`` otherwise).
    """

    def __init__(self, w: torch.Tensor, b: torch.Tensor, act: str = "none", dtype: torch.dtype | None = None):
        """w: (N, K) as nn.Linear stores it; b: (N,)."""
        self.act, self.dtype, self.packed = act, dtype, None
        self.b = b.detach().float().contiguous()
        self.wt = w.detach().t().contiguous().to(dtype or w.dtype)  # (K, N): the fallback's layout
        if _onednn_ok(w.device):
            try:
                packed = torch.ops.mkldnn._reorder_linear_weight(w.detach().to(dtype or w.dtype).contiguous(),
                                                                 PACK_ROWS)
                self.packed = packed
                probe = torch.linspace(-1, 1, 3 * w.shape[1], device=w.device).view(3, -1)
                if not torch.allclose(self(probe), self._fallback(probe), atol=1e-3, rtol=1e-2):
                    self.packed = None
            except Exception:  # noqa: BLE001 - private ops of another torch version: use addmm
                self.packed = None

    def _finish(self, y: torch.Tensor) -> torch.Tensor:
        if self.act == "sigmoid":
            return y.sigmoid_()
        return y.tanh_() if self.act == "tanh" else y

    def _fallback(self, x: torch.Tensor) -> torch.Tensor:
        if self.dtype is None:
            return self._finish(torch.addmm(self.b, x, self.wt))
        return self._finish(torch.mm(x.to(self.dtype), self.wt).float().add_(self.b))

    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        if self.packed is None:
            return self._fallback(x)
        x = x.contiguous()
        if self.dtype is None:  # exact fp32: bias and activation fused into the product
            return torch.ops.mkldnn._linear_pointwise(x, self.packed, self.b, self.act, [], "")
        y = torch.ops.mkldnn._linear_pointwise(x.to(self.dtype), self.packed, None, "none", [], "")
        return self._finish(torch.add(self.b, y))  # fp32: the bf16 result widened exactly, then the bias


class Stepper:
    """One token per stream per step through the model, with the same math as nn.LSTM/GRU/RNN.

    The state is a tuple of per-layer (B, H) tensors (LSTM: hidden states then cell states); rows
    are independent streams. The weights are copied when the Stepper is built (build a new one after
    changing the model). ``precision="bf16"`` multiplies in bfloat16 (several times faster for big
    batches on CPUs with AVX512-BF16 or AMX); states, gates and the output layer stay fp32.
    """

    def __init__(self, model: RNNLM, precision: str = "fp32"):
        self.model, self.cell = model, model.cfg.cell
        rnn, self.layers = model.rnn, []
        self.dtype = torch.bfloat16 if precision == "bf16" else None  # bf16: products in bf16, the rest fp32
        with torch.no_grad():
            for i in range(rnn.num_layers):
                w_ih, w_hh, b_ih, b_hh = (getattr(rnn, f"{k}_l{i}") for k in ("weight_ih", "weight_hh", "bias_ih",
                                                                               "bias_hh"))
                if self.cell == "gru":  # the candidate gate needs W_hn h apart: two products
                    self.layers.append((Product(w_ih, b_ih, dtype=self.dtype), Product(w_hh, b_hh, dtype=self.dtype)))
                elif self.cell == "lstm":  # gates i, f, g, o; g's rows doubled: one sigmoid for all four
                    w, b = torch.cat([w_ih, w_hh], 1), b_ih + b_hh
                    H = w.shape[0] // 4
                    scale = torch.ones(4 * H, 1, dtype=w.dtype, device=w.device)
                    scale[2 * H:3 * H] = 2
                    self.layers.append((Product(w * scale, b * scale.view(-1), "sigmoid", self.dtype),))
                else:
                    self.layers.append((Product(torch.cat([w_ih, w_hh], 1), b_ih + b_hh, "tanh", self.dtype),))
            parts = model.head.linear_parts()  # a full softmax: its product prepared too (fp32 always)
            self.out = Product(*parts) if parts is not None else None

    def from_module(self, state, batch: int = 1):
        """nn.LSTM-style (L, 1, H) state -> this stepper's state with ``batch`` copies of it."""
        parts = state if isinstance(state, tuple) else (state,)
        return tuple(t[:, :1].expand(-1, batch, -1).unbind(0) for t in parts)

    def to_module(self, state):
        """The first row of the state in nn.LSTM style (L, 1, H), to continue with a fused forward."""
        parts = tuple(torch.stack([s[:1] for s in layers]) for layers in state)
        return parts if self.cell == "lstm" else parts[0]

    @staticmethod
    def select(state, index: torch.Tensor):
        """The state of the given rows (drop finished streams, or follow beams to their parents)."""
        return tuple(tuple(s.index_select(0, index) for s in layers) for layers in state)

    def __call__(self, tokens: torch.Tensor, state):
        """tokens (B,) -> next-token log-probabilities (B, V) and the new state."""
        x = self.model.embed.weight.index_select(0, tokens.view(-1))
        hs, new_h, new_c = state[0], [], []
        for i, layer in enumerate(self.layers):
            if self.cell == "gru":
                ir, iz, in_ = layer[0](x).chunk(3, 1)
                hr, hz, hn = layer[1](hs[i]).chunk(3, 1)
                r, z = torch.sigmoid(ir + hr), torch.sigmoid(iz + hz)
                h = (1 - z) * torch.tanh(in_ + r * hn) + z * hs[i]
            elif self.cell == "lstm":
                ig, fg, g2, og = layer[0](torch.cat([x, hs[i]], 1)).chunk(4, 1)  # g2 = sigmoid(2 g)
                # c = f c + i tanh(g) = f c + i (2 g2 - 1) = f c - i + 2 i g2
                c = torch.addcmul(torch.addcmul(ig.neg(), fg, state[1][i]), ig, g2, value=2)
                h = torch.addcmul(og.neg(), og, torch.sigmoid(c * 2), value=2)  # o tanh(c); torch's tanh is slow
                new_c.append(c)
            else:
                h = layer[0](torch.cat([x, hs[i]], 1))
            new_h.append(h)
            x = h
        new = (tuple(new_h), tuple(new_c)) if self.cell == "lstm" else (tuple(new_h),)
        if self.out is not None:
            return torch.log_softmax(self.out(x), dim=-1), new
        return self.model.head.log_probs(x).float(), new
