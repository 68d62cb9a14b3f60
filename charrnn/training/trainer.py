"""Training: truncated BPTT over parallel streams, AdamW + warmup/cosine, evaluations, crash-safe
checkpoints. ``Trainer.fit`` reads as the list of its steps; api.py starts or resumes a run.
"""

from __future__ import annotations

import contextlib
import math
import os
import sys

import torch

from charrnn.data.batching import StreamBatcher, check_fits
from charrnn.data.batching import VariableBatcher
from charrnn.data.corpus import load_corpus, token_counts
from charrnn.data.records import RecordBatcher, separator_ids
from charrnn.errors import CharrnnError, Interrupted
from charrnn.model.checkpoint import model_from_checkpoint, save_checkpoint
from charrnn.model.network import REGULARISERS, ModelConfig, RNNLM, detach_state
from charrnn.system import clock, rundir
from charrnn.system.device import autocast, resolve_device, resolve_precision, setup_backend
from charrnn.system.progress import progress_bar, show_progress
from charrnn.system.rng import seed_everything
from charrnn.training import schedule
from charrnn.training.adapt import TrainLoss
from charrnn.training.distributed import OneProcess
from charrnn.training.duration import DurationNote
from charrnn.training.ema import EMA
from charrnn.training.finetune import start_model, unknown_policy
from charrnn.training.log import LogWindow, rounded as _round
from charrnn.training.schedule import lr_at
from charrnn.training.state import restore, train_state
from charrnn.training.step import StepRunner, make_optimizer
from charrnn.training.validation import Validation
from charrnn.training.watchers import Watchers


def _stderr(msg: str) -> None:
    print(msg, file=sys.stderr)


class Trainer(Validation):
    """One run's model, data, optimizer and position; ``fit`` trains until a limit or a signal."""

    def __init__(self, cfg, run_dir: str, log=None, resume_ckpt: dict | None = None, progress: bool | None = None,
                 on_eval=None, on_log=None, init_ckpt: dict | None = None, prepare=None, dist=None):
        self.cfg, self.run_dir = cfg, run_dir
        self.log = log or _stderr
        self.progress_bar = show_progress(progress)
        self.on_eval, self.on_log = on_eval, on_log
        self.dist = dist or OneProcess()  # distributed.py: one process, or this rank of a torchrun group
        self.device = self.dist.device(resolve_device(cfg.device))
        self.precision = resolve_precision(cfg.precision, self.device)
        setup_backend(self.device)
        seed_everything(cfg.seed)
        source = resume_ckpt or init_ckpt  # init_ckpt: the model being fine-tuned (finetune.py)
        self.corpus = c = self.dist.rank0_first(load_corpus)(  # rank 0 fills the cache first
            cfg.corpus, cfg.tokenizer, cfg.vocab_size, cfg.val_frac, cfg.test_frac, cfg.val_file,
            rundir.cache_dir(cfg.checkpoint_dir), log=self.log, tok_state=source["tokenizer"] if source else None,
            expect_digest=(resume_ckpt.get("train_state") or {}).get("corpus_digest") if resume_ckpt else None,
            check=lambda c: (prepare and prepare(c, self.device, self.precision),
                             None if cfg.records else check_fits(len(c.train.ids), cfg.batch_size, cfg.seq_len)),
            records=cfg.records, unknown=unknown_policy(cfg, resuming=resume_ckpt is not None),
            cache_limit=cfg.cache_max_gb * 1e9)
        if prepare:  # budget.Planner (once): chooses settings not given, refuses what cannot fit in memory
            prepare(c, self.device, self.precision)
        self._probed_eval_tok_s = getattr(prepare, "eval_tok_s", None)  # the budget's probe, if it ran
        self.tok = c.tokenizer
        self.batcher = (RecordBatcher(c.train.ids, c.train.starts, separator_ids(self.tok, cfg.records), cfg.batch_size,
                                      cfg.seq_len, cfg.seed) if cfg.records else
                        (VariableBatcher if cfg.variable_len else StreamBatcher)(
                            c.train.ids, cfg.batch_size, cfg.seq_len, cfg.seed, pin=self.device.type == "cuda"))
        self.batcher = self.dist.shard(self.batcher)  # this rank's rows of the streams
        if resume_ckpt:
            self.model, _ = model_from_checkpoint(resume_ckpt, os.path.join(run_dir, rundir.LAST))
        elif init_ckpt:
            self.model = start_model(init_ckpt, self.tok, c.train.ids, cfg.dropout, self.log,
                                     **{n: getattr(cfg, n) for n in REGULARISERS})
        else:
            self.model = RNNLM(ModelConfig.from_settings(cfg, self.tok.vocab_size))
            self.model.init_output_bias(token_counts(self.corpus.train.ids, self.tok.vocab_size))
        self.model.to(self.device)
        self.params = list(self.model.parameters())
        self.opt = self._optimizer()
        self.ema = EMA(self.model, cfg.ema) if cfg.ema else None  # ema.py: evaluations and best.pt use it
        self._step = StepRunner(self.dist.wrap(self.model), self.opt, self.device,  # wrap: DDP under torchrun
                                lambda: autocast(self.device, self.precision),
                                self.log, cfg.skip_nonfinite)  # step.py: OOM micro-batches, CUDA without syncs
        # the training position and history (all of it goes into every checkpoint)
        self.step = self.epoch = self.k = 0
        self.state = None
        self.best_val, self.best, self.bad_evals, self.last_val = math.inf, {}, 0, None
        self.elapsed, self.tokens, self.skipped = 0.0, 0, 0
        self.train_loss = TrainLoss()  # since the last evaluation: --adaptive-dropout's gap (adapt.py)
        if resume_ckpt:
            restore(self, resume_ckpt)  # state.py
        self.tokens_per_char = len(self.corpus.train.ids) / max(self.corpus.train.n_chars, 1)
        self._end, self._saved = self._end_of_run(), False  # schedule.EndOfRun: --max-time keeps time for the end
        self._stop_request = self.dist.stop_request()  # signals.py
        self._window = LogWindow()
        self.watchers = Watchers(self)  # watchers.py: --sample-every, --keep-checkpoints, --tensorboard

    def _optimizer(self) -> torch.optim.Optimizer:
        return make_optimizer(self.model, self.cfg.lr, self.cfg.weight_decay, self.device)  # step.py

    # -- state in and out of checkpoints
    def save(self, name: str) -> None:
        self._check_nonfinite()
        self._saved = True
        self.dist.write(save_checkpoint, os.path.join(self.run_dir, name), model=self.model, tokenizer=self.tok,
                        run_config=self.cfg.to_dict(), optimizer=self.opt, train_state=train_state(self))

    # -- the loop
    def fit(self) -> dict:
        self._announce()
        stop = self._stop_reason()
        if stop:  # e.g. resuming a run that finished (or was killed just after its final save)
            self.log(f"nothing to train: the run already {stop}; give a larger limit to continue it")
            return self._summary(stop)
        stop = self._early_stop()
        if stop:  # resuming a run that stopped early: best.pt stays as it was
            self.log(f"nothing to train: the run {stop}; give a larger --patience (0: never) to continue it")
            return self._summary(stop)
        with self._stop_request.caught() as signals, self._progress_bar() as bar, self.watchers:
            self.model.train()
            self.elapsed += clock.since_start()  # start-up (imports, corpus, --max-time's probe) is run time too
            self._end.start(self.step, self.elapsed)
            streams = self._epoch_streams()
            while stop is None:
                streams = self._next_epoch_if_done(streams)
                x, y = self._batch(streams)
                loss, gnorm = self._train_step(x, y)
                if self.ema:
                    self.ema.update(self.model)
                self._account(y, loss, gnorm, bar)
                stop = self._stop_reason()
                if self.step % self.cfg.eval_every == 0 or stop:
                    stop = self._evaluate_and_track(bar, final=bool(stop)) or stop
                self.watchers.after_step(bar)
                if self.step % self.cfg.save_every == 0 or stop or signals.signum is not None:
                    self.save(rundir.LAST)  # its time is the next step's (run time, EndOfRun measures it)
                if signals.signum is not None and not stop:
                    raise Interrupted(signals.signum, self.run_dir, self.step)  # says how to resume
        self._score_best_in_full()
        return self._summary(stop)

    def _next_epoch_if_done(self, streams):
        if self.k < self.batcher.windows_per_epoch:
            return streams
        self.epoch, self.k, self.state = self.epoch + 1, 0, None
        return self._epoch_streams()

    def _epoch_streams(self):
        """This epoch's streams (moved to the device once) or, with --records, its window plan."""
        streams = self.batcher.epoch_streams(self.epoch)
        return streams.to(self.device) if isinstance(streams, torch.Tensor) else streams

    def _batch(self, streams):
        if self.batcher.fresh(streams, self.k):  # --records: a new group of records starts here
            self.state = None
        x, y = self.batcher.window(streams, self.k)
        return x.to(self.device, non_blocking=True), y.to(self.device, non_blocking=True)

    def _train_step(self, x, y) -> tuple[float, float]:
        """One optimizer step on one window; the hidden state is carried (detached) to the next."""
        self.lr = lr_at(self.cfg, self.step, self.progress())
        if self.cfg.variable_len:  # a shorter window counts for less (AWD-LSTM)
            self.lr *= x.shape[1] / self.cfg.seq_len
        for g in self.opt.param_groups:
            g["lr"] = self.lr
        loss, state = self._step.forward_backward(x, y, self.state)  # zero_grad, forward, backward
        clip = self.clip
        if self._step.deferred:  # CUDA: no host sync; non-finite steps are skipped on the GPU (step.py)
            gnorm = torch.nn.utils.clip_grad_norm_(self.params, clip)
            self.state = detach_state(self._step.update(loss, gnorm, state, self.step + 1))
            self.step, self.k = self.step + 1, self.k + 1
            return loss.detach(), gnorm
        loss_v, gnorm = loss.detach().item(), float(torch.nn.utils.clip_grad_norm_(self.params, clip))
        if math.isfinite(loss_v) and math.isfinite(gnorm):
            self.opt.step()
        elif self.cfg.skip_nonfinite:
            self.skipped += 1
            self.opt.zero_grad(set_to_none=True)
            state = None
        else:
            raise self._nonfinite_error("loss" if not math.isfinite(loss_v) else "gradient", self.step + 1)
        self.state = detach_state(state)
        self.step, self.k = self.step + 1, self.k + 1
        return loss_v, gnorm

    @property
    def clip(self) -> float:
        """The gradient-norm limit (--grad-clip; 0 turns clipping off)."""
        return self.cfg.grad_clip if self.cfg.grad_clip > 0 else math.inf

    def _nonfinite_error(self, kind: str, step: int) -> CharrnnError:
        return CharrnnError(f"non-finite {kind} at step {step}; lower --lr (now {self.cfg.lr:g}) or --grad-clip, "
                            f"or pass --skip-nonfinite (last good checkpoint: {self.run_dir}/{rundir.LAST})")

    def _check_nonfinite(self) -> None:
        """CUDA: the non-finite steps counted on the GPU since the last check (step.py); a no-op on the CPU."""
        n, first, kind = self._step.take_nonfinite()
        if n and not self.cfg.skip_nonfinite:
            raise self._nonfinite_error(kind, first)
        self.skipped += n

    def _account(self, y, loss: float, gnorm: float, bar) -> None:
        """Time, token count, progress bar, and every log_every steps a train line in metrics.jsonl."""
        self.tokens += int((y >= 0).sum()) if self.cfg.records else y.numel() * self.dist.world  # not padding
        self.elapsed += self._window.lap()
        loss = self.dist.sync(self, loss)  # the mean over ranks; rank 0's clock and any rank's signal for all
        self._end.step_done(self.step, self.elapsed, self._saved)
        self._saved = False
        bar.update(1)
        self._duration.after_step(self.step, self.elapsed, bar)  # without --max-time: how long, said once
        self._window.add(loss, gnorm, self.clip)
        self.train_loss.add(loss)
        if self.step % self.cfg.log_every:
            return
        self._check_nonfinite()
        if not self._window.settle(self.clip):
            return
        w = self._window.take(self.tokens)
        rec = {"step": self.step, "split": "train",
               "epoch": round(self._epochs(), 4),
               "loss": _round(w["loss"]), "bpc": _round(self._bpc(w["loss"])), "lr": float(f"{self.lr:.4g}"),
               "tok_s": round(w["tok_s"]), "elapsed": round(self.elapsed, 2), "skipped": self.skipped,
               "grad_norm": _round(w["grad_norm"]), "grad_norm_max": _round(w["grad_norm_max"]),
               "clipped": w["clipped"]}
        self.dist.write(rundir.append_metrics, self.run_dir, rec)
        self.watchers.on_log(rec)
        if self.on_log:
            self.on_log(rec)
        bar.set_postfix_str(self._postfix(w["loss"], w["tok_s"]), refresh=False)
        bar.total = self._estimate_total()

    # -- limits, progress and messages
    def progress(self) -> float:
        return schedule.progress(self.cfg, self.step, self._epochs(), self.elapsed, self._end.end())

    def _stop_reason(self) -> str | None:
        """Why the run stops here; with --max-time, when what must follow this step would not fit."""
        ahead = self._end.ahead(self.step) if self.cfg.max_time else 0.0
        return schedule.stop_reason(self.cfg, self.step, self._epochs(), self.elapsed + ahead)

    def _end_of_run(self) -> schedule.EndOfRun:
        cfg, val = self.cfg, len(self.corpus.val.ids) - 1
        bounded = bool(cfg.eval_tokens) and val > cfg.eval_tokens and not self.corpus.records
        n = self.model.num_parameters()
        return schedule.EndOfRun(cfg, min(val, cfg.eval_tokens or val), val if bounded else 0,
                                 cfg.batch_size * cfg.seq_len, state_bytes=4 * n * (3 + (cfg.ema > 0)),  # + AdamW's 2
                                 eval_tok_s=self._probed_eval_tok_s)

    def _epochs(self) -> float:
        return self.epoch + self.k / self.batcher.windows_per_epoch

    def _announce(self) -> None:
        cfg, mc = self.cfg, self.model.cfg
        head = mc.head + (f" softmax, clusters at {list(mc.cutoffs)}" if mc.cutoffs else " softmax")
        attn = f", attention over {mc.attention} states" if mc.attention else ""
        self.log(f"model: {mc.cell} {mc.layers}x{mc.hidden}{attn}, emb {mc.emb}, vocab {mc.vocab_size} ({head}), "
                 f"{self.model.num_parameters():,} parameters; device {self.device.type}, {self.precision}")
        self.log(f"data: {len(self.corpus.train.ids):,} train / {len(self.corpus.val.ids):,} val tokens; "
                 f"batch {cfg.batch_size} x {cfg.seq_len}, {self.batcher.windows_per_epoch} steps per epoch")
        if cfg.init_from and self.step == 0:
            self.log(f"fine-tuning {cfg.init_from}: fresh optimizer and schedule, lr {cfg.lr:g}")
        if cfg.records:
            self.log(self.batcher.describe())

    def run_record(self) -> dict:
        """What config.json holds: the settings, and for --records the layout's padding fraction."""
        pad = {"records_padding": round(self.batcher.padding, 4)} if self.cfg.records else {}
        return {**self.cfg.to_dict(), **pad}

    @contextlib.contextmanager
    def _progress_bar(self):
        bar = progress_bar(total=self._estimate_total(), initial=self.step, desc="train", unit="step",
                           dynamic_ncols=True, disable=not self.progress_bar)
        self._window.restart_clock(self.tokens)
        self._duration = DurationNote(self.cfg, self.model.cfg, self.log, bar.total, len(self.corpus.val.ids),
                                      self.step)
        self._duration.from_probe(self.device, self.precision, rundir.cache_dir(self.cfg.checkpoint_dir))
        try:
            yield bar
        finally:
            bar.close()

    def _estimate_total(self):
        return schedule.estimate_total(self.cfg, self.step, self.progress(), self.batcher.windows_per_epoch)

    def _bpc(self, loss: float) -> float:
        return loss * self.tokens_per_char / math.log(2)

    def _postfix(self, train_loss: float, tok_s: float) -> str:
        parts = [f"loss {train_loss:.3f}", f"bpc {self._bpc(train_loss):.3f}"]
        if self.last_val:
            parts.append(f"{'val~' if self._estimates() else 'val'} bpc {self.last_val['bpc']:.3f}")
        return ", ".join(parts + [f"{tok_s / 1000:.1f}k tok/s"])

    def _summary(self, stop: str | None) -> dict:
        return {"run_dir": self.run_dir, "step": self.step, "epoch": self.epoch, "stop": stop,
                "best_val": self.best_val, "best": self.best, "last_val": self.last_val, "elapsed": self.elapsed,
                "skipped": self.skipped}
