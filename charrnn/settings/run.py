"""A run's settings: ``TrainConfig`` (one field per TRAIN entry), made from keywords or from what a run
saved, the rules between settings, and what ``--resume`` may change."""

from __future__ import annotations

import importlib.util
from dataclasses import asdict, field, make_dataclass

from charrnn.errors import CharrnnError
from charrnn.settings.setting import AUTO_PATIENCE, DEFAULT_MAX_EPOCHS, NO_WEIGHT_DROP, by_name, check_values
from charrnn.settings.tables import TRAIN


def _to_dict(self) -> dict:
    return asdict(self)


TrainConfig = make_dataclass(
    "TrainConfig", [(s.name, s.type if not s.optional else s.type | None, field(default=s.default)) for s in TRAIN],
    namespace={"to_dict": _to_dict, "__doc__": "A run's settings: one field per entry of settings.TRAIN."})


def make_config(**values) -> "TrainConfig":
    """Validated settings from keywords (each checked against its table entry and the others)."""
    cfg = TrainConfig(**check_values(TRAIN, values))
    check_combination(cfg)
    return cfg


def config_from_saved(saved: dict) -> "TrainConfig":
    """A run's settings as recorded in a checkpoint or config.json; settings it predates keep their
    defaults, entries this version no longer knows are ignored."""
    known = by_name(TRAIN)
    return TrainConfig(**{**PREDATED, **{k: v for k, v in saved.items() if k in known}})


# what a run saved before these settings existed did (their defaults may differ)
PREDATED = {"locked_dropout": False, "weight_drop": 0.0, "embed_dropout": 0.0, "ema": 0.0, "variable_len": False}


def check_combination(cfg) -> None:
    """Rules between settings (each value alone was checked by its table entry)."""
    if cfg.val_frac + cfg.test_frac >= 1:
        raise CharrnnError(f"--val-frac and --test-frac must sum below 1 (got {cfg.val_frac}, {cfg.test_frac})")
    if cfg.val_file is None and cfg.val_frac <= 0:
        raise CharrnnError("--val-frac 0 leaves no validation text; give a positive --val-frac or a --val-file")
    if cfg.weight_drop > 0 and cfg.cell in NO_WEIGHT_DROP:
        raise CharrnnError(f"--weight-drop needs a recurrent matrix W_hh and a {cfg.cell} has none; drop "
                           "--weight-drop (use --dropout or --locked-dropout) or use --cell lstm, gru, rnn, janet "
                           "or lstm-peephole")
    if cfg.tie_weights and cfg.head == "adaptive":
        raise CharrnnError("--tie-weights needs the full softmax head; use --head full (or auto)")
    if cfg.tie_weights and cfg.emb != cfg.hidden:
        raise CharrnnError(f"--tie-weights needs --emb equal to --hidden (got {cfg.emb} and {cfg.hidden})")
    if cfg.name is not None and (not cfg.name or "/" in cfg.name or cfg.name in (".", "..")):
        raise CharrnnError(f"--name {cfg.name!r} must be a plain directory name")
    if cfg.records == "":
        raise CharrnnError("--records '' is empty; give the separator that ends each record, e.g. --records '\\n' "
                           "(one record per line) or '\\n\\n' (paragraphs)")
    for flag, on in (("--extend-vocab", cfg.extend_vocab), ("--skip-unknown", cfg.skip_unknown)):
        if on and cfg.init_from is None:
            raise CharrnnError(f"{flag} only applies when fine-tuning; add --init-from CKPT (or drop {flag})")
    if cfg.variable_len and cfg.records:
        raise CharrnnError("--variable-len does not apply to --records (each record has its own windows); "
                           "drop --variable-len")
    if cfg.tensorboard and not installed("tensorboard"):
        raise CharrnnError(NEEDS_TENSORBOARD)
    if cfg.extend_vocab and cfg.skip_unknown:
        raise CharrnnError("--extend-vocab and --skip-unknown exclude each other: add the unseen characters or "
                           "drop them, not both")


NEEDS_TENSORBOARD = ("--tensorboard needs the tensorboard package; install it with: "
                     "pip install 'charrnn[tensorboard]' (or pip install tensorboard)")


def installed(package: str) -> bool:
    """Whether an optional package can be imported (found, not imported: no cost)."""
    return importlib.util.find_spec(package) is not None


def apply_changes(cfg, changes: dict):
    """A resumed run's settings: only settings marked resumable may differ from the saved ones."""
    table = by_name(TRAIN)
    for k, v in check_values(TRAIN, changes).items():
        if not table[k].resumable and getattr(cfg, k) != v:
            raise CharrnnError(f"cannot change {table[k].flag} when resuming (the run has {getattr(cfg, k)!r}); "
                               "start a new run to change it")
        setattr(cfg, k, v)
    check_combination(cfg)
    return cfg


def with_default_limit(cfg):
    if not (cfg.max_steps or cfg.max_epochs or cfg.max_time):
        cfg.max_epochs = DEFAULT_MAX_EPOCHS
    return cfg


def patience(cfg) -> int:
    """Evaluations without improvement that stop a run (0: never): --patience, or when it is not given
    AUTO_PATIENCE under --max-time (the early stop that leaves the rest of the budget unspent), else 0."""
    if cfg.patience is not None:
        return cfg.patience
    return AUTO_PATIENCE if cfg.max_time else 0


def adaptive_dropout(cfg, given: set) -> bool:
    """--adaptive-dropout as given, or when not given on under --max-time unless --dropout is given (a
    regulariser the user chose is never changed; training/adapt.py)."""
    if cfg.adaptive_dropout is not None:
        return cfg.adaptive_dropout
    return bool(cfg.max_time) and "dropout" not in given
