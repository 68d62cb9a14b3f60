"""Dynamic evaluation (Krause et al. 2018): the model adapts to the text while it reads it.

The text is one stream, read ``seq`` tokens at a time with the hidden state carried. Each segment
is scored first, with the weights as they are; only then is one gradient step taken on that same
segment (SGD on its mean nll, plus an optional decay back towards the trained weights):

    theta <- theta - lr * grad + decay * (theta_0 - theta)

so no token is ever scored by weights that have seen it. The forward pass that scores a segment
is the one whose gradient is taken (one fused forward and backward per segment). The weights are
put back as they were when the pass ends (also on errors and Ctrl-C); nothing is written to disk.
"""

from __future__ import annotations

import contextlib

import numpy as np
import torch
import torch.nn as nn

from charrnn.errors import CharrnnError
from charrnn.model.cells import CellStack
from charrnn.model.network import RNNLM, detach_state
from charrnn.system.device import autocast
from charrnn.system.progress import progress_bar


def dynamic_nlls(model: RNNLM, ids: np.ndarray, device: torch.device, precision: str = "fp32", *,
                 lr: float, seq: int, decay: float = 0.0, progress: bool = False,
                 desc: str = "dynamic eval", total: bool = False):
    """The nll (nats) of each of ids[1:], each scored before the model trains on it (float64, text order);
    with ``total``, only their sum and count (nothing that grows with the text: a file of any size)."""
    if not (lr >= 0 and seq >= 1 and 0 <= decay <= 1):
        raise CharrnnError(f"dynamic evaluation needs --dyn-lr >= 0, --dyn-seq >= 1 and --dyn-decay in [0, 1] "
                           f"(got {lr}, {seq}, {decay})")
    if precision == "bf16" and device.type == "cuda" and not torch.cuda.is_bf16_supported():
        raise CharrnnError("this GPU has no bf16 support for the gradient steps of --dynamic; use --precision fp32")
    n = len(ids) - 1
    if n < 1:
        raise CharrnnError("the text to evaluate is too short: it needs at least two tokens")
    params = [p for p in model.parameters() if p.requires_grad]
    out = None if total else torch.empty(n, dtype=torch.float32, device=device)
    acc = torch.zeros((), dtype=torch.float64, device=device)  # with total: summed on the device, no sync
    bar = progress_bar(total=n, desc=desc, unit="tok", unit_scale=True, leave=False, dynamic_ncols=True,
                       disable=not (progress and n >= 4 * seq))
    with _adapting(model, params) as theta0:
        state = None
        for s in range(0, n, seq):
            with torch.set_grad_enabled(lr > 0), autocast(device, precision):  # lr 0: the static one-stream score
                block = torch.from_numpy(np.array(ids[s:s + seq + 1], np.int64)).to(device).view(1, -1)  # one segment
                nll, state = model.token_nll(block[:, :-1], block[:, 1:], state)  # ids: a memory map or store.IdFile
            if total:
                acc += nll.detach()[0].double().sum()
            else:
                out[s:s + seq] = nll.detach()[0]  # scored: before any step on this segment
            state = detach_state(state)
            if lr > 0 and s + seq < n:  # no step after the last segment: nothing is left to score
                grads = torch.autograd.grad(nll.mean(), params, allow_unused=True)
                apply_update(params, grads, theta0, lr, decay)
            bar.update(nll.shape[1])
    bar.close()
    return (float(acc), n) if total else out.double().cpu().numpy()


@torch.no_grad()
def apply_update(params, grads, theta0, lr: float, decay: float) -> None:
    """theta <- theta - lr * grad + decay * (theta_0 - theta), in place."""
    for p, g, p0 in zip(params, grads, theta0):
        if decay:
            p.lerp_(p0, decay)  # p + decay * (p0 - p)
        if g is not None:
            p.add_(g, alpha=-lr)


@contextlib.contextmanager
def _adapting(model: nn.Module, params):
    """Gradients on, dropout off, and afterwards the trained weights and modes exactly as they were.

    Train mode with every dropout at 0 rather than eval mode: cuDNN's RNN backward refuses eval mode.
    """
    theta0 = [p.detach().clone() for p in params]
    was_training = model.training
    dropouts = [(m, "p" if isinstance(m, nn.Dropout) else "dropout", m.p if isinstance(m, nn.Dropout) else m.dropout)
                for m in model.modules() if isinstance(m, (nn.Dropout, nn.RNNBase, CellStack))]
    try:
        for m, attr, _ in dropouts:
            setattr(m, attr, 0.0)
        model.train()
        yield theta0
    finally:
        with torch.no_grad():
            for p, p0 in zip(params, theta0):
                p.copy_(p0)
                p.grad = None
        for m, attr, value in dropouts:
            setattr(m, attr, value)
        model.train(was_training)
