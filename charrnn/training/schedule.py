"""A run's limits and learning-rate schedule: how far along it is (the largest fraction done of
--max-steps, --max-epochs and --max-time), why it stops, and the learning rate at a step."""

from __future__ import annotations

import math


def lr_at(cfg, step: int, progress: float) -> float:
    """Linear warmup over cfg.warmup steps, then cosine decay to min_lr_frac * lr as progress -> 1."""
    warm = min(1.0, (step + 1) / cfg.warmup) if cfg.warmup else 1.0
    p = min(max(progress, 0.0), 1.0)
    return cfg.lr * warm * (cfg.min_lr_frac + (1 - cfg.min_lr_frac) * 0.5 * (1 + math.cos(math.pi * p)))


def progress(cfg, step: int, epochs: float, elapsed: float) -> float:
    """The fraction of the run done: the largest over the limits given (0 when none is)."""
    p = 0.0
    if cfg.max_steps:
        p = max(p, step / cfg.max_steps)
    if cfg.max_epochs:
        p = max(p, epochs / cfg.max_epochs)
    if cfg.max_time:
        p = max(p, elapsed / cfg.max_time)
    return p


def stop_reason(cfg, step: int, epochs: float, elapsed: float) -> str | None:
    """Why the run stops here (the first limit reached), or None."""
    if cfg.max_steps and step >= cfg.max_steps:
        return f"reached --max-steps {cfg.max_steps}"
    if cfg.max_epochs and epochs >= cfg.max_epochs - 1e-9:
        return f"reached --max-epochs {cfg.max_epochs:g}"
    if cfg.max_time and elapsed >= cfg.max_time:
        return f"reached --max-time {cfg.max_time:g}s"
    return None


def planned_steps(cfg, windows_per_epoch: int) -> int | None:
    """The steps --max-steps and --max-epochs allow (the fewer); None when --max-time alone limits."""
    caps = [cfg.max_steps] if cfg.max_steps else []
    if cfg.max_epochs:
        caps.append(max(1, math.ceil(cfg.max_epochs * windows_per_epoch - 1e-6)))
    return min(caps) if caps else None


def estimate_total(cfg, step: int, p: float, windows_per_epoch: int | None = None) -> int | None:
    """The steps the whole run will take (the progress bar's total): the steps planned before the
    first step, then extrapolated from the fraction done (--max-time may end it sooner)."""
    if p <= 0 or step == 0:
        return planned_steps(cfg, windows_per_epoch) if windows_per_epoch else (cfg.max_steps or None)
    return max(step, int(round(step / min(p, 1.0))))
