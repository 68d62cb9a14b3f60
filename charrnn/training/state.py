"""The training state inside a checkpoint (its own version): the position in the streams, the
carried hidden state, the best and last evaluations, time and token counts, the training loss since
the last evaluation (--adaptive-dropout), every RNG, --ema's average; written by the trainer at every
save, read back on --resume so the run continues exactly."""

from __future__ import annotations

from charrnn.errors import CharrnnError
from charrnn.model import state as states
from charrnn.system.rng import rng_state, set_rng_state
from charrnn.training.adapt import TrainLoss

TRAIN_STATE_VERSION = 3  # 1: format-1 checkpoints; 2 adds the resolved device/precision; 3 the --ema weights


def train_state(t) -> dict:
    """Everything of the training position and history that a checkpoint holds (resume is exact)."""
    st = t.state
    hidden = states.flatten(st)  # (h, c) or [h], and with --attention its memory last
    return t.dist.state_out({
        "version": TRAIN_STATE_VERSION, "step": t.step, "epoch": t.epoch, "k": t.k, "hidden": hidden,
        "best_val": t.best_val, "best": t.best, "bad_evals": t.bad_evals, "elapsed": t.elapsed, "tokens": t.tokens,
        "skipped": t.skipped, "last_val": t.last_val, "rng": rng_state(t.device), "corpus_digest": t.corpus.digest,
        "device": t.device.type, "precision": t.precision, "ema": t.ema.state() if t.ema else None,
        "train_loss": t.train_loss.state()})  # since the last evaluation (adapt.py; older checkpoints: none)


def restore(t, ckpt: dict) -> None:
    """The trainer ``t`` back at a checkpoint's position; a one-line error when the state is incomplete."""
    ts = t.dist.state_in(ckpt.get("train_state") or {}, t.log)  # this rank's rows and RNG
    try:
        if int(ts.get("version", 1)) > TRAIN_STATE_VERSION:
            raise CharrnnError("checkpoint's training state is newer than this charrnn understands; "
                               "upgrade charrnn (pip install -U charrnn)")
        if ckpt.get("optimizer"):
            t.opt.load_state_dict(ckpt["optimizer"])
        t.step, t.epoch, t.k = int(ts["step"]), int(ts["epoch"]), int(ts["k"])
        hidden = ts.get("hidden")
        if hidden is not None:
            hidden = [h.to(t.device) for h in hidden]
            t.state = states.unflatten(hidden, t.cfg.cell, t.cfg.attention)
        t.best_val, t.bad_evals = float(ts["best_val"]), int(ts["bad_evals"])
        t.best = dict(ts.get("best") or {})
        t.elapsed, t.tokens = float(ts["elapsed"]), int(ts["tokens"])
        t.skipped, t.last_val = int(ts.get("skipped", 0)), ts.get("last_val")
        t.train_loss = TrainLoss(*ts.get("train_loss", (0.0, 0)))
        set_rng_state(ts["rng"], t.device)
        if t.ema:
            t.ema.load(ts["ema"])
    except (KeyError, TypeError, ValueError, RuntimeError, IndexError) as e:
        raise CharrnnError(f"checkpoint's training state is incomplete ({type(e).__name__}: {e}); "
                           "it cannot be resumed exactly") from None
