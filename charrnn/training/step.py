"""The forward/backward of a training step and, on CUDA, its update, written for every device.

Out of memory: on CUDA, a step that runs out of GPU memory is run again as 2 (then 4, ...)
micro-batches of the same streams: each part's mean loss is weighted by its share of the batch
and their gradients add up to the full batch's, so the tokens per optimizer step, the carried
hidden state of every stream and the learning dynamics stay those of the full batch. It says so
once per halving.

No host sync per step on CUDA: the loss and gradient norm stay on the GPU. The fused AdamW skips
the update on the GPU itself when either is non-finite (its ``found_inf`` input, as GradScaler uses
it), a skipped stream restarts from a zero state (the same as no state), and the trainer reads the
count and the first bad step at log, evaluation and save points (``take_nonfinite``), where
--skip-nonfinite counts them or the run stops naming that step, before anything is written.
The CPU keeps reading both numbers every step (``deferred`` is False there).

The optimizer (``make_optimizer``): AdamW with weight decay on the weight matrices only, fused (one
vectorized kernel per parameter) on CUDA and on the CPU where this PyTorch has the CPU kernel
(2.4 and later): on the CPU it updates the default model in ~2 ms against ~17 ms for the per-tensor
loop, with the same arithmetic (results differ by float rounding only). A resumed run keeps the
optimizer settings of its checkpoint.
"""

from __future__ import annotations

import torch

from charrnn.errors import CharrnnError
from charrnn.model import state as states
from charrnn.system import compat

DEFERRED_DEVICES = ("cuda",)  # the fused AdamW's found_inf input makes the per-step check unneeded
FUSED_DEVICES = ("cuda", "cpu")  # where AdamW runs fused, if this PyTorch has the kernel
OOM_ERRORS = tuple({getattr(torch, "OutOfMemoryError", torch.cuda.OutOfMemoryError), torch.cuda.OutOfMemoryError})


def deferred_for(device: torch.device) -> bool:
    return device.type in DEFERRED_DEVICES


def fused_adamw(device: torch.device) -> bool:
    """Whether AdamW runs fused on this device with this PyTorch (CPU: 2.4 and later)."""
    if device.type not in FUSED_DEVICES:
        return False
    return device.type in compat.fused_adamw_devices()  # a private API; without it, CUDA only


def make_optimizer(model, lr: float, weight_decay: float, device: torch.device) -> torch.optim.Optimizer:
    """AdamW, weight decay on weight matrices (not the embedding, biases or gains); fused where it can be."""
    decay = [p for n, p in model.named_parameters() if p.dim() >= 2 and "embed" not in n]
    ids = {id(p) for p in decay}
    no_decay = [p for p in model.parameters() if id(p) not in ids]
    return torch.optim.AdamW([{"params": decay, "weight_decay": weight_decay},
                              {"params": no_decay, "weight_decay": 0.0}], lr=lr, betas=(0.9, 0.99),
                             fused=fused_adamw(device) or None)


class StepRunner:
    """``forward_backward`` (gradients of one window, split after an OOM) and ``update`` (CUDA)."""

    def __init__(self, model, opt, device: torch.device, autocast, log, skip_nonfinite: bool):
        self.model, self.opt, self.device, self.autocast, self.log = model, opt, device, autocast, log
        self.skip_nonfinite = skip_nonfinite
        self.parts = 1
        self.deferred = deferred_for(device)
        self._bad = self._first = self._first_kind = None

    # -- gradients
    def forward_backward(self, x: torch.Tensor, y: torch.Tensor, state):
        """Zeroes the gradients, then the mean loss over the window (a tensor) and the final state."""
        while True:
            self.opt.zero_grad(set_to_none=True)
            try:
                return self._run(x, y, state)
            except OOM_ERRORS:
                pass  # handled outside the except block, so the failed attempt's tensors are freed
            self._split_more(x)

    def _run(self, x, y, state):
        if self.parts == 1:
            with self.autocast():
                loss, state = self.model.loss(x, y, state)
            loss.backward()
            return loss, state
        B = x.shape[0]
        bounds = [(B * i // self.parts, B * (i + 1) // self.parts) for i in range(self.parts)]
        total, parts = 0.0, []
        for (a, b), st in zip(bounds, states.split(state, bounds)):
            with self.autocast():
                part, st = self.model.loss(x[a:b], y[a:b], st)
            (part * ((b - a) / B)).backward()
            total = total + part.detach() * ((b - a) / B)
            parts.append(st)
        return total, states.cat(parts)

    def _split_more(self, x) -> None:
        self.opt.zero_grad(set_to_none=True)
        if self.device.type == "cuda":
            torch.cuda.empty_cache()
        B, T = x.shape
        if self.parts >= B:
            raise CharrnnError(f"out of GPU memory even one stream at a time (1 x {T} tokens); lower --hidden "
                               f"or --seq-len (now {T}), or train on the CPU (--device cpu)")
        self.parts = min(B, self.parts * 2)
        self.log(f"out of GPU memory at batch {B} x {T}: each step now runs as {self.parts} micro-batches of "
                 f"~{B // self.parts} streams (same {B * T:,} tokens per step, gradients added up)")

    # -- the update on CUDA, without a host sync
    def update(self, loss: torch.Tensor, gnorm: torch.Tensor, state, step: int):
        """Steps the optimizer unless the loss or the gradient is non-finite (decided on the device)."""
        bad_loss = ~torch.isfinite(loss.detach())
        bad = bad_loss | ~torch.isfinite(gnorm)
        self.opt.found_inf = bad.float()
        try:
            self.opt.step()
        finally:
            del self.opt.found_inf
        if self._bad is None:
            self._bad = torch.zeros((), dtype=torch.long, device=bad.device)
            self._first = torch.zeros((), dtype=torch.long, device=bad.device)
            self._first_kind = torch.zeros((), dtype=torch.long, device=bad.device)
        fresh = bad & (self._first == 0)
        self._first = torch.where(fresh, step, self._first)
        self._first_kind = torch.where(fresh, torch.where(bad_loss, 1, 2), self._first_kind)
        self._bad += bad.long()
        if state is not None and self.skip_nonfinite:  # a skipped batch restarts its streams from zero
            zero = lambda s: torch.where(bad, torch.zeros_like(s), s)  # noqa: E731
            state = states.map_state(zero, state)
        return state

    def take_nonfinite(self) -> tuple[int, int, str]:
        """(non-finite steps since the last call, the first one's step, 'loss' or 'gradient'); syncs once."""
        if self._bad is None:
            return 0, 0, ""
        n, first, kind = torch.stack((self._bad, self._first, self._first_kind)).tolist()
        self._bad = self._first = self._first_kind = None
        return n, first, {0: "", 1: "loss"}.get(kind, "gradient")
