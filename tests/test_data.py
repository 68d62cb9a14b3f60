"""Data: TBPTT stream batching, evaluation streams, splits, the corpus cache, the built-in corpus."""

from __future__ import annotations

import os

import numpy as np
import pytest
import torch

import charrnn.data as data
from charrnn.data import (StreamBatcher, eval_streams, load_corpus, pystdlib_files, read_pystdlib,
                          split_text)
from charrnn.errors import CharrnnError
from charrnn.tokenizers import fit_tokenizer

# ----------------------------------------------------------------------------- StreamBatcher


def _random_ids(n: int, vocab: int = 50, seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, vocab, n).astype(np.int32)


def _find_offset(ids: np.ndarray, streams: torch.Tensor) -> int:
    """Where the flattened streams start in ids (unique for an arange corpus)."""
    return int(streams[0, 0])


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
        off = _find_offset(ids, streams)
        for b in range(B):
            start = off + b * sb.stream_len
            assert torch.equal(xs[b], torch.arange(start, start + sb.windows_per_epoch * T))


@pytest.mark.parametrize("B,T", [(1, 8), (4, 16), (7, 5)])
def test_streams_are_contiguous_slices(B, T):
    n = 1000 + 37 * B
    ids = np.arange(n, dtype=np.int64)
    sb = StreamBatcher(ids, B, T, seed=0)
    for epoch in range(5):
        streams = sb.epoch_streams(epoch)
        assert streams.shape == (B, sb.stream_len)
        off = _find_offset(ids, streams)
        assert 0 <= off < T
        flat = streams.reshape(-1)
        assert torch.equal(flat, torch.arange(off, off + B * sb.stream_len))
        assert off + B * sb.stream_len <= n
        # every window stays inside its stream
        last_x, last_y = sb.window(streams, sb.windows_per_epoch - 1)
        assert last_x.shape == last_y.shape == (B, T)


def test_streams_are_contiguous_slices_of_real_ids():
    ids = _random_ids(1500, seed=9)
    sb = StreamBatcher(ids, 4, 12, seed=2)
    for epoch in range(4):
        streams = sb.epoch_streams(epoch).numpy()
        found = [off for off in range(12) if np.array_equal(ids[off:off + streams.size], streams.reshape(-1))]
        assert found, "streams are not one contiguous run of the ids"


def test_epoch_offsets_vary_and_are_deterministic():
    ids = np.arange(20_000, dtype=np.int64)
    T = 32

    def offsets(seed):
        sb = StreamBatcher(ids, 4, T, seed=seed)
        return [_find_offset(ids, sb.epoch_streams(e)) for e in range(12)]

    a, b, c = offsets(7), offsets(7), offsets(8)
    assert a == b                      # deterministic for a seed
    assert len(set(a)) > 3             # window boundaries move between epochs
    assert a != c                      # and depend on the seed
    assert all(0 <= o < T for o in a + c)
    # asking for an epoch again (e.g. after resume) gives the same streams
    sb = StreamBatcher(ids, 4, T, seed=7)
    assert torch.equal(sb.epoch_streams(5), sb.epoch_streams(5))


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


# ----------------------------------------------------------------------------- eval_streams

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


# ----------------------------------------------------------------------------- split_text

@pytest.mark.parametrize("n,val,test", [(1000, 0.1, 0.2), (1000, 0.05, 0.05), (7, 0.3, 0.3), (100, 0.0, 0.1),
                                        (100, 0.1, 0.0), (12345, 0.01, 0.02)])
def test_split_text_fractions_and_order(n, val, test):
    text = "".join(chr(0x4E00 + i % 5000) for i in range(n))  # position-identifying characters
    tr, va, te = split_text(text, val, test)
    assert tr + va + te == text
    assert len(tr) == int(n * (1 - val - test) + 1e-6)
    assert len(te) == round(n * test)
    assert len(va) == n - len(tr) - len(te)
    assert abs(len(va) - n * val) < 1.5
    assert text.startswith(tr) and text.endswith(te)
    assert text[len(tr):len(tr) + len(va)] == va


def test_split_text_is_nanogpts_split():
    n = 1_115_394  # tinyshakespeare: nanoGPT trains on data[:int(n * 0.9)]
    tr, va, te = split_text("x" * n, 0.1, 0.0)
    assert (len(tr), len(va), len(te)) == (int(n * 0.9), n - int(n * 0.9), 0)


def test_split_text_train_first_then_val_then_test():
    text = "A" * 80 + "B" * 10 + "C" * 10
    assert split_text(text, 0.1, 0.1) == ("A" * 80, "B" * 10, "C" * 10)


# ----------------------------------------------------------------------------- load_corpus

_WORDS = ("the of and to in is was that for it with as his on be at by had not are but from or have an "
          "they which one you were her all she there would their we him been has when who will more no if "
          "out so said what up its about into than them can only other new some could time these two may "
          "then do first any my now such like our over man me even most made after also did many before "
          "must through back years where much your way well down should because each just those people").split()


def _english(n: int, seed: int) -> str:
    rng = np.random.default_rng(seed)
    out, size = [], 0
    while size < n:
        line = " ".join(rng.choice(_WORDS, 12)) + ".\n"
        out.append(line)
        size += len(line)
    return "".join(out)[:n]


@pytest.mark.parametrize("kind", ["char", "bpe"])
def test_load_corpus_writes_and_reuses_cache(tmp_path, monkeypatch, kind):
    corpus_file = tmp_path / "corpus.txt"
    text = _english(6000, seed=1) + "你好，世界！🎉\n"
    corpus_file.write_text(text, encoding="utf-8")
    cache_dir = tmp_path / "cache"
    first = load_corpus(str(corpus_file), kind, vocab_size=400, val_frac=0.1, test_frac=0.1,
                        cache_dir=str(cache_dir))
    cached = [p for p in os.listdir(cache_dir) if p.endswith(".pt")]
    assert len(cached) == 1
    assert cached[0] == f"{first.digest}.pt"

    calls = []

    def boom(*a, **k):
        calls.append(a)
        raise AssertionError("fit_tokenizer must not be called when the cache is valid")

    monkeypatch.setattr(data, "fit_tokenizer", boom)
    logs = []
    second = load_corpus(str(corpus_file), kind, vocab_size=400, val_frac=0.1, test_frac=0.1,
                         cache_dir=str(cache_dir), log=logs.append)
    assert not calls
    assert any("cache" in m for m in logs)
    assert second.digest == first.digest
    assert second.tokenizer.kind == first.tokenizer.kind == kind
    for split in ("train", "val", "test"):
        a, b = getattr(first, split), getattr(second, split)
        assert np.array_equal(a.ids, b.ids)
        assert a.ids.dtype == b.ids.dtype
        assert (a.n_chars, a.n_bytes) == (b.n_chars, b.n_bytes)
    assert np.array_equal(second.tokenizer.encode(text), first.tokenizer.encode(text))

    # the patch is effective: without a cache the tokenizer must be fitted (and here it explodes)
    with pytest.raises(AssertionError, match="must not be called"):
        load_corpus(str(corpus_file), kind, vocab_size=400, val_frac=0.1, test_frac=0.1,
                    cache_dir=str(tmp_path / "other_cache"))
    # and a changed corpus does not reuse the old cache entry
    corpus_file.write_text(text + "more\n", encoding="utf-8")
    with pytest.raises(AssertionError, match="must not be called"):
        load_corpus(str(corpus_file), kind, vocab_size=400, val_frac=0.1, test_frac=0.1,
                    cache_dir=str(cache_dir))


def test_load_corpus_splits_match_split_text(tmp_path):
    text = _english(5000, seed=4) + "床前明月光，疑是地上霜。\n"
    f = tmp_path / "c.txt"
    f.write_text(text, encoding="utf-8")
    corpus = load_corpus(str(f), "char", val_frac=0.1, test_frac=0.05)
    parts = split_text(text, 0.1, 0.05)
    for split, part in zip((corpus.train, corpus.val, corpus.test), parts):
        assert corpus.tokenizer.decode(split.ids) == part
        assert split.n_chars == len(part)
        assert split.n_bytes == len(part.encode("utf-8"))


def test_bpe_tokenizer_is_fitted_on_train_split_only(tmp_path):
    word = "quokkaplatypus"
    train = _english(8000, seed=2)
    assert word not in train and word[2:8] not in train
    val = (f"{word} " * 100)[:1000]
    test = _english(1000, seed=3)
    text = train + val + test
    assert split_text(text, 0.1, 0.1) == (train, val, test)
    f = tmp_path / "corpus.txt"
    f.write_text(text, encoding="utf-8")

    # Sensitivity check: a tokenizer fitted on the whole text learns the word as (nearly) one piece.
    leaky = fit_tokenizer("bpe", text, vocab_size=400)
    assert len(leaky.encode(word)) <= 3

    corpus = load_corpus(str(f), "bpe", vocab_size=400, val_frac=0.1, test_frac=0.1)
    tok = corpus.tokenizer
    assert tok.kind == "bpe"
    pieces = [tok.sp.IdToPiece(i) for i in range(tok.vocab_size)]
    assert not any("kkap" in p or "platy" in p or "quok" in p for p in pieces)
    assert len(tok.encode(word)) >= 8
    assert tok.decode(corpus.val.ids) == val
    # the val split is encoded with that tokenizer: far more tokens than the leaky one needs
    assert len(corpus.val.ids) > 3 * len(leaky.encode(val))


# ----------------------------------------------------------------------------- pystdlib

def test_pystdlib_files_sorted_and_nonempty():
    files = pystdlib_files()
    assert len(files) > 20
    assert files == sorted(files)
    assert all(p.endswith(".py") and os.path.isfile(p) for p in files)


def test_read_pystdlib_concatenates_in_sorted_order():
    text = read_pystdlib()
    assert text
    parts = []
    for path in sorted(pystdlib_files()):
        try:
            with open(path, encoding="utf-8") as fh:
                parts.append(fh.read())
        except (OSError, UnicodeDecodeError):
            continue
    assert len(parts) > 20
    assert text == "".join(parts)
    assert text.startswith(parts[0]) and text.endswith(parts[-1])

