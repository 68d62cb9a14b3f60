"""Every private PyTorch API charrnn uses, each with its fallback (the rest of the code calls these).

Private APIs change between torch versions without notice; here each one is looked up once,
guarded, and answers the question charrnn asks (is there a fused CPU AdamW? does the CPU multiply
bf16? pack a weight for oneDNN), falling back to public APIs or to "no" when it is missing or fails.

* oneDNN packed linear products: ``torch.ops.mkldnn._reorder_linear_weight`` (packs a weight into
  the blocked layout oneDNN picks for a batch size) and ``torch.ops.mkldnn._linear_pointwise``
  (the product with bias and an activation fused). Fallback: none (the caller uses addmm).
* CPU bf16 hardware: ``torch.cpu._is_amx_tile_supported``, ``torch.cpu._is_avx512_bf16_supported``.
  Fallback: False ("don't know" is treated as "no").
* Fused AdamW devices: ``torch.utils._foreach_utils._get_fused_kernels_supported_devices``.
  Fallback: CUDA only.
* Multi-tensor updates: ``torch._foreach_lerp_`` / ``torch._foreach_copy_``. Fallback: a loop of
  the public in-place ops (the same arithmetic per tensor).
"""

from __future__ import annotations

import torch


# -- oneDNN packed products

def onednn_packing(device) -> bool:
    """Whether this torch build can pack weights for oneDNN and multiply with them on ``device``."""
    ops = getattr(torch.ops, "mkldnn", None)
    try:
        return (torch.device(device).type == "cpu" and torch.backends.mkldnn.is_available() and ops is not None
                and hasattr(ops, "_linear_pointwise") and hasattr(ops, "_reorder_linear_weight"))
    except Exception:  # noqa: BLE001 - a build without the ops namespace
        return False


def onednn_pack(w: torch.Tensor, rows: int) -> torch.Tensor:
    """w (N, K) as nn.Linear stores it, in oneDNN's blocked layout for batches of ``rows``."""
    return torch.ops.mkldnn._reorder_linear_weight(w.contiguous(), rows)


def onednn_linear(x: torch.Tensor, packed: torch.Tensor, b: torch.Tensor | None, act: str = "none") -> torch.Tensor:
    """act(x @ W.T + b) with a packed W; act is "none", "sigmoid" or "tanh" (fused by oneDNN)."""
    return torch.ops.mkldnn._linear_pointwise(x, packed, b, act, [], "")


# -- what the CPU multiplies

def _private_flag(name: str) -> bool:
    f = getattr(torch.cpu, name, None)
    try:
        return bool(f()) if f is not None else False
    except Exception:  # noqa: BLE001 - private API; absent or failing means "don't know"
        return False


def cpu_has_amx() -> bool:
    """The CPU has AMX tiles (bf16 matrix units: bf16 training ~3x faster than fp32)."""
    return _private_flag("_is_amx_tile_supported")


def cpu_has_bf16_dot() -> bool:
    """The CPU multiplies bf16 in hardware: AVX512-BF16 dot products or AMX."""
    return _private_flag("_is_avx512_bf16_supported") or cpu_has_amx()


# -- optimizer kernels

def fused_adamw_devices() -> tuple:
    """Device types with a fused AdamW kernel in this torch (CPU from 2.4); CUDA where unknown."""
    try:
        from torch.utils._foreach_utils import _get_fused_kernels_supported_devices
        return tuple(_get_fused_kernels_supported_devices())
    except (ImportError, AttributeError, RuntimeError):
        return ("cuda",)


def foreach_lerp_(targets: list, sources: list, weight: float) -> None:
    """targets[i] += weight * (sources[i] - targets[i]) for every i."""
    f = getattr(torch, "_foreach_lerp_", None)
    if f is not None:
        f(targets, sources, weight)
        return
    for t, s in zip(targets, sources):
        t.lerp_(s, weight)


def foreach_copy_(targets: list, sources: list) -> None:
    """targets[i] = sources[i] for every i."""
    f = getattr(torch, "_foreach_copy_", None)
    if f is not None:
        f(targets, sources)
        return
    for t, s in zip(targets, sources):
        t.copy_(s)
