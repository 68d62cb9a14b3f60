"""Variable-length TBPTT windows (``--variable-len``, randomized truncation as in AWD-LSTM and the d2l
chapter on BPTT): each step reads a window whose length is drawn around ``--seq-len``.

The lengths of an epoch are a pure function of (seed, epoch): with probability 0.95 the base is T,
else T/2; the length is a normal draw around it (sd 5 T / 70, AWD's 5 at T = 70), clamped to
[T/4, 1.2 T]. Window k of an epoch starts at the token offset ``starts[k]`` (the sum of the lengths
before it), so the trainer's window index k is an exact stream position and resume stays bit-exact.
An epoch has as many windows as with fixed windows; if its lengths would overrun the streams (rare:
the mean length is about 0.975 T) they are scaled down to fit.
"""

from __future__ import annotations

import numpy as np
import torch

from charrnn.batching import StreamBatcher

P_FULL = 0.95       # probability of a base length of T (else T / 2)
SD_PER_T = 5 / 70   # AWD-LSTM: sd 5 around bptt 70


def window_lengths(seed: int, epoch: int, n: int, seq_len: int, room: int) -> np.ndarray:
    """n window lengths for one epoch, summing to at most ``room`` tokens."""
    T = seq_len
    rng = np.random.default_rng([seed, epoch, 0x5EC])
    base = np.where(rng.random(n) < P_FULL, T, T / 2)
    lengths = np.rint(rng.normal(base, max(SD_PER_T * T, 0.5)))
    lengths = np.clip(lengths, max(1, T // 4), T + T // 5).astype(np.int64)
    if lengths.sum() > room:
        lengths = np.maximum(1, np.floor(lengths * (room / lengths.sum()))).astype(np.int64)
    return lengths


class VariableBatcher(StreamBatcher):
    """A StreamBatcher whose window k of an epoch has a drawn length (same streams, same count)."""

    def __init__(self, ids: np.ndarray, batch_size: int, seq_len: int, seed: int = 0, pin: bool = False):
        super().__init__(ids, batch_size, seq_len, seed, pin=pin)
        self.max_len = seq_len + seq_len // 5
        self._starts, self._lengths = None, None  # the current epoch's plan (set by epoch_streams)

    def plan(self, epoch: int) -> tuple[np.ndarray, np.ndarray]:
        """(start offsets, lengths) of the epoch's windows; every target lies inside the streams."""
        lengths = window_lengths(self.seed, epoch, self.windows_per_epoch, self.T, self.stream_len - 1)
        starts = np.concatenate(([0], np.cumsum(lengths)[:-1]))
        return starts, lengths

    def epoch_streams(self, epoch: int) -> int:
        self._starts, self._lengths = self.plan(epoch)
        return super().epoch_streams(epoch)

    def window(self, offset: int, k: int) -> tuple[torch.Tensor, torch.Tensor]:
        s, n = int(self._starts[k]), int(self._lengths[k])
        idx = self._rows + (offset + s + np.arange(n + 1, dtype=np.int64))
        block = torch.from_numpy(self.ids[idx].astype(np.int64))
        if self.pin:
            block = block.pin_memory()
        return block[:, :-1], block[:, 1:]
