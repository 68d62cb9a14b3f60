"""Weights on their own: a weights-only checkpoint (model, tokenizer, run config and best validation
figure; no optimizer or training state), and the fp16/int8 weights of the web page with the fp32
weights they stand for (``dequantized``: the same arithmetic in Python as in the page)."""

from __future__ import annotations

import io

import numpy as np
import torch

from charrnn.model.checkpoint import FORMAT, VERSION

WEIGHTS_ONLY = "weights_only"  # the checkpoint's marker: resume refuses it, everything else reads it


def weights_only_bytes(module, tokenizer, info: dict, half: bool = False) -> bytes:
    """A checkpoint ``load_checkpoint`` accepts, without optimizer or training state (half: fp16 weights,
    widened back to fp32 when loaded)."""
    sd = {k: v.detach().cpu().clone() for k, v in module.state_dict().items()}
    if half:
        sd = {k: v.half() if v.is_floating_point() else v for k, v in sd.items()}
    ts = info.get("train_state") or {}
    kept = {k: ts[k] for k in ("best", "last_val", "step") if k in ts}
    buf = io.BytesIO()
    torch.save({"format": FORMAT, "version": VERSION, "model_config": module.cfg.to_dict(),
                "tokenizer": tokenizer.state(), "model": sd, "optimizer": None, "train_state": kept,
                "run_config": info.get("run_config"), WEIGHTS_ONLY: True, "half": bool(half)}, buf)
    return buf.getvalue()


def quantize(w: torch.Tensor, mode: str | None) -> tuple[bytes, np.ndarray | None, torch.Tensor]:
    """A weight matrix as the page stores it: (payload, per-row scales or None, the fp32 it stands for).

    fp32: as is. fp16: rounded to half (exact back in fp32). int8: per output row, q = round(w / s) with
    s = max|row| / 127 in fp32; the page computes q * s in fp32 (an int8 times an fp32 is exact in
    float64, then rounded once: the same bits as torch's fp32 product), so Python and the page run
    identical weights."""
    w = w.detach().float().cpu().contiguous()
    if mode is None or w.dim() != 2:
        return w.numpy().tobytes(), None, w
    if mode == "fp16":
        h = w.half()
        return h.numpy().tobytes(), None, h.float()
    s = (w.abs().amax(1) / 127).clamp_min(torch.finfo(torch.float32).tiny)
    q = torch.round(w / s[:, None]).clamp_(-127, 127).to(torch.int8)
    return q.numpy().tobytes(), s.numpy(), q.float() * s[:, None]


@torch.no_grad()
def dequantized(module, mode: str | None):
    """A copy of the model with the weights the page runs (mode fp16 or int8; None: fp32 unchanged)."""
    from charrnn.model.network import RNNLM

    m = RNNLM(module.cfg).eval()  # a new module: the original may carry a sampler's prepared weights
    m.load_state_dict({k: v.detach().cpu() for k, v in module.state_dict().items()})
    for p in m.parameters():  # a tied weight is one parameter: quantised once, as the page stores it once
        p.copy_(quantize(p, mode)[2])
    return m
