"""Training: truncated BPTT over parallel streams, AdamW + warmup/cosine, evals, crash-safe checkpoints."""

from __future__ import annotations

import json
import math
import os
import random
import signal
import sys
import time
from dataclasses import asdict, dataclass, fields

import numpy as np
import torch
from tqdm.auto import tqdm

from charrnn.checkpoint import load_checkpoint, model_from_checkpoint, resolve_checkpoint, save_checkpoint
from charrnn.data import StreamBatcher, check_fits, corpus_name, load_corpus
from charrnn.errors import CharrnnError, Interrupted
from charrnn.evaluate import evaluate_split
from charrnn.fileio import append_line, atomic_write_bytes
from charrnn.model import CELLS, HEADS, ModelConfig, RNNLM, detach_state, resolve_head
from charrnn.runtime import autocast, resolve_device, resolve_precision, setup_backend, stderr_is_terminal
from charrnn.tokenizers import TOKENIZERS


@dataclass
class TrainConfig:
    corpus: str = "pystdlib"
    # tokenizer
    tokenizer: str = "char"
    vocab_size: int = 512
    # data
    val_frac: float = 0.05
    test_frac: float = 0.05
    val_file: str | None = None
    batch_size: int = 32
    seq_len: int = 128
    # model
    cell: str = "lstm"
    layers: int = 2
    hidden: int = 512
    emb: int = 64
    dropout: float = 0.1
    tie_weights: bool = False
    head: str = "auto"
    # optimisation
    lr: float = 3e-3
    min_lr_frac: float = 0.1
    warmup: int = 30
    weight_decay: float = 0.01
    grad_clip: float = 1.0
    # stopping
    max_steps: int | None = None
    max_epochs: float | None = None
    max_time: float | None = None
    patience: int = 0
    # bookkeeping
    eval_every: int = 200
    save_every: int = 200
    log_every: int = 50
    seed: int = 1337
    device: str = "auto"
    precision: str = "auto"
    skip_nonfinite: bool = False
    name: str | None = None
    checkpoint_dir: str = "checkpoints"

    def to_dict(self) -> dict:
        return asdict(self)


DEFAULT_MAX_EPOCHS = 10
# Settings that may change when a run is resumed; anything else must match the checkpoint.
RESUMABLE = {"max_steps", "max_epochs", "max_time", "patience", "eval_every", "save_every", "log_every",
             "device", "precision", "skip_nonfinite", "checkpoint_dir", "name", "corpus", "val_file"}


def validate_config(cfg: TrainConfig) -> None:
    def bad(msg):
        raise CharrnnError(msg)

    for name in ("vocab_size", "batch_size", "seq_len", "layers", "hidden", "emb", "eval_every", "save_every",
                 "log_every"):
        v = getattr(cfg, name)
        if not isinstance(v, int) or v < 1:
            bad(f"--{name.replace('_', '-')} must be a positive integer (got {v})")
    for name in ("val_frac", "test_frac", "dropout", "lr", "min_lr_frac", "weight_decay", "grad_clip",
                 "max_epochs", "max_time"):
        v = getattr(cfg, name)
        if v is not None and not math.isfinite(v):
            bad(f"--{name.replace('_', '-')} must be a finite number (got {v})")
    if not 0 <= cfg.dropout < 1:
        bad(f"--dropout must be in [0, 1) (got {cfg.dropout})")
    if not (0 <= cfg.val_frac < 1 and 0 <= cfg.test_frac < 1 and cfg.val_frac + cfg.test_frac < 1):
        bad(f"--val-frac and --test-frac must be in [0, 1) and sum below 1 (got {cfg.val_frac}, {cfg.test_frac})")
    if cfg.val_file is None and cfg.val_frac <= 0:
        bad("--val-frac 0 leaves no validation text; give a positive --val-frac or a --val-file")
    if cfg.lr <= 0:
        bad(f"--lr must be positive (got {cfg.lr})")
    if not 0 <= cfg.min_lr_frac <= 1:
        bad(f"--min-lr-frac must be in [0, 1] (got {cfg.min_lr_frac})")
    if cfg.warmup < 0 or cfg.patience < 0 or cfg.weight_decay < 0 or cfg.grad_clip < 0:
        bad("--warmup, --patience, --weight-decay and --grad-clip must not be negative")
    if cfg.max_steps is not None and cfg.max_steps < 1:
        bad(f"--max-steps must be at least 1 (got {cfg.max_steps})")
    if cfg.max_epochs is not None and cfg.max_epochs <= 0:
        bad(f"--max-epochs must be positive (got {cfg.max_epochs})")
    if cfg.max_time is not None and cfg.max_time <= 0:
        bad(f"--max-time must be positive seconds (got {cfg.max_time})")
    if cfg.cell not in CELLS:
        bad(f"unknown --cell {cfg.cell!r}; choose one of {', '.join(CELLS)}")
    if cfg.tokenizer not in TOKENIZERS:
        bad(f"unknown --tokenizer {cfg.tokenizer!r}; choose one of {', '.join(TOKENIZERS)}")
    if cfg.head not in HEADS:
        bad(f"unknown --head {cfg.head!r}; choose one of {', '.join(HEADS)}")
    if cfg.tie_weights and cfg.head == "adaptive":
        bad("--tie-weights needs the full softmax head; use --head full (or auto)")
    if cfg.tie_weights and cfg.emb != cfg.hidden:
        bad(f"--tie-weights needs --emb equal to --hidden (got {cfg.emb} and {cfg.hidden})")
    if cfg.name is not None and (not cfg.name or "/" in cfg.name or cfg.name in (".", "..")):
        bad(f"--name {cfg.name!r} must be a plain directory name")


def lr_at(cfg: TrainConfig, step: int, progress: float) -> float:
    """Linear warmup over cfg.warmup steps, then cosine decay to min_lr_frac * lr as progress -> 1."""
    warm = min(1.0, (step + 1) / cfg.warmup) if cfg.warmup else 1.0
    p = min(max(progress, 0.0), 1.0)
    return cfg.lr * warm * (cfg.min_lr_frac + (1 - cfg.min_lr_frac) * 0.5 * (1 + math.cos(math.pi * p)))


# ----------------------------------------------------------------------------- run directory

class RunLock:
    """A lock file holding the owner's PID; a lock left by a dead process is taken over."""

    def __init__(self, run_dir: str):
        self.path = os.path.join(run_dir, "lock")
        self.held = False

    def __enter__(self):
        for _ in range(3):
            try:
                fd = os.open(self.path, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o644)
            except FileExistsError:
                pid = self._owner()
                if pid is not None and pid != os.getpid() and _pid_alive(pid):
                    raise CharrnnError(f"run directory '{os.path.dirname(self.path)}' is in use by another "
                                       f"charrnn train (pid {pid}); wait for it or use another --name") from None
                try:
                    os.unlink(self.path)  # stale: its owner is gone
                except FileNotFoundError:
                    pass
                continue
            except OSError as e:
                raise CharrnnError(f"cannot create lock file '{self.path}': {e.strerror}; check that the run "
                                   "directory is writable") from None
            with os.fdopen(fd, "w") as f:
                f.write(f"{os.getpid()}\n")
            self.held = True
            return self
        raise CharrnnError(f"could not take the lock '{self.path}'; remove it if no training is running")

    def _owner(self):
        try:
            with open(self.path) as f:
                return int(f.read().strip() or -1)
        except (OSError, ValueError):
            return None

    def __exit__(self, *exc):
        if self.held and self._owner() == os.getpid():
            try:
                os.unlink(self.path)
            except OSError:
                pass
        self.held = False


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    try:  # a zombie is dead for our purposes
        with open(f"/proc/{pid}/stat") as f:
            return f.read().split(") ", 1)[1][:1] != "Z"
    except (OSError, IndexError):
        return True


def new_run_dir(cfg: TrainConfig) -> str:
    base = cfg.name or corpus_name(cfg.corpus)
    path = os.path.join(cfg.checkpoint_dir, base)
    has_ckpt = lambda p: any(os.path.exists(os.path.join(p, f)) for f in ("last.pt", "best.pt"))  # noqa: E731
    if cfg.name is not None:
        if has_ckpt(path):
            raise CharrnnError(f"run '{path}' already has checkpoints; continue it with --resume {path}, "
                               "or pick another --name")
    else:
        i = 1
        while has_ckpt(path) or os.path.exists(os.path.join(path, "lock")):
            i += 1
            path = os.path.join(cfg.checkpoint_dir, f"{base}-{i}")
    try:
        os.makedirs(path, exist_ok=True)
    except OSError as e:
        raise CharrnnError(f"cannot create run directory '{path}': {e.strerror}; choose another "
                           "--checkpoint-dir") from None
    if not os.access(path, os.W_OK):
        raise CharrnnError(f"run directory '{path}' is not writable; choose another --checkpoint-dir")
    return path


# ----------------------------------------------------------------------------- RNG state

def _rng_state(device: torch.device) -> dict:
    np_state = np.random.get_state()
    return {
        "python": list(random.getstate()[1]) + [random.getstate()[0], random.getstate()[2]],
        "numpy": [np_state[0], torch.from_numpy(np_state[1].astype(np.int64)), int(np_state[2]),
                  int(np_state[3]), float(np_state[4])],
        "torch": torch.get_rng_state(),
        "cuda": torch.cuda.get_rng_state(device) if device.type == "cuda" else None,
    }


def _set_rng_state(state: dict, device: torch.device) -> None:
    py = state["python"]
    random.setstate((py[-2], tuple(int(v) for v in py[:-2]), py[-1]))
    n = state["numpy"]
    np.random.set_state((n[0], n[1].numpy().astype(np.uint32), n[2], n[3], n[4]))
    torch.set_rng_state(state["torch"])
    if device.type == "cuda" and state.get("cuda") is not None:
        torch.cuda.set_rng_state(state["cuda"], device)


def seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)


# ----------------------------------------------------------------------------- the trainer

class Trainer:
    def __init__(self, cfg: TrainConfig, run_dir: str, log=None, resume_ckpt: dict | None = None):
        self.cfg, self.run_dir = cfg, run_dir
        self.log = log or (lambda msg: print(msg, file=sys.stderr))
        self.device = resolve_device(cfg.device)
        self.precision = resolve_precision(cfg.precision, self.device)
        setup_backend(self.device)
        seed_everything(cfg.seed)
        cache_dir = os.path.join(cfg.checkpoint_dir, ".cache")
        tok_state = resume_ckpt["tokenizer"] if resume_ckpt else None
        self.corpus = load_corpus(cfg.corpus, cfg.tokenizer, cfg.vocab_size, cfg.val_frac, cfg.test_frac,
                                  cfg.val_file, cache_dir, log=self.log, tok_state=tok_state,
                                  expect_digest=(resume_ckpt.get("train_state") or {}).get("corpus_digest")
                                  if resume_ckpt else None,
                                  check=lambda c: check_fits(len(c.train.ids), cfg.batch_size, cfg.seq_len))
        self.tok = self.corpus.tokenizer
        self.batcher = StreamBatcher(self.corpus.train.ids, cfg.batch_size, cfg.seq_len, cfg.seed)
        if resume_ckpt:
            self.model, _ = model_from_checkpoint(resume_ckpt, os.path.join(run_dir, "last.pt"))
        else:
            head, cutoffs = resolve_head(cfg.head, self.tok.vocab_size, cfg.tie_weights)
            self.model = RNNLM(ModelConfig(self.tok.vocab_size, cfg.cell, cfg.layers, cfg.hidden, cfg.emb,
                                           cfg.dropout, cfg.tie_weights, head, cutoffs))
            self.model.init_output_bias(np.bincount(self.corpus.train.ids, minlength=self.tok.vocab_size))
        self.model.to(self.device)
        decay = [p for n, p in self.model.named_parameters() if p.dim() >= 2 and "embed" not in n]
        no_decay = [p for n, p in self.model.named_parameters() if not (p.dim() >= 2 and "embed" not in n)]
        self.opt = torch.optim.AdamW([{"params": decay, "weight_decay": cfg.weight_decay},
                                      {"params": no_decay, "weight_decay": 0.0}],
                                     lr=cfg.lr, betas=(0.9, 0.99), fused=self.device.type == "cuda" or None)
        # training position and history
        self.step = self.epoch = self.k = 0
        self.state = None
        self.best_val = math.inf
        self.best: dict = {}  # metrics and step of the best evaluation
        self.bad_evals = 0
        self.elapsed = 0.0
        self.tokens = 0
        self.skipped = 0
        self.last_val: dict | None = None
        if resume_ckpt:
            self._restore(resume_ckpt)
        self.tokens_per_char = len(self.corpus.train.ids) / max(self.corpus.train.n_chars, 1)
        self._signal = None

    # -- state in and out of checkpoints
    def _train_state(self) -> dict:
        st = self.state
        hidden = None if st is None else (list(st) if isinstance(st, tuple) else [st])
        return {"step": self.step, "epoch": self.epoch, "k": self.k, "hidden": hidden,
                "best_val": self.best_val, "best": self.best, "bad_evals": self.bad_evals, "elapsed": self.elapsed,
                "tokens": self.tokens, "skipped": self.skipped, "last_val": self.last_val,
                "rng": _rng_state(self.device), "corpus_digest": self.corpus.digest}

    def _restore(self, ckpt: dict) -> None:
        ts = ckpt.get("train_state") or {}
        try:
            if ckpt.get("optimizer"):
                self.opt.load_state_dict(ckpt["optimizer"])
            self.step, self.epoch, self.k = int(ts["step"]), int(ts["epoch"]), int(ts["k"])
            hidden = ts.get("hidden")
            if hidden is not None:
                hidden = [h.to(self.device) for h in hidden]
                self.state = tuple(hidden) if self.cfg.cell == "lstm" else hidden[0]
            self.best_val, self.bad_evals = float(ts["best_val"]), int(ts["bad_evals"])
            self.best = dict(ts.get("best") or {})
            self.elapsed, self.tokens = float(ts["elapsed"]), int(ts["tokens"])
            self.skipped, self.last_val = int(ts.get("skipped", 0)), ts.get("last_val")
            _set_rng_state(ts["rng"], self.device)
        except (KeyError, TypeError, ValueError, RuntimeError, IndexError) as e:
            raise CharrnnError(f"checkpoint's training state is incomplete ({type(e).__name__}: {e}); "
                               "it cannot be resumed exactly") from None

    def save(self, name: str) -> None:
        save_checkpoint(os.path.join(self.run_dir, name), model=self.model, tokenizer=self.tok,
                        run_config=self.cfg.to_dict(), optimizer=self.opt, train_state=self._train_state())

    # -- limits and progress
    def progress(self) -> float:
        cfg, p = self.cfg, 0.0
        if cfg.max_steps:
            p = max(p, self.step / cfg.max_steps)
        if cfg.max_epochs:
            p = max(p, (self.epoch + self.k / self.batcher.windows_per_epoch) / cfg.max_epochs)
        if cfg.max_time:
            p = max(p, self.elapsed / cfg.max_time)
        return p

    def evaluate(self) -> dict:
        c = self.corpus
        m = evaluate_split(self.model, self.tok, c.val.ids, c.val.n_chars, c.val.n_bytes, self.device,
                           self.precision, desc="val")
        self.last_val = m
        append_line(os.path.join(self.run_dir, "metrics.jsonl"),
                    json.dumps({"step": self.step, "split": "val", **{k: _round(v) for k, v in m.items()},
                                "elapsed": round(self.elapsed, 2)}))
        if m["loss"] < self.best_val:
            self.best_val, self.bad_evals = m["loss"], 0
            self.best = {**m, "step": self.step}
            self.save("best.pt")
        else:
            self.bad_evals += 1
        return m

    def _on_signal(self, signum, frame):
        if self._signal is not None:  # second signal: stop now
            signal.signal(signum, signal.SIG_DFL)
            os.kill(os.getpid(), signum)
        self._signal = signum

    def fit(self) -> dict:
        cfg, model = self.cfg, self.model
        params = [p for p in model.parameters()]
        vocab = self.tok.vocab_size
        head = model.cfg.head + (f" softmax, clusters at {list(model.cfg.cutoffs)}" if model.cfg.cutoffs else " softmax")
        self.log(f"model: {cfg.cell} {cfg.layers}x{cfg.hidden}, emb {cfg.emb}, vocab {vocab} ({head}), "
                 f"{model.num_parameters():,} parameters; device {self.device.type}, {self.precision}")
        self.log(f"data: {len(self.corpus.train.ids):,} train / {len(self.corpus.val.ids):,} val tokens; "
                 f"batch {cfg.batch_size} x {cfg.seq_len}, {self.batcher.windows_per_epoch} steps per epoch")
        done = self._stop_reason()
        if done:  # e.g. resuming a run that finished (or was killed just after its final save)
            self.log(f"nothing to train: the run already {done}; "
                     "give a larger limit to continue it")
            return self._summary(done)
        old = {s: signal.signal(s, self._on_signal) for s in (signal.SIGINT, signal.SIGTERM)}
        bar = tqdm(total=self._estimate_total(), initial=self.step, desc="train", unit="step",
                   dynamic_ncols=True, disable=not stderr_is_terminal(), file=sys.stderr)
        model.train()
        streams = self.batcher.epoch_streams(self.epoch)
        t_mark, run_loss, run_n, tok_mark = time.perf_counter(), 0.0, 0, self.tokens
        log_t = t_mark
        stop_reason = None
        try:
            while stop_reason is None:
                if self.k >= self.batcher.windows_per_epoch:
                    self.epoch, self.k, self.state = self.epoch + 1, 0, None
                    streams = self.batcher.epoch_streams(self.epoch)
                x, y = self.batcher.window(streams, self.k)
                x, y = x.to(self.device, non_blocking=True), y.to(self.device, non_blocking=True)
                lr = lr_at(cfg, self.step, self.progress())
                for g in self.opt.param_groups:
                    g["lr"] = lr
                with autocast(self.device, self.precision):
                    loss, state = model.loss(x, y, self.state)
                self.opt.zero_grad(set_to_none=True)
                loss.backward()
                gnorm = torch.nn.utils.clip_grad_norm_(params, cfg.grad_clip if cfg.grad_clip > 0 else math.inf)
                loss_v = loss.detach().item()
                if not (math.isfinite(loss_v) and math.isfinite(float(gnorm))):
                    if not cfg.skip_nonfinite:
                        raise CharrnnError(
                            f"non-finite {'loss' if not math.isfinite(loss_v) else 'gradient'} at step "
                            f"{self.step + 1}; lower --lr (now {cfg.lr:g}) or --grad-clip, or pass "
                            f"--skip-nonfinite (last good checkpoint: {self.run_dir}/last.pt)")
                    self.skipped += 1
                    self.opt.zero_grad(set_to_none=True)
                    state = None
                else:
                    self.opt.step()
                    run_loss, run_n = run_loss + loss_v, run_n + 1
                self.state = detach_state(state)
                self.step, self.k = self.step + 1, self.k + 1
                self.tokens += x.numel()
                now = time.perf_counter()
                self.elapsed += now - t_mark
                t_mark = now
                bar.update(1)

                if self.step % cfg.log_every == 0 and run_n:
                    tok_s = (self.tokens - tok_mark) / max(now - log_t, 1e-9)
                    log_t, tok_mark = now, self.tokens
                    tl = run_loss / run_n
                    append_line(os.path.join(self.run_dir, "metrics.jsonl"), json.dumps({
                        "step": self.step, "split": "train", "epoch": round(self.epoch + self.k /
                                                                            self.batcher.windows_per_epoch, 4),
                        "loss": _round(tl), "bpc": _round(tl * self.tokens_per_char / math.log(2)),
                        "lr": float(f"{lr:.4g}"), "tok_s": round(tok_s), "elapsed": round(self.elapsed, 2),
                        "skipped": self.skipped}))
                    bar.set_postfix_str(self._postfix(tl, tok_s), refresh=False)
                    bar.total = self._estimate_total()
                    run_loss, run_n = 0.0, 0

                stop_reason = self._stop_reason()
                if self.step % cfg.eval_every == 0 or stop_reason:
                    t0 = time.perf_counter()
                    m = self.evaluate()
                    self.elapsed += time.perf_counter() - t0
                    t_mark = time.perf_counter()
                    if bar.disable:
                        self.log(f"step {self.step}: val loss {m['loss']:.4f}, bpc {m['bpc']:.4f} "
                                 f"({self.elapsed:.0f}s)")
                    if cfg.patience and self.bad_evals >= cfg.patience and not stop_reason:
                        stop_reason = f"no val improvement in {cfg.patience} evaluations"
                if self.step % cfg.save_every == 0 or stop_reason or self._signal is not None:
                    self.save("last.pt")
                    t_mark = time.perf_counter()  # saving is not training time
                if self._signal is not None and not stop_reason:
                    raise Interrupted(self._signal, "interrupted; saved "
                                      f"{os.path.join(self.run_dir, 'last.pt')} at step {self.step}. Resume with: "
                                      f"charrnn train --resume {self.run_dir}")
        finally:
            bar.close()
            for s, h in old.items():
                signal.signal(s, h)
        return self._summary(stop_reason)

    def _summary(self, stop_reason: str) -> dict:
        return {"run_dir": self.run_dir, "step": self.step, "epoch": self.epoch, "stop": stop_reason,
                "best_val": self.best_val, "best": self.best, "last_val": self.last_val, "elapsed": self.elapsed,
                "skipped": self.skipped}

    def _stop_reason(self):
        cfg = self.cfg
        if cfg.max_steps and self.step >= cfg.max_steps:
            return f"reached --max-steps {cfg.max_steps}"
        if cfg.max_epochs and self.epoch + self.k / self.batcher.windows_per_epoch >= cfg.max_epochs - 1e-9:
            return f"reached --max-epochs {cfg.max_epochs:g}"
        if cfg.max_time and self.elapsed >= cfg.max_time:
            return f"reached --max-time {cfg.max_time:g}s"
        return None

    def _estimate_total(self):
        p = self.progress()
        if p <= 0 or self.step == 0:
            return self.cfg.max_steps or None
        return max(self.step, int(round(self.step / min(p, 1.0))))

    def _postfix(self, train_loss: float, tok_s: float) -> str:
        parts = [f"loss {train_loss:.3f}", f"bpc {train_loss * self.tokens_per_char / math.log(2):.3f}"]
        if self.last_val:
            parts.append(f"val bpc {self.last_val['bpc']:.3f}")
        parts.append(f"{tok_s / 1000:.1f}k tok/s")
        return ", ".join(parts)


def _round(v):
    return float(f"{v:.6g}") if isinstance(v, float) else v


# ----------------------------------------------------------------------------- entry points

def write_config(cfg: TrainConfig, run_dir: str) -> None:
    """The run's settings, human-readable, next to its checkpoints."""
    atomic_write_bytes((json.dumps(cfg.to_dict(), indent=2) + "\n").encode(), os.path.join(run_dir, "config.json"))


def train(cfg: TrainConfig, log=None) -> dict:
    """Start a new run."""
    validate_config(cfg)
    if not (cfg.max_steps or cfg.max_epochs or cfg.max_time):
        cfg.max_epochs = DEFAULT_MAX_EPOCHS
    run_dir = new_run_dir(cfg)
    try:
        with RunLock(run_dir):
            trainer = Trainer(cfg, run_dir, log=log)
            write_config(cfg, run_dir)
            return trainer.fit()
    except BaseException:
        try:
            os.rmdir(run_dir)  # only succeeds if the failed run wrote nothing there
        except OSError:
            pass
        raise


def resume(target: str | None, overrides: dict, checkpoint_dir: str = "checkpoints", log=None) -> dict:
    """Continue a run from its last.pt exactly where it stopped."""
    path = resolve_checkpoint(target, checkpoint_dir, prefer="last.pt")
    run_dir = os.path.dirname(os.path.abspath(path))
    ckpt = load_checkpoint(path)
    saved = ckpt.get("run_config")
    if not isinstance(saved, dict):
        raise CharrnnError(f"checkpoint '{path}' has no run configuration; it cannot be resumed")
    known = {f.name for f in fields(TrainConfig)}
    cfg = TrainConfig(**{k: v for k, v in saved.items() if k in known})
    for k, v in overrides.items():
        if k not in RESUMABLE and getattr(cfg, k) != v:
            raise CharrnnError(f"cannot change --{k.replace('_', '-')} when resuming (the run has "
                               f"{getattr(cfg, k)!r}); start a new run to change it")
        setattr(cfg, k, v)
    cfg.checkpoint_dir = os.path.dirname(run_dir)
    validate_config(cfg)
    with RunLock(run_dir):
        trainer = Trainer(cfg, run_dir, log=log, resume_ckpt=ckpt)
        _truncate_metrics(os.path.join(run_dir, "metrics.jsonl"), trainer.step)
        write_config(cfg, run_dir)
        (log or (lambda m: print(m, file=sys.stderr)))(f"resuming {path} at step {trainer.step}")
        return trainer.fit()


def _truncate_metrics(path: str, step: int) -> None:
    """Drop metric lines written after the checkpoint we resume from (they will be written again)."""
    if not os.path.exists(path):
        return
    keep = []
    with open(path, encoding="utf-8", errors="replace") as f:
        for line in f:
            try:
                if json.loads(line)["step"] <= step:
                    keep.append(line if line.endswith("\n") else line + "\n")
            except (ValueError, KeyError, TypeError):
                continue
    atomic_write_bytes("".join(keep).encode(), path)
