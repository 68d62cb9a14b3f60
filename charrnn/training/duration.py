"""How long a run without --max-time will take, said once at its start: the seconds per step from
this machine's budget probe when it has timed this shape (probe.py's cache: free), else measured
on the run's first steps (the first step, which warms up, left out); times the steps planned, plus
the evaluations still to come."""

from __future__ import annotations

import contextlib
import sys

from charrnn.data.batching import eval_stream_count
from charrnn.system.progress import human_duration
from charrnn.training import probe
from charrnn.training.memory import EVAL_STREAMS
from charrnn.training.schedule import EndOfRun

MEASURE_STEPS, MEASURE_S = 10, 2.0  # measure over this many steps, or fewer once this much time has passed


def remaining_seconds(step: int, total: int, step_s: float, eval_every: int, eval_tokens: int,
                      final_tokens: int, tokens_per_step: int, eval_tok_s: float | None = None) -> float:
    """Seconds from ``step`` to ``total``: the steps, the periodic evaluations (eval_tokens each) and
    the final scoring of best.pt (final_tokens; 0 when the periodic ones already cover the split).
    eval_tok_s: the evaluation speed when the probe measured it (else guessed from the step time)."""
    eval_s_per_token = 1 / eval_tok_s if eval_tok_s else step_s / max(tokens_per_step, 1) / EndOfRun.EVAL_SPEEDUP
    evals = total // eval_every - step // eval_every
    return (total - step) * step_s + (evals * eval_tokens + final_tokens) * eval_s_per_token


class DurationNote:
    """Fed after every step (``after_step``); logs the expected duration once, then stays quiet."""

    def __init__(self, cfg, model_cfg, log, total: int | None, val_tokens: int, step: int):
        self.cfg, self.mc, self.log, self.total, self.val_tokens = cfg, model_cfg, log, total, val_tokens
        self.done = cfg.max_time is not None or not total or step >= total  # a time limit: the user knows
        self.start = None
        self.first_step = step

    def after_step(self, step: int, elapsed: float, bar) -> None:
        if self.done:
            return
        if self.start is None:  # the end of the first step: measuring starts here
            self.start = (step, elapsed)
            return
        n, dt = step - self.start[0], elapsed - self.start[1]
        if n < MEASURE_STEPS and dt < MEASURE_S:
            return
        self.done = True
        self.say(step, dt / n, bar)

    def from_probe(self, device, precision, cache_dir: str | None) -> None:
        """Say it now when the budget probe's cache holds this shape on this machine (no measuring)."""
        if self.done or not cache_dir:
            return
        streams = eval_stream_count(self.val_tokens - 1, max_streams=EVAL_STREAMS)  # as budget.Planner keys it
        fig = probe.cached(self.mc, self.cfg.batch_size, self.cfg.seq_len, streams, device, precision,
                           probe.ProbeCache(cache_dir))
        if fig and fig.get("step_s"):
            self.done = True
            self.say(self.first_step, fig["step_s"], None, fig.get("eval_tok_s"), "this machine's probe")

    def say(self, step: int, step_s: float, bar, eval_tok_s: float | None = None, source: str = "here") -> None:
        cfg, mc = self.cfg, self.mc
        limit = self.val_tokens - 1
        per_eval = min(cfg.eval_tokens, limit) if cfg.eval_tokens else limit
        final = limit if cfg.eval_tokens and limit > cfg.eval_tokens else 0
        left = remaining_seconds(step, self.total, step_s, cfg.eval_every, per_eval, final,
                                 cfg.batch_size * cfg.seq_len, eval_tok_s)
        by_epochs = cfg.max_epochs and (not cfg.max_steps or self.total < cfg.max_steps)
        what = f"{self.total:,} steps"
        if by_epochs:
            what = f"{cfg.max_epochs:g} epoch{'' if cfg.max_epochs == 1 else 's'} ({what})"
        start = "for" if self.first_step == 0 else "to finish"
        msg = (f"about {human_duration(left)} {start} {what} of {mc.cell} {mc.layers}x{mc.hidden}, batch {cfg.batch_size} x "
               f"{cfg.seq_len} ({step_s:.3g} s per step, {source}); use --max-time SECONDS to bound it")
        with (contextlib.nullcontext() if bar is None or bar.disable else bar.external_write_mode(file=sys.stderr)):
            self.log(msg)
