"""How this process was launched: torchrun's environment (WORLD_SIZE, RANK, LOCAL_RANK), read in one place.
Imports no torch (the CLI asks it before anything is loaded)."""

from __future__ import annotations

import os

from charrnn.errors import CharrnnError


def env_world() -> tuple[int, int, int]:
    """(world size, rank, local rank) from torchrun's environment; (1, 0, 0) outside it."""
    try:
        return tuple(int(os.environ.get(k) or d) for k, d in (("WORLD_SIZE", 1), ("RANK", 0), ("LOCAL_RANK", 0)))
    except ValueError:
        e = CharrnnError("WORLD_SIZE, RANK and LOCAL_RANK must be integers (torchrun sets them); "
                         "launch with torchrun --nproc-per-node N -m charrnn train ...")
        e.shared = True  # every rank meets it alike: rank 0 alone prints it
        raise e from None


def is_other_rank() -> bool:
    """True on a torchrun rank other than 0 (which stays quiet where rank 0 reports)."""
    rank = os.environ.get("RANK", "")
    return rank not in ("", "0")
