"""A run's limits and learning-rate schedule: how far along it is (the largest fraction done of
--max-steps, --max-epochs and --max-time), why it stops, the learning rate at a step, and what the
end of a --max-time run will cost (EndOfRun), so the whole run fits the wall-clock budget."""

from __future__ import annotations

import math


def lr_at(cfg, step: int, progress: float) -> float:
    """Linear warmup over cfg.warmup steps, then cosine decay to min_lr_frac * lr as progress -> 1."""
    warm = min(1.0, (step + 1) / cfg.warmup) if cfg.warmup else 1.0
    p = min(max(progress, 0.0), 1.0)
    return cfg.lr * warm * (cfg.min_lr_frac + (1 - cfg.min_lr_frac) * 0.5 * (1 + math.cos(math.pi * p)))


def progress(cfg, step: int, epochs: float, elapsed: float, reserve: float = 0.0) -> float:
    """The fraction of the run done: the largest over the limits given (0 when none is). ``reserve``:
    seconds of --max-time kept for the end of the run (EndOfRun), not for training."""
    p = 0.0
    if cfg.max_steps:
        p = max(p, step / cfg.max_steps)
    if cfg.max_epochs:
        p = max(p, epochs / cfg.max_epochs)
    if cfg.max_time:
        p = max(p, elapsed / max(cfg.max_time - reserve, 1e-9))
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


class EndOfRun:
    """The seconds a --max-time run must keep for what follows its training steps, so that the whole
    run, from the process's start (system/clock.py) to its last file, ends within --max-time.

    After the step where it stops, a run evaluates (``eval_tokens`` of ``val_tokens``), saves best.pt
    and last.pt and, when evaluations were bounded, scores best.pt on the whole split (``full_tokens``;
    time is kept for that only while it is at most FULL_SHARE of the budget).
    Figures are measured as the run goes, from the trainer's clock, which every rank agrees on
    (distributed.py), so all ranks stop at the same step: a step's seconds, an evaluation's tokens
    per second, a save's seconds. Before they are measured: scoring runs at the probe's speed (when
    --max-time's probe ran), or else a token is taken to cost half a training token (a forward pass without the backward one: a third by arithmetic, measured at a
    quarter to a half on CPUs, docs/BENCHMARKS.md), and a save to write ``state_bytes`` at SAVE_BYTES_S.
    ``ahead(step)`` is what must still fit before the next stop check: this step's evaluation and
    save when due, one more step, and the end of the run.
    """

    SMOOTH = 0.2            # weight of the newest step in the running mean of a step's seconds
    EVAL_SPEEDUP = 2.0      # scoring tokens per second / training tokens per second, until measured
    SAVE_BYTES_S = 100e6    # bytes per second a save writes, until measured
    MIN_EVAL_TOKENS = 1024  # an evaluation out of time still scores this many tokens (two blocks of 512)
    FULL_SHARE = 0.25       # the most of --max-time kept for scoring best.pt on the whole split

    def __init__(self, cfg, val_tokens: int, full_tokens: int, tokens_per_step: int, state_bytes: int = 0,
                 eval_tok_s: float | None = None):
        self.cfg, self.val_tokens, self.full_tokens = cfg, val_tokens, full_tokens
        self.tokens_per_step, self.probed_eval_tok_s = tokens_per_step, eval_tok_s  # the probe's, if it ran
        self.step_s, self.eval_tok_s, self.save_s = 0.0, None, state_bytes / self.SAVE_BYTES_S
        self.step_max = 0.0  # the slowest step after the first: the "one more step" kept (a busy machine)
        self.first_s = 0.0  # the first step (warm-up included): a figure only until a second step is measured
        self._save_measured = False
        self._last, self._eval_since = None, 0.0  # (step, elapsed) at the previous step; evaluations since
        self._first = False  # the next step is the first (after start())

    def start(self, step: int, elapsed: float) -> None:
        """The clock where training starts, so the first step is measured too (first_s)."""
        self._last, self._eval_since, self._first = (step, elapsed), 0.0, True

    def step_done(self, step: int, elapsed: float, saved: bool) -> None:
        """The clock after a step; ``saved``: a checkpoint was written since the previous step (its
        time lands in this step's interval, as an evaluation's does)."""
        last, self._last = self._last, (step, elapsed)
        dt, self._eval_since = (elapsed - last[1] - self._eval_since if last else 0.0), 0.0
        if last is None or step != last[0] + 1:
            return
        if self._first:
            self._first, self.first_s = False, dt
        elif not saved:
            self.step_s = dt if not self.step_s else (1 - self.SMOOTH) * self.step_s + self.SMOOTH * dt
            self.step_max = max(self.step_max, dt)
        elif self.step_s:  # the slowest save measured
            save_s = max(0.0, dt - self.step_s)
            self.save_s = max(self.save_s, save_s) if self._save_measured else save_s
            self._save_measured = True

    def eval_done(self, tokens: int, seconds: float) -> None:
        self._eval_since += seconds
        if seconds > 0 and tokens > 0:
            self.eval_tok_s = tokens / seconds

    def fit_tokens(self, elapsed: float, wanted: int, after: float = 0.0) -> int | None:
        """How many of ``wanted`` tokens an evaluation may score so it ends within --max-time (leaving
        ``after`` seconds): None when all fit (or nothing is known yet), else at least MIN_EVAL_TOKENS.
        When the time kept was too short (a probe or a machine slower than measured), the evaluation
        is bounded rather than the budget overrun."""
        rate = self._rate(cautious=True)
        if not self.cfg.max_time or not rate:
            return None
        fit = int((self.cfg.max_time - elapsed - after) * rate)
        return None if fit >= wanted else min(wanted, max(self.MIN_EVAL_TOKENS, fit))

    def _rate(self, cautious: bool = False) -> float | None:
        """Scoring tokens per second: measured, else the probe's, else from a step (``cautious``: the first)."""
        step_s = self.step_s or (self.first_s if cautious else 0.0)
        return self.eval_tok_s or self.probed_eval_tok_s or (
            self.EVAL_SPEEDUP * self.tokens_per_step / step_s if step_s else None)

    def _scoring_s(self, tokens: int) -> float:
        rate = self._rate()
        return tokens / rate if rate else 0.0

    def eval_s(self) -> float:
        return self._scoring_s(self.val_tokens) + self.save_s  # an evaluation, and best.pt when it improves

    def end(self) -> float:
        """Seconds kept for the end of the run: the last evaluation, last.pt, and the full score of best.pt
        while it takes at most FULL_SHARE of --max-time (a 100 MB corpus's 5M validation tokens would
        otherwise keep a short budget from training at all: the run's figure is then the last estimate,
        unless time is left at the end, and `charrnn eval` scores best.pt in full)."""
        full = self._scoring_s(self.full_tokens) + self.save_s if self.full_tokens else 0.0  # + reading best.pt
        if full > self.FULL_SHARE * (self.cfg.max_time or 0.0):
            full = 0.0
        return self.eval_s() + self.save_s + full

    def ahead(self, step: int) -> float:
        """0 until a step after the first is measured (a first step's warm-up would stop a run at once)."""
        if not self.step_s:
            return 0.0
        cfg = self.cfg
        due = (self.eval_s() if step % cfg.eval_every == 0 else 0.0) + (self.save_s if step % cfg.save_every == 0 else 0.0)
        return due + max(self.step_s, self.step_max) + self.end()
