"""Training bookkeeping between two log lines: running sums of loss and gradient norms, clipping
counts and throughput (used by trainer.Trainer)."""

from __future__ import annotations

import math
import time

import torch


class LogWindow:
    """Running sums between two train log lines: loss, gradient norms, clipping, throughput."""

    def __init__(self):
        self.restart_clock(0)
        self._reset()

    def _reset(self):
        self.n, self.loss, self.gsum, self.gmax, self.clipped = 0, 0.0, 0.0, 0.0, 0
        self.pending = []  # CUDA: (loss, grad norm) tensors, read at the log point (no per-step sync)

    def restart_clock(self, tokens: int | None = None) -> None:
        self.t = time.perf_counter()
        if tokens is not None:
            self.log_t, self.log_tokens = self.t, tokens

    def lap(self) -> float:
        now = time.perf_counter()
        dt, self.t = now - self.t, now
        return dt

    def add(self, loss, gnorm, clip: float) -> None:
        if isinstance(loss, torch.Tensor):
            self.pending.append(torch.stack((loss.float(), gnorm.float())))
            return
        if math.isfinite(loss) and math.isfinite(gnorm):
            self.n, self.loss, self.gsum = self.n + 1, self.loss + loss, self.gsum + gnorm
            self.gmax, self.clipped = max(self.gmax, gnorm), self.clipped + (gnorm > clip)

    def settle(self, clip: float) -> int:
        """Steps with finite figures in the window, after reading the CUDA ones (one sync)."""
        if self.pending:
            pending, self.pending = torch.stack(self.pending).tolist(), []
            for loss, gnorm in pending:
                self.add(loss, gnorm, clip)
        return self.n

    def take(self, tokens: int) -> dict:
        now = time.perf_counter()
        out = {"loss": self.loss / self.n, "grad_norm": self.gsum / self.n, "grad_norm_max": self.gmax,
               "clipped": self.clipped, "tok_s": (tokens - self.log_tokens) / max(now - self.log_t, 1e-9)}
        self.log_t, self.log_tokens = now, tokens
        self._reset()
        return out


def rounded(v):
    return float(f"{v:.6g}") if isinstance(v, float) else v
