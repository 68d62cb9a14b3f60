"""How this process was launched: torchrun's environment (WORLD_SIZE, RANK, LOCAL_RANK), read in one place,
and what W processes cannot do, refused before any process group starts. Imports no torch (the CLI asks
it before anything is loaded)."""

from __future__ import annotations

import os

from charrnn.errors import CharrnnError


def env_world() -> tuple[int, int, int]:
    """(world size, rank, local rank) from torchrun's environment; (1, 0, 0) outside it."""
    try:
        return tuple(int(os.environ.get(k) or d) for k, d in (("WORLD_SIZE", 1), ("RANK", 0), ("LOCAL_RANK", 0)))
    except ValueError:
        raise shared_error("WORLD_SIZE, RANK and LOCAL_RANK must be integers (torchrun sets them); "
                           "launch with torchrun --nproc-per-node N -m charrnn train ...") from None


def is_other_rank() -> bool:
    """True on a torchrun rank other than 0 (which stays quiet where rank 0 reports)."""
    rank = os.environ.get("RANK", "")
    return rank not in ("", "0")


def shared_error(msg: str) -> CharrnnError:
    """An error every rank meets alike: rank 0 alone prints it (cli.main)."""
    e = CharrnnError(msg)
    e.shared = True
    return e


def check_settings(cfg, world: int, resuming: bool = False, given: set = frozenset()) -> str | None:
    """What W processes cannot do, refused before any process group starts (the same on every rank).
    The budget planner, on by default with --max-time, is turned off (the returned note says so)."""
    if cfg.batch_size % world:
        raise shared_error(f"--batch-size {cfg.batch_size} does not divide among {world} processes; give a "
                           f"multiple of {world} (each rank trains batch/{world} of the streams)")
    if getattr(cfg, "records", None):
        raise shared_error("--records is not supported under torchrun yet; train a records corpus in one process")
    if getattr(cfg, "budget", False) and getattr(cfg, "max_time", None) and not resuming:  # resuming never plans
        if "budget" in given:
            raise shared_error("--budget plans for one process and cannot be used under torchrun; give the shape "
                               "(--layers, --hidden, --batch-size, --seq-len) or plan it with a one-process run first")
        cfg.budget = False
        return "--budget is off under torchrun (it plans for one process): the settings given, else the defaults"
    return None
