"""Random-number state: seeding, and saving/restoring every generator for bit-exact resume."""

from __future__ import annotations

import random

import numpy as np
import torch


def seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)


def rng_state(device: torch.device) -> dict:
    """Python, numpy, torch (and CUDA or MPS) generator states as plain data for a checkpoint."""
    py = random.getstate()
    np_state = np.random.get_state()
    return {
        "python": list(py[1]) + [py[0], py[2]],
        "numpy": [np_state[0], torch.from_numpy(np_state[1].astype(np.int64)), int(np_state[2]),
                  int(np_state[3]), float(np_state[4])],
        "torch": torch.get_rng_state(),
        "cuda": torch.cuda.get_rng_state(device) if device.type == "cuda" else None,
        "mps": torch.mps.get_rng_state() if device.type == "mps" else None,
    }


def set_rng_state(state: dict, device: torch.device) -> None:
    py = state["python"]
    random.setstate((py[-2], tuple(int(v) for v in py[:-2]), py[-1]))
    n = state["numpy"]
    np.random.set_state((n[0], n[1].numpy().astype(np.uint32), n[2], n[3], n[4]))
    torch.set_rng_state(state["torch"])
    if device.type == "cuda" and state.get("cuda") is not None:
        torch.cuda.set_rng_state(state["cuda"], device)
    if device.type == "mps" and state.get("mps") is not None:
        torch.mps.set_rng_state(state["mps"])
