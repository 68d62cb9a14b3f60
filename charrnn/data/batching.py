"""Truncated-BPTT batching: parallel training streams read a window at a time, and the layout of
a split for one stateful evaluation pass."""

from __future__ import annotations

from dataclasses import dataclass

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

    An epoch's streams start at ``offset`` (``epoch_streams``): stream b is
    ``ids[offset + b L : offset + (b+1) L]``. Window k is ``x = stream[:, kT : kT+T]``,
    ``y = stream[:, kT+1 : kT+T+1]``, so each window continues where the previous one ended and
    the hidden state can be carried (TBPTT). Each epoch starts at a different offset (seeded), so
    window boundaries move. Only the window being read is copied out of ``ids``, which may be a
    memory map of a corpus larger than memory (data/store.py).
    """

    def __init__(self, ids: np.ndarray, batch_size: int, seq_len: int, seed: int = 0, pin: bool = False):
        check_fits(len(ids), batch_size, seq_len)
        self.ids, self.pin = ids, pin  # pin: page-locked windows for asynchronous copies to a GPU
        self.B, self.T, self.seed = batch_size, seq_len, seed
        self.stream_len = (len(ids) - seq_len) // batch_size
        self.windows_per_epoch = (self.stream_len - 1) // seq_len
        self._rows = np.arange(batch_size, dtype=np.int64)[:, None] * self.stream_len

    def epoch_streams(self, epoch: int) -> int:
        """Where this epoch's first stream starts in the ids (0 for epoch 0, then seeded in [0, T))."""
        return int(np.random.default_rng([self.seed, epoch]).integers(0, self.T)) if epoch else 0

    def window(self, offset: int, k: int) -> tuple[torch.Tensor, torch.Tensor]:
        idx = self._rows + (offset + k * self.T + np.arange(self.T + 1, dtype=np.int64))
        block = torch.from_numpy(self.ids[idx].astype(np.int64))
        if self.pin:
            block = block.pin_memory()
        return block[:, :-1], block[:, 1:]

    def fresh(self, offset: int, k: int) -> bool:
        """Whether the hidden state starts at zero at window k: only at an epoch's start (see records.py)."""
        return False


def eval_stream_count(n_targets: int, limit: int | None = None, max_streams: int = 32, min_len: int = 4096) -> int:
    """How many streams ``eval_plan`` cuts ``n_targets`` targets into: one per ``min_len`` tokens
    (at least one, at most ``max_streams``); with ``limit`` below the text, one per 512 of the limit.
    Pure arithmetic, so memory and duration estimates use the same rule without torch."""
    if limit and n_targets > limit:
        return int(max(1, min(max_streams, limit // 512)))  # blocks of 512 tokens or more
    return int(max(1, min(max_streams, n_targets // min_len)))


@dataclass
class EvalPlan:
    """Where each evaluation stream lies in the ids (see ``eval_plan``), read a window at a time.

    Row i reads inputs ``ids[starts[i] + a]`` and targets ``ids[starts[i] + a + 1]`` for positions a in
    [0, length) below ``end`` (the targets' count: later positions are padding, target -100). ``ctx``
    (S, W): each row's warm-up context, -1 for a row without one.
    """
    starts: np.ndarray   # (S,) int64
    length: int
    end: int
    ctx: torch.Tensor

    @property
    def streams(self) -> int:
        return len(self.starts)

    def rows(self, pick) -> "EvalPlan":
        """The plan of some rows: ``pick`` slices an array by its first axis (distributed.py's ``rows``)."""
        return EvalPlan(pick(self.starts), self.length, self.end, pick(self.ctx))

    def targets(self) -> int:
        """Targets scored over all rows (padding excluded)."""
        return int(np.clip(self.end - self.starts, 0, self.length).sum())

    def valid(self, a: int, b: int) -> np.ndarray:
        """(S,) how many of the positions [a, b) of each row are real targets."""
        return np.clip(np.minimum(self.starts + b, np.minimum(self.starts + self.length, self.end))
                       - (self.starts + a), 0, b - a)

    def window(self, ids, a: int, b: int) -> tuple[torch.Tensor, torch.Tensor]:
        """Inputs and targets of positions [a, b) of every row, (S, b - a) int64: only this window is
        read from ``ids`` (a memory map or an evaluation's id file, never copied whole); input 0 and
        target -100 where a row has no more targets."""
        x = np.zeros((self.streams, b - a), np.int64)
        y = np.full((self.streams, b - a), -100, np.int64)
        for i, (st, k) in enumerate(zip(self.starts.tolist(), self.valid(a, b).tolist())):
            if k:
                block = np.asarray(ids[st + a:st + a + k + 1], np.int64)
                x[i, :k], y[i, :k] = block[:-1], block[1:]
        return torch.from_numpy(x), torch.from_numpy(y)


def eval_plan(ids, max_streams: int = 32, min_len: int = 4096, limit: int | None = None,
              warm: int = 0) -> EvalPlan:
    """Lay out a split for one stateful pass that scores every target once, without copying it:
    S contiguous streams of inputs ``ids[:-1]`` and targets ``ids[1:]`` (S grows with the text, at
    least ``min_len`` tokens each); the last stream is padded with target -100 (ignored).
    ``limit`` (--eval-tokens): a longer text is scored only in S equal blocks spread evenly over it,
    ``limit`` targets in all, always the same ones (so periodic evaluations stay comparable).
    ``ctx`` holds the W tokens just before each stream's first input, read (unscored) to bring the
    state to where a single pass over the whole text would have it. The stream that starts the text
    has no context: its row is -1 and its state starts at zero, as a single pass's does.
    W = min(warm, the earliest later cut), so every other stream has its full W tokens (W = 0 for a
    single stream).
    """
    n = len(ids) - 1
    if n < 1:
        raise CharrnnError("the text to evaluate is too short: it needs at least two tokens")
    s = eval_stream_count(n, limit, max_streams, min_len)
    if limit and n > limit:
        length = limit // s
        starts = [(n - length) * i // max(s - 1, 1) for i in range(s)]
    else:
        length = -(-n // s)
        starts = [i * length for i in range(s)]
    cuts = [a for a in starts if a > 0]
    w = int(min(warm, *cuts)) if cuts else 0
    ctx = np.full((s, w), -1, np.int64)
    for i, a in enumerate(starts):
        if a > 0 and w:
            ctx[i] = ids[a - w:a]
    return EvalPlan(np.asarray(starts, np.int64), int(length), n, torch.from_numpy(ctx))


def eval_layout(ids, max_streams: int = 32, min_len: int = 4096, limit: int | None = None, warm: int = 0):
    """``eval_plan``'s layout as whole tensors: (x, y), both (S, L), and ``ctx`` (S, W). It holds the
    text as int64 (16 bytes a token): for tests and small texts; evaluation reads ``eval_plan`` a window
    at a time."""
    plan = eval_plan(ids, max_streams, min_len, limit, warm)
    x, y = plan.window(ids, 0, plan.length)
    return x, y, plan.ctx


# ----------------------------------------------------------------------------- variable-length windows
# Variable-length TBPTT windows (``--variable-len``, randomized truncation as in AWD-LSTM and the d2l
# chapter on BPTT): each step reads a window whose length is drawn around ``--seq-len``.
# 
# The lengths of an epoch are a pure function of (seed, epoch): with probability 0.95 the base is T,
# else T/2; the length is a normal draw around it (sd 5 T / 70, AWD's 5 at T = 70), clamped to
# [T/4, 1.2 T]. Window k of an epoch starts at the token offset ``starts[k]`` (the sum of the lengths
# before it), so the trainer's window index k is an exact stream position and resume stays bit-exact.
# An epoch has as many windows as with fixed windows; if its lengths would overrun the streams (rare:
# the mean length is about 0.975 T) they are scaled down to fit.
# 

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
