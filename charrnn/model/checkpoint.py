"""Checkpoint I/O in one place: one self-contained file per checkpoint, loaded without running code.

A checkpoint is a dict of tensors and plain values (``torch.load(weights_only=True)``):
format tag and version, model config, tokenizer, weights, optimizer, the run's settings and the
training state (which carries its own version, owned by train.py).

Format history: 1 kept the adaptive head's rank buffer at the model's top level ("rank"); 2 keeps
it in the head ("head.rank") and versions the training state. Older files are upgraded on load.
"""

from __future__ import annotations

import errno
import os
import pickle
import zipfile

import torch

from charrnn.data.tokenizers import tokenizer_from_state
from charrnn.errors import CharrnnError
from charrnn.model.network import ModelConfig, RNNLM
from charrnn.system.fileio import atomic_save, safe_load

FORMAT = "charrnn-checkpoint"
VERSION = 2


def save_checkpoint(path: str, *, model: RNNLM, tokenizer, run_config: dict, optimizer=None,
                    train_state: dict | None = None) -> None:
    sd = {k: v.detach().cpu() for k, v in model.state_dict().items()}
    for k, v in sd.items():
        if v.is_floating_point() and not torch.isfinite(v).all():
            raise CharrnnError(f"refusing to save non-finite weights ({k}) to '{path}'; "
                               "lower --lr or --grad-clip")
    atomic_save({
        "format": FORMAT,
        "version": VERSION,
        "model_config": model.cfg.to_dict(),
        "tokenizer": tokenizer.state(),
        "model": sd,
        "optimizer": optimizer.state_dict() if optimizer is not None else None,
        "train_state": train_state or {},
        "run_config": run_config,
    }, path)


def load_checkpoint(path: str) -> dict:
    """Load and validate; every way a file can be wrong gets a one-line CharrnnError."""
    if not os.path.lexists(path):
        raise CharrnnError(f"checkpoint '{path}' does not exist; train a model first (charrnn train) "
                           "or give the path of a .pt file")
    if os.path.isdir(path):
        raise CharrnnError(f"checkpoint '{path}' is a directory; give a .pt file or a run directory with best.pt")
    if not os.path.isfile(path):
        raise CharrnnError(f"checkpoint '{path}' is not a regular file")
    if os.path.getsize(path) == 0:
        raise CharrnnError(f"checkpoint '{path}' is empty (0 bytes); it is not a charrnn checkpoint")
    try:
        ckpt = safe_load(path)
    except pickle.UnpicklingError as e:
        if "Unsupported global" in str(e) or "GLOBAL" in str(e):
            raise CharrnnError(f"checkpoint '{path}' contains code or objects that are not plain data; "
                               "refused without running it (only load checkpoints you trust)") from None
        raise CharrnnError(f"checkpoint '{path}' is not a readable checkpoint (truncated, corrupt or not a "
                           "PyTorch file); it is not a charrnn checkpoint") from None
    except (RuntimeError, EOFError, zipfile.BadZipFile, ValueError, OSError, UnicodeDecodeError) as e:
        msg = str(e).strip().splitlines()[0][:100] if str(e).strip() else type(e).__name__
        if isinstance(e, OSError) and e.errno in (errno.EACCES, errno.EPERM, errno.EIO):
            raise CharrnnError(f"cannot read checkpoint '{path}': {e.strerror}") from None
        raise CharrnnError(f"checkpoint '{path}' is truncated or corrupt ({msg}); "
                           "use another checkpoint (e.g. last.pt or best.pt)") from None
    except Exception as e:  # noqa: BLE001 - any other failure of a foreign file is still a bad file
        raise CharrnnError(f"checkpoint '{path}' could not be read ({type(e).__name__}); "
                           "it is not a charrnn checkpoint") from None
    if not isinstance(ckpt, dict) or ckpt.get("format") != FORMAT:
        raise CharrnnError(f"'{path}' is not a charrnn checkpoint (it was written by another tool)")
    version = ckpt.get("version")
    if not isinstance(version, int) or version > VERSION:
        raise CharrnnError(f"checkpoint '{path}' has format version {version}, newer than this charrnn "
                           f"understands ({VERSION}); upgrade charrnn (pip install -U charrnn)")
    for key in ("model_config", "tokenizer", "model"):
        if not isinstance(ckpt.get(key), dict):
            raise CharrnnError(f"checkpoint '{path}' is missing its {key.replace('_', ' ')}; it is damaged")
    return _upgrade(ckpt)


def _upgrade(ckpt: dict) -> dict:
    """Bring an older format up to VERSION in memory (the file itself is never rewritten)."""
    if ckpt["version"] < 2:
        sd = ckpt["model"]
        if "rank" in sd:
            sd["head.rank"] = sd.pop("rank")
        ts = ckpt.get("train_state")
        if isinstance(ts, dict) and ts:
            ts.setdefault("version", 1)
        ckpt["version"] = 2
    return ckpt


def model_from_checkpoint(ckpt: dict, path: str = "checkpoint") -> tuple[RNNLM, object]:
    tokenizer = tokenizer_from_state(ckpt["tokenizer"])
    try:
        cfg = ModelConfig(**ckpt["model_config"])
        model = RNNLM(cfg)
        model.load_state_dict(ckpt["model"])
    except (TypeError, KeyError, RuntimeError, ValueError) as e:
        msg = str(e).strip().splitlines()[0][:100]
        raise CharrnnError(f"checkpoint '{path}' has weights that do not fit its model config ({msg}); "
                           "it is damaged") from None
    if cfg.vocab_size != tokenizer.vocab_size:
        raise CharrnnError(f"checkpoint '{path}' has a tokenizer of {tokenizer.vocab_size} tokens but a model "
                           f"of {cfg.vocab_size}; it is damaged")
    return model, tokenizer


def load_model(path: str, device: torch.device | str = "cpu"):
    ckpt = load_checkpoint(path)
    model, tokenizer = model_from_checkpoint(ckpt, path)
    model.to(device).eval()
    return model, tokenizer, ckpt
