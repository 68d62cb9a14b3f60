"""Truncated-BPTT batching: parallel training streams read a window at a time, and the layout of
a split for one stateful evaluation pass."""

from __future__ import annotations

import numpy as np
import torch

from charrnn.errors import CharrnnError

def check_fits(n_tokens: int, batch_size: int, seq_len: int) -> None:
    """The training split must give every stream at least one full window (plus the shifted target)."""
    need = batch_size * (seq_len + 1) + seq_len
    if n_tokens < need:
        raise CharrnnError(
            f"the training split has {n_tokens:,} tokens, but --batch-size {batch_size} x --seq-len "
            f"{seq_len} needs at least {need:,}; use a smaller --batch-size or --seq-len, or more text")


class StreamBatcher:
    """B parallel contiguous streams over the training ids, read T tokens at a time.

    Window k of an epoch is ``x = streams[:, kT : kT+T]``, ``y = streams[:, kT+1 : kT+T+1]``, so
    each window continues where the previous one ended and the hidden state can be carried (TBPTT).
    Each epoch starts the streams at a different offset (seeded), so window boundaries move.
    """

    def __init__(self, ids: np.ndarray, batch_size: int, seq_len: int, seed: int = 0):
        check_fits(len(ids), batch_size, seq_len)
        self.ids = torch.from_numpy(np.ascontiguousarray(ids, dtype=np.int32))  # int32: half the memory
        self.B, self.T, self.seed = batch_size, seq_len, seed
        self.stream_len = (len(ids) - seq_len) // batch_size
        self.windows_per_epoch = (self.stream_len - 1) // seq_len

    def epoch_streams(self, epoch: int) -> torch.Tensor:
        offset = int(np.random.default_rng([self.seed, epoch]).integers(0, self.T)) if epoch else 0
        n = self.B * self.stream_len
        return self.ids[offset:offset + n].view(self.B, self.stream_len)

    def window(self, streams: torch.Tensor, k: int) -> tuple[torch.Tensor, torch.Tensor]:
        s = k * self.T
        return streams[:, s:s + self.T].long(), streams[:, s + 1:s + self.T + 1].long()

    def fresh(self, streams: torch.Tensor, k: int) -> bool:
        """Whether the hidden state starts at zero at window k: only at an epoch's start (see records.py)."""
        return False


def eval_streams(ids: np.ndarray, max_streams: int = 32, min_len: int = 4096):
    """Lay out a split for one stateful pass that scores every target once.

    Inputs ``ids[:-1]`` and targets ``ids[1:]`` are cut into S contiguous streams (S grows with the
    text, at least ``min_len`` tokens each); the last stream is padded with target -100 (ignored).
    """
    n = len(ids) - 1
    if n < 1:
        raise CharrnnError("the text to evaluate is too short: it needs at least two tokens")
    s = int(max(1, min(max_streams, n // min_len)))
    length = -(-n // s)
    x = np.zeros(s * length, np.int64)
    y = np.full(s * length, -100, np.int64)
    x[:n], y[:n] = ids[:-1], ids[1:]
    return torch.from_numpy(x).view(s, length), torch.from_numpy(y).view(s, length)
