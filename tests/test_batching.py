"""Batching: TBPTT training streams and the evaluation-stream layout."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from charrnn.data.batching import StreamBatcher, eval_layout
from charrnn.errors import CharrnnError

# ----------------------------------------------------------------------------- StreamBatcher


def _random_ids(n: int, vocab: int = 50, seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, vocab, n).astype(np.int32)


def _streams(sb: StreamBatcher, offset: int) -> torch.Tensor:
    """The epoch's B streams as one (B, L) tensor of the ids."""
    n = sb.B * sb.stream_len
    return torch.from_numpy(np.asarray(sb.ids[offset:offset + n], np.int64)).view(sb.B, sb.stream_len)


@pytest.mark.parametrize("B,T", [(1, 8), (4, 16), (3, 7)])
def test_targets_are_inputs_shifted_by_one(B, T):
    ids = _random_ids(2000)
    sb = StreamBatcher(ids, B, T, seed=1)
    assert sb.windows_per_epoch >= 2
    for epoch in range(3):
        streams = sb.epoch_streams(epoch)
        for k in range(sb.windows_per_epoch):
            x, y = sb.window(streams, k)
            assert x.shape == y.shape == (B, T)
            assert x.dtype == y.dtype == torch.int64
            assert torch.equal(y[:, :-1], x[:, 1:])


def test_targets_are_the_next_token_in_the_corpus():
    ids = np.arange(5000, dtype=np.int64)  # each id is its own position
    sb = StreamBatcher(ids, 4, 16, seed=3)
    for epoch in range(3):
        streams = sb.epoch_streams(epoch)
        for k in range(sb.windows_per_epoch):
            x, y = sb.window(streams, k)
            assert torch.equal(y, x + 1)


@pytest.mark.parametrize("B,T", [(2, 8), (4, 16), (5, 3)])
def test_window_k_plus_1_continues_window_k(B, T):
    ids = _random_ids(3000, seed=2)
    sb = StreamBatcher(ids, B, T, seed=0)
    for epoch in range(3):
        streams = sb.epoch_streams(epoch)
        for k in range(sb.windows_per_epoch - 1):
            x0, y0 = sb.window(streams, k)
            x1, _ = sb.window(streams, k + 1)
            assert torch.equal(y0[:, -1], x1[:, 0])
            # and in the corpus itself: window k+1 starts T tokens after window k in every stream
            assert torch.equal(torch.cat([x0, x1], 1)[:, 1:T + 1], y0)


def test_windows_tile_each_stream_without_gaps():
    ids = np.arange(4000, dtype=np.int64)
    B, T = 3, 10
    sb = StreamBatcher(ids, B, T, seed=5)
    for epoch in range(4):
        streams = sb.epoch_streams(epoch)
        xs = torch.cat([sb.window(streams, k)[0] for k in range(sb.windows_per_epoch)], 1)
        off = streams
        for b in range(B):
            start = off + b * sb.stream_len
            assert torch.equal(xs[b], torch.arange(start, start + sb.windows_per_epoch * T))


@pytest.mark.parametrize("B,T", [(1, 8), (4, 16), (7, 5)])
def test_streams_are_contiguous_slices(B, T):
    n = 1000 + 37 * B
    ids = np.arange(n, dtype=np.int64)
    sb = StreamBatcher(ids, B, T, seed=0)
    for epoch in range(5):
        off = sb.epoch_streams(epoch)
        streams = _streams(sb, off)
        assert streams.shape == (B, sb.stream_len)
        assert 0 <= off < T
        flat = streams.reshape(-1)
        assert torch.equal(flat, torch.arange(off, off + B * sb.stream_len))
        assert off + B * sb.stream_len <= n
        # every window stays inside its stream
        last_x, last_y = sb.window(off, sb.windows_per_epoch - 1)
        assert last_x.shape == last_y.shape == (B, T)


def test_streams_are_contiguous_slices_of_real_ids():
    ids = _random_ids(1500, seed=9)
    sb = StreamBatcher(ids, 4, 12, seed=2)
    for epoch in range(4):
        streams = _streams(sb, sb.epoch_streams(epoch)).numpy()
        found = [off for off in range(12) if np.array_equal(ids[off:off + streams.size], streams.reshape(-1))]
        assert found, "streams are not one contiguous run of the ids"


def test_epoch_offsets_vary_and_are_deterministic():
    ids = np.arange(20_000, dtype=np.int64)
    T = 32

    def offsets(seed):
        sb = StreamBatcher(ids, 4, T, seed=seed)
        return [sb.epoch_streams(e) for e in range(12)]

    a, b, c = offsets(7), offsets(7), offsets(8)
    assert a == b                      # deterministic for a seed
    assert len(set(a)) > 3             # window boundaries move between epochs
    assert a != c                      # and depend on the seed
    assert all(0 <= o < T for o in a + c)
    # asking for an epoch again (e.g. after resume) gives the same streams
    sb = StreamBatcher(ids, 4, T, seed=7)
    assert sb.epoch_streams(5) == sb.epoch_streams(5)


@pytest.mark.parametrize("B,T", [(4, 16), (2, 100), (32, 64)])
def test_too_short_corpus_raises_with_needed_count(B, T):
    need = B * (T + 1) + T
    with pytest.raises(CharrnnError) as exc:
        StreamBatcher(np.zeros(need - 1, np.int32), B, T)
    msg = str(exc.value)
    assert f"{need:,}" in msg
    assert f"{need - 1:,}" in msg
    sb = StreamBatcher(np.zeros(need, np.int32), B, T)  # exactly enough works
    assert sb.windows_per_epoch >= 1
    for epoch in range(3):
        x, y = sb.window(sb.epoch_streams(epoch), sb.windows_per_epoch - 1)
        assert x.shape == y.shape == (B, T)


def test_windows_of_a_memory_map_equal_windows_of_the_array(tmp_path):
    """A uint16 memory map (the cache's storage) gives the same int64 windows as the in-memory ids."""
    ids = _random_ids(5000, vocab=3000, seed=4)
    mm = np.memmap(tmp_path / "ids.bin", dtype=np.uint16, mode="w+", shape=ids.shape)
    mm[:] = ids
    mm.flush()
    mm = np.memmap(tmp_path / "ids.bin", dtype=np.uint16, mode="r", shape=ids.shape)
    a, b = StreamBatcher(ids, 4, 16, seed=3), StreamBatcher(mm, 4, 16, seed=3)
    for epoch in range(3):
        oa, ob = a.epoch_streams(epoch), b.epoch_streams(epoch)
        for k in (0, 5, a.windows_per_epoch - 1):
            (xa, ya), (xb, yb) = a.window(oa, k), b.window(ob, k)
            assert xb.dtype == torch.int64 and torch.equal(xa, xb) and torch.equal(ya, yb)


# ----------------------------------------------------------------------------- eval_layout

def eval_streams(ids, **kw):
    """The layout's scored part (x, y), without the warm-up context."""
    return eval_layout(ids, **kw)[:2]


@pytest.mark.parametrize("n,max_streams,min_len", [
    (2, 32, 4096), (100, 32, 4096), (10_000, 32, 4096), (10_001, 4, 100), (997, 8, 10), (64, 64, 1),
])
def test_eval_streams_score_every_target_once(n, max_streams, min_len):
    ids = np.arange(n, dtype=np.int64) + 1000  # distinct values: positions are recoverable
    x, y = eval_streams(ids, max_streams=max_streams, min_len=min_len)
    assert x.shape == y.shape and x.ndim == 2
    assert x.shape[0] <= max_streams
    mask = y != -100
    targets = y[mask].numpy()
    assert int(mask.sum()) == n - 1
    assert sorted(targets.tolist()) == ids[1:].tolist()         # each target exactly once
    assert np.array_equal(x[mask].numpy(), targets - 1)         # input is the previous token
    assert np.array_equal(targets, ids[1:])                     # in order, stream after stream
    if n - 1 >= 2 * min_len and max_streams > 1:
        assert x.shape[0] > 1
    # padding only at the very end
    flat = mask.reshape(-1).numpy()
    assert flat[:n - 1].all() and not flat[n - 1:].any()


def test_eval_streams_rows_are_contiguous():
    ids = _random_ids(1234, seed=4).astype(np.int64)
    x, y = eval_streams(ids, max_streams=5, min_len=100)
    s, length = x.shape
    assert s == 5
    for r in range(s):
        lo = r * length
        hi = min(lo + length, len(ids) - 1)
        assert np.array_equal(x[r, :hi - lo].numpy(), ids[lo:hi])
        assert np.array_equal(y[r, :hi - lo].numpy(), ids[lo + 1:hi + 1])


def test_eval_streams_too_short():
    with pytest.raises(CharrnnError):
        eval_streams(np.array([3], np.int32))


@pytest.mark.parametrize("n,limit", [(100_000, 8192), (50_001, 4096), (20_000, 5000), (10_000, 1024)])
def test_eval_streams_limit_scores_fixed_blocks_spread_over_the_text(n, limit):
    ids = np.arange(n, dtype=np.int64)
    x, y = eval_streams(ids, limit=limit)
    assert torch.equal(y, x + 1)                       # targets follow their inputs
    assert (y >= 0).sum() <= limit and (y >= 0).sum() >= limit - x.shape[0]
    rows = x[:, 0].tolist()
    assert rows == sorted(rows) and rows[0] == 0       # blocks from the start ...
    assert int(y[-1, -1]) == n - 1                     # ... to the last target
    for r in x:                                        # each block is one contiguous run
        assert torch.equal(r, torch.arange(int(r[0]), int(r[0]) + x.shape[1]))
    x2, _ = eval_streams(ids, limit=limit)
    assert torch.equal(x, x2)                          # always the same tokens


def test_eval_streams_limit_at_or_above_the_text_scores_everything():
    ids = np.arange(5000, dtype=np.int64)
    for limit in (4999, 10_000, None, 0):
        x, y = eval_streams(ids, limit=limit)
        assert sorted(y[y >= 0].tolist()) == list(range(1, 5000))


@pytest.mark.parametrize("n,limit,warm", [(20_000, None, 256), (100_000, 8192, 256), (10_000, 1024, 5000),
                                           (5000, None, 256), (997, None, 10)])
def test_eval_layout_warms_each_stream_on_the_tokens_before_its_cut(n, limit, warm):
    ids = np.arange(n, dtype=np.int64) + 7
    kw = {"max_streams": 8, "min_len": 100} if n < 1000 else {}
    x, y, ctx = eval_layout(ids, limit=limit, warm=warm, **kw)
    assert torch.equal(x, eval_streams(ids, limit=limit, **kw)[0])    # the scored layout is eval_streams'
    w = ctx.shape[1]
    starts = (x[:, 0] - 7).tolist()                                  # where each stream's first input is
    cuts = [a for a in starts if a > 0]
    assert ctx.shape[0] == x.shape[0] and w == (min(warm, *cuts) if cuts else 0)
    assert starts[0] == 0 and (ctx[0] == -1).all()                   # the text's start: a fresh state
    for a, row in zip(starts[1:], ctx[1:]):                          # the others: the w tokens before the cut
        assert torch.equal(row, torch.arange(a - w, a) + 7)
