"""What a run does beside training, for the people watching it: --sample-every samples (samples.py),
--keep-checkpoints (keep.py) and --tensorboard (tensorboard.py). The trainer calls three hooks:
``on_log`` (a train line written), ``on_eval`` (a val line written), ``after_step`` (once per step);
the context closes the event files. Only the main process writes (under torchrun)."""

from __future__ import annotations

import contextlib
import time

from charrnn.system import rundir
from charrnn.training import keep
from charrnn.training.samples import format_sample, show, training_sample


class Watchers:
    def __init__(self, trainer):
        self.t = t = trainer
        cfg, main = t.cfg, t.dist.main
        self.board, self.val = None, None  # val: the last evaluation's record
        if main and cfg.keep_checkpoints:
            keep.prune(t.run_dir, after_step=t.step)  # written after the checkpoint we resume from

    def __enter__(self):
        t = self.t
        if t.dist.main and t.cfg.tensorboard:
            from charrnn.training.tensorboard import Board

            self.board = Board(t.run_dir, t.step)
        return self

    def __exit__(self, *exc):
        if self.board is not None:
            self.board.close()
            self.board, self.val = None, None  # val: the last evaluation's record

    def on_log(self, rec: dict) -> None:
        if self.board is not None:
            self.board.record(rec)

    def on_eval(self, rec: dict) -> None:
        """After an evaluation (with --ema the averaged weights are still in place): keep a checkpoint."""
        t, k = self.t, self.t.cfg.keep_checkpoints
        self.val = rec
        if self.board is not None:
            self.board.record(rec)
        if k:
            t.save(keep.kept_name(t.step, t.last_val["loss"]))
            if t.dist.main:
                keep.prune(t.run_dir, keep=k)

    def after_step(self, bar) -> None:
        t, every = self.t, self.t.cfg.sample_every
        if not every or t.step % every or not t.dist.main:
            return
        t0 = time.perf_counter()
        with t.ema.applied(t.model) if t.ema else contextlib.nullcontext():
            s = training_sample(t.model, t.tok, t.cfg, t.device)
        rec = {"step": t.step, "split": "sample", **s}
        rundir.append_metrics(t.run_dir, rec)
        show(format_sample(t.step, s, self.val), bar, t.log)
        # its time counts towards --max-time (in the next lap) but is no step's time: EndOfRun leaves it out
        # of the step it measures, as it does an evaluation's
        t._end.eval_done(0, time.perf_counter() - t0)
        if self.board is not None:
            self.board.record(rec)
