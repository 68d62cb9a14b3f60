"""corpus_store: entries round-trip memory-mapped in the smallest id type, writes are atomic, stale or
broken entries are misses, and the cache is listed, cleared and pruned least-recently-used first."""

from __future__ import annotations

import os
import time

import numpy as np
import pytest

from charrnn.data import store as cs
from charrnn.data.store import StoreWriter, id_dtype, read_entry, write_entry


@pytest.mark.parametrize("vocab,dtype", [(2, np.uint8), (256, np.uint8), (257, np.uint16), (65536, np.uint16),
                                         (65537, np.int32)])
def test_id_dtype_is_the_smallest_that_fits(vocab, dtype):
    assert id_dtype(vocab) == np.dtype(dtype)
    assert np.iinfo(id_dtype(vocab)).max >= vocab - 1


def _write(cache, digest, vocab=300, n=(50, 10, 5), seed=0, meta=None):
    rng = np.random.default_rng(seed)
    splits = {s: rng.integers(0, vocab, k) for s, k in zip(cs.SPLITS, n)}
    write_entry(str(cache), digest, vocab, splits, meta or {"tokenizer": {"kind": "char"}, "source": "x.txt"})
    return splits


def test_round_trip_memory_mapped(tmp_path):
    splits = _write(tmp_path, "abc", vocab=3000)
    e = read_entry(str(tmp_path), "abc")
    for s in cs.SPLITS:
        assert isinstance(e["ids"][s], np.memmap) and e["ids"][s].dtype == np.uint16
        assert np.array_equal(e["ids"][s], splits[s])
        assert not e["ids"][s].flags.writeable  # the cache cannot be changed through a run
    assert e["source"] == "x.txt" and e["lengths"] == {"train": 50, "val": 10, "test": 5}


def test_missing_stale_or_truncated_entries_are_misses(tmp_path):
    assert read_entry(str(tmp_path), "nope") is None
    _write(tmp_path, "old")
    meta = os.path.join(tmp_path, "old", "meta.pt")
    import torch

    m = torch.load(meta, weights_only=True)
    torch.save({**m, "version": cs.STORE_VERSION - 1}, meta)
    assert read_entry(str(tmp_path), "old") is None
    _write(tmp_path, "cut")
    with open(os.path.join(tmp_path, "cut", "train.bin"), "r+b") as f:
        f.truncate(7)
    assert read_entry(str(tmp_path), "cut") is None


def test_abort_leaves_nothing_and_finish_is_all_or_nothing(tmp_path):
    w = StoreWriter(str(tmp_path), "d1", 100)
    w.append("train", np.arange(10))
    w.abort()
    assert os.listdir(tmp_path) == []
    w = StoreWriter(str(tmp_path), "d2", 100)
    w.append("train", np.arange(10))
    assert [n for n in os.listdir(tmp_path) if not n.startswith(cs.TMP_PREFIX)] == []  # not visible yet
    w.finish({"tokenizer": {"kind": "byte"}})
    assert os.listdir(tmp_path) == ["d2"]


def _age(path, seconds_ago):
    t = time.time() - seconds_ago
    os.utime(path, (t, t))


def test_entries_clear_and_prune_least_recently_used_first(tmp_path):
    for i, d in enumerate(("a" * 32, "b" * 32, "c" * 32)):
        _write(tmp_path, d, n=(4000, 100, 100), seed=i)
        _age(tmp_path / d, 100 - 10 * i)  # a is the oldest
    (tmp_path / "budget-probe.json").write_text("{}")  # not a corpus
    es = cs.entries(str(tmp_path))
    assert [e["name"][0] for e in es] == ["a", "b", "c"]
    size = es[0]["bytes"]
    assert all(e["tokens"] == 4200 and e["tokenizer"] == "char" for e in es)
    read_entry(str(tmp_path), "a" * 32)  # using an entry makes it the most recent
    assert [e["name"][0] for e in cs.entries(str(tmp_path))] == ["b", "c", "a"]
    logs = []
    freed = cs.prune(str(tmp_path), 2 * size, keep="b" * 32, log=logs.append)  # b is in use: c goes
    assert freed == size and sorted(os.listdir(tmp_path)) == ["a" * 32, "b" * 32, "budget-probe.json"]
    assert len(logs) == 1 and "least recently used" in logs[0]
    assert cs.prune(str(tmp_path), 10 * size) == 0
    n, removed = cs.clear(str(tmp_path))
    assert (n, removed) == (2, 2 * size)
    assert os.listdir(tmp_path) == ["budget-probe.json"]
