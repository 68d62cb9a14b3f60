"""What one rank of a torchrun group owns (distributed.py): its rows of the B training streams, and
its part of a saved training state (the rows of the hidden state, its RNG state), re-sliced when
the run resumes on another number of processes."""

from __future__ import annotations

import torch

from charrnn.errors import CharrnnError
from charrnn.rng import rng_state


def reslice(ts: dict, world: int, rank: int, log) -> dict:
    """This rank's rows of the saved hidden state and its RNG state; another world size re-slices."""
    try:
        return _take_part(dict(ts), world, rank, log)
    except (TypeError, ValueError, IndexError, AttributeError, RuntimeError) as e:
        raise CharrnnError(f"checkpoint's training state is incomplete ({type(e).__name__}: {e}); "
                           "it cannot be resumed exactly") from None


def _take_part(ts: dict, world: int, rank: int, log) -> dict:
    saved = int(ts.get("world_size", 1) or 1)
    hidden = ts.get("hidden")
    if isinstance(hidden, list) and world > 1:
        b = hidden[0].shape[1]
        ts["hidden"] = [h[:, rank * b // world:(rank + 1) * b // world].contiguous() for h in hidden]
    rngs = ts.get("rank_rng")
    if saved == world and isinstance(rngs, list) and len(rngs) == world:
        ts["rng"] = rngs[rank]
    elif saved != world:
        if log:
            log(f"resuming a run trained by {saved} process(es) on {world}: the same streams continue, but "
                "dropout's random draws and the order of the gradient sums change (no longer bit-exact)")
        if rank >= saved or not isinstance(rngs, list) or rank >= len(rngs):
            if rank:  # a rank the saved run did not have: the RNG state wrap() seeded, as in a fresh run
                ts["rng"] = rng_state(torch.device("cpu")) | {"cuda": None, "mps": None}
        else:
            ts["rng"] = rngs[rank]
    return ts


class RankRows:
    """This rank's rows [a, b) of a StreamBatcher's windows; epochs and positions are the batcher's
    (a window of all B rows is a few kB: it is read whole and cut)."""

    def __init__(self, batcher, a: int, b: int):
        self.batcher, self.a, self.b = batcher, a, b
        self.B, self.T = b - a, batcher.T
        self.windows_per_epoch = batcher.windows_per_epoch

    def epoch_streams(self, epoch: int):
        return self.batcher.epoch_streams(epoch)

    def window(self, streams, k: int):
        x, y = self.batcher.window(streams, k)
        return x[self.a:self.b], y[self.a:self.b]

    def fresh(self, streams, k: int) -> bool:
        return self.batcher.fresh(streams, k)
