"""The trainer's validation: score the validation split (bounded by --eval-tokens and by what is left
of --max-time), keep best.pt, write the val line, raise dropout when the run memorises its text
(--adaptive-dropout, adapt.py), stop early on --patience (settings.patience: on under --max-time, the
rest of the budget left unspent); at the end, best.pt scored on every token
of the split (the run's one best validation figure, rundir.full_best). ``Validation`` is a part of
``Trainer`` (its attributes are the trainer's)."""

from __future__ import annotations

import contextlib
import os
import time

from charrnn.evaluation.evaluate import evaluate_split
from charrnn.evaluation.records import evaluate_records
from charrnn.model.checkpoint import load_checkpoint
from charrnn.settings import patience
from charrnn.system import rundir
from charrnn.training import adapt


class Validation:
    def _evaluate_and_track(self, bar, final: bool = False) -> str | None:
        """Validate, keep best.pt, write the val line; a stop reason when patience runs out. The last
        evaluation scores the same tokens as the periodic ones (so best.pt is chosen like with like);
        then best.pt alone is scored on the whole split (_score_best_in_full)."""
        m = self.evaluate()
        if bar.disable:
            self.log(f"step {self.step}: {self._val_label(m)} loss {m['loss']:.4f}, bpc {m['bpc']:.4f} "
                     f"({self.elapsed:.0f}s)")
        if self.cfg.adaptive_dropout and not final:
            self._adapt_dropout(m)
        stop = self._early_stop()
        if stop and not final and not self._stop_reason():
            left = f"; {self.cfg.max_time - self.elapsed:.0f}s of --max-time {self.cfg.max_time:g}s left unspent" if (
                self.cfg.max_time) else ""
            self.log(f"early stop: no val improvement in {self.bad_evals} evaluations (best {self.best_val:.4f} at "
                     f"step {self.best.get('step', 0):,}){left}; --patience 0 trains to the end")
            return stop
        return None

    def _early_stop(self) -> str | None:
        """The early stop's reason when --patience evaluations in a row did not improve (settings.patience)."""
        n = patience(self.cfg)
        if n and self.bad_evals >= n:
            return f"stopped early: no val improvement in {n} evaluations"
        return None

    def evaluate(self) -> dict:
        """Score the validation split (its time counts towards --max-time), keep best.pt, log the line;
        with --ema the averaged weights are scored and saved as best.pt."""
        with self.ema.applied(self.model) if self.ema else contextlib.nullcontext():
            return self._evaluate()

    def _evaluate(self) -> dict:
        self._check_nonfinite()
        c, t0 = self.corpus, time.perf_counter()
        args = (self.device, self.precision, self.progress_bar, "val")
        wanted = min(self.cfg.eval_tokens or len(c.val.ids), len(c.val.ids) - 1)
        after = 2 * self._end.save_s
        limit = self._end.fit_tokens(self.elapsed, wanted, after=after) or self.cfg.eval_tokens or None
        deadline = t0 + self.cfg.max_time - self.elapsed - 2 * self._end.save_s if self.cfg.max_time else None
        m = (evaluate_records(self.model, self.tok, c.val, c.records, *args) if c.records else
             evaluate_split(self.model, self.tok, c.val.ids, c.val.n_chars, c.val.n_bytes, *args,
                            limit=limit, part=self.dist, deadline=deadline))
        before = self.elapsed
        self.elapsed = self.dist.agree(self.elapsed + time.perf_counter() - t0)  # rank 0's clock
        self._window.restart_clock()  # what follows (best.pt, kept checkpoints, the line) is the next lap's
        self._end.eval_done(int(m.get("tokens", 0)), self.elapsed - before)
        self.last_val = m
        rec = {"step": self.step, "split": "val", **m,  # unrounded: best figures print alike everywhere
               "elapsed": round(self.elapsed, 2)}
        self.dist.write(rundir.append_metrics, self.run_dir, rec)
        # like with like (rundir.comparable): an evaluation --max-time cut short scored fewer (other) tokens
        # than best.pt's did, so it neither replaces best.pt nor counts against the early stop
        cut = not rundir.comparable(m, self.best)
        self._gain, self._train_mean = None if cut else self.best_val - m["loss"], self.train_loss.take()
        if not cut and m["loss"] < self.best_val:
            self.best_val, self.bad_evals = m["loss"], 0
            self.best = {**m, "step": self.step}
            self.save(rundir.BEST)
        elif not cut:
            self.bad_evals += 1
        self.watchers.on_eval(rec)
        if self.on_eval:
            self.on_eval(rec)
        return m

    def _adapt_dropout(self, m: dict) -> None:
        """--adaptive-dropout (adapt.py): raise dropout when validation stopped improving while it stood
        well above the training loss; the early stop's count starts again."""
        p = self.model.drop.p
        new = None if self._gain is None else adapt.raised(p, self._gain, m["loss"], self._train_mean)
        if new is None:
            return
        self.model.drop.p = self.model.cfg.dropout = new  # the checkpoints' model config: resume keeps it
        self.bad_evals = 0
        self.log(f"step {self.step}: validation {m['loss']:.4f} stopped improving {m['loss'] - self._train_mean:.2f} "
                 f"nats/token above the training loss (memorising): dropout {p:g} -> {new:g} "
                 "(--no-adaptive-dropout: keep it)")

    def _score_best_in_full(self) -> None:
        """--eval-tokens bounded the evaluations: best.pt is scored on every token of the validation split."""
        c, limit = self.corpus, self.cfg.eval_tokens
        if c.records or not limit or len(c.val.ids) - 1 <= limit or not self.best:
            return
        if self._end.fit_tokens(self.elapsed + self._end.save_s, len(c.val.ids) - 1) is not None:  # --max-time
            self.log(f"best.pt was scored on {self.best.get('tokens', limit):,} of the {len(c.val.ids) - 1:,} "
                     f"validation tokens: all of them would not fit in --max-time ('charrnn eval' scores them)")
            self.best = {**self.best, "scope": "estimate"}  # the run's figure, said to be one wherever shown
            self.dist.write(rundir.append_metrics, self.run_dir, {**self.best, "split": "val",
                                                                  "elapsed": round(self.elapsed, 2)})
            return
        t0 = time.perf_counter()
        best = self.dist.from_main(lambda: load_checkpoint(os.path.join(self.run_dir, rundir.BEST))["model"])
        self.model.load_state_dict(best)  # under torchrun rank 0 reads best.pt and every rank gets its weights
        m = evaluate_split(self.model, self.tok, c.val.ids, c.val.n_chars, c.val.n_bytes, self.device,
                           self.precision, self.progress_bar, "val (all)", part=self.dist)
        self.best = {**m, "step": self.best["step"], "scope": "all"}
        self.elapsed = self.dist.agree(self.elapsed + time.perf_counter() - t0)  # the run's wall time includes it
        self.dist.write(rundir.append_metrics, self.run_dir, {"step": self.best["step"], "split": "val", "scope": "all",
                        **m, "elapsed": round(self.elapsed, 2)})  # unrounded: the run's figure (rundir.full_best)

    # -- the steps of the loop

    def _estimates(self) -> bool:
        """Whether periodic evaluations score only part of the validation split (--eval-tokens)."""
        c, limit = self.corpus, self.cfg.eval_tokens
        return not c.records and bool(limit) and len(c.val.ids) - 1 > limit

    def _val_label(self, m: dict) -> str:
        """'val', or 'val~ (est. on N tokens)': an estimate of the run's figure (best.pt on the whole split);
        an evaluation --max-time cut short says so (it is not compared with best.pt: rundir.comparable)."""
        if not rundir.comparable(m, self.best):  # best.pt is unchanged by a cut evaluation
            whole = self.best.get("tokens", 0)
            return f"val (cut short by --max-time: {m['tokens']:,} of {whole:,} tokens, not compared)"
        part = self._estimates() and m.get("tokens", 0) < len(self.corpus.val.ids) - 1
        return f"val~ (est. on {m['tokens']:,} tokens)" if part else "val"
