"""The encoded-corpus cache on disk: one directory per corpus digest holding each split's token ids
as a raw array of the smallest integer type that fits the vocabulary (uint8, uint16, else int32),
read back memory-mapped, and ``meta.pt`` (tokenizer, counts, record starts). Entries are written
in a temporary directory and renamed into place (atomic); ``charrnn cache`` lists and clears them,
and a size cap evicts the least recently used first.
"""

from __future__ import annotations

import os
import shutil
import time

import numpy as np

from charrnn.errors import CharrnnError
from charrnn.system.fileio import atomic_save, safe_load

STORE_VERSION = 3
SPLITS = ("train", "val", "test")
TMP_PREFIX = ".tmp-"


def id_dtype(vocab_size: int) -> np.dtype:
    """The smallest integer type that holds every id of a vocabulary."""
    return np.dtype(np.uint8 if vocab_size <= 1 << 8 else np.uint16 if vocab_size <= 1 << 16 else np.int32)


class StoreWriter:
    """Writes one cache entry: ``append(split, ids)`` in order, then ``finish(meta)``; ``abort`` on failure."""

    def __init__(self, cache_dir: str, digest: str, vocab_size: int):
        self.final = os.path.join(cache_dir, digest)
        self.dtype = id_dtype(vocab_size)
        os.makedirs(cache_dir, exist_ok=True)
        self.tmp = os.path.join(cache_dir, f"{TMP_PREFIX}{digest}-{os.getpid()}-{time.monotonic_ns()}")
        os.makedirs(self.tmp)
        self.files = {s: open(os.path.join(self.tmp, f"{s}.bin"), "wb") for s in SPLITS}
        self.counts = dict.fromkeys(SPLITS, 0)

    def append(self, split: str, ids: np.ndarray) -> None:
        if len(ids):
            self.files[split].write(memoryview(np.ascontiguousarray(ids, dtype=self.dtype)))
            self.counts[split] += len(ids)

    def finish(self, meta: dict) -> str:
        for f in self.files.values():
            f.close()
        meta = {**meta, "version": STORE_VERSION, "dtype": self.dtype.name, "lengths": dict(self.counts)}
        atomic_save(meta, os.path.join(self.tmp, "meta.pt"))
        try:
            os.rename(self.tmp, self.final)
        except OSError:  # another process wrote the same entry first: theirs is as good as ours
            shutil.rmtree(self.tmp, ignore_errors=True)
        return self.final

    def abort(self) -> None:
        for f in self.files.values():
            f.close()
        shutil.rmtree(self.tmp, ignore_errors=True)


class IdFile:
    """Token ids in an unnamed temporary file (an evaluation's text): ``append`` while encoding, then read
    back by slices (``ids[a:b]``, one ``pread`` each), never mapped or held whole, so a process's memory
    does not grow with the text. The file is unlinked when made: nothing is left behind, even on a crash."""

    def __init__(self, vocab_size: int, directory: str | None = None):
        import tempfile

        self.dtype = id_dtype(vocab_size)
        self._f = tempfile.TemporaryFile(prefix="charrnn-ids-", dir=directory)
        self._n = 0

    def append(self, ids: np.ndarray) -> None:
        if len(ids):
            self._f.write(memoryview(np.ascontiguousarray(ids, dtype=self.dtype)))
            self._n += len(ids)

    def __len__(self) -> int:
        return self._n

    def __getitem__(self, key):
        if isinstance(key, slice):
            a, b, step = key.indices(self._n)
            if step != 1:
                raise IndexError("IdFile reads contiguous slices only")
            return self.read(a, max(a, b))
        i = int(key) + (self._n if int(key) < 0 else 0)
        if not 0 <= i < self._n:
            raise IndexError(f"token {key} of {self._n}")
        return self.read(i, i + 1)[0]

    def read(self, a: int, b: int) -> np.ndarray:
        """ids[a:b] as a new array of the file's dtype."""
        if b <= a:
            return np.zeros(0, self.dtype)
        self._f.flush()
        out = np.empty(b - a, self.dtype)
        view, offset = memoryview(out).cast("B"), a * self.dtype.itemsize
        while len(view):
            got = os.preadv(self._f.fileno(), [view], offset)
            if not got:
                raise CharrnnError("the temporary file of token ids ended early; check the disk")
            view, offset = view[got:], offset + got
        return out

    def close(self) -> None:
        self._f.close()

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()


def read_entry(cache_dir: str, digest: str) -> dict | None:
    """A cache entry's meta with each split's ids memory-mapped (read-only), or None if absent/stale."""
    path = os.path.join(cache_dir, digest)
    try:
        meta = safe_load(os.path.join(path, "meta.pt"))
        if not isinstance(meta, dict) or meta.get("version") != STORE_VERSION:
            return None
        dtype = np.dtype(meta["dtype"])
        ids = {}
        for s in SPLITS:
            n = int(meta["lengths"][s])
            f = os.path.join(path, f"{s}.bin")
            if os.path.getsize(f) != n * dtype.itemsize:
                return None
            ids[s] = np.memmap(f, dtype=dtype, mode="r", shape=(n,)) if n else np.zeros(0, dtype)
    except Exception:
        return None
    touch(path)
    return {**meta, "ids": ids}


def touch(path: str) -> None:
    """Mark an entry as just used (eviction goes by last use)."""
    try:
        os.utime(path)
    except OSError:
        pass


def write_entry(cache_dir: str, digest: str, vocab_size: int, splits: dict, meta: dict) -> None:
    """Write in-memory splits ({name: ids}) as one entry; a cache never fails a run."""
    try:
        w = StoreWriter(cache_dir, digest, vocab_size)
    except OSError:
        return
    try:
        for s in SPLITS:
            w.append(s, splits[s])
        w.finish(meta)
    except (OSError, CharrnnError):
        w.abort()


# ----------------------------------------------------------------------------- charrnn cache

def _size(path: str) -> int:
    if os.path.isfile(path):
        return os.path.getsize(path)
    return sum(os.path.getsize(os.path.join(d, f)) for d, _, fs in os.walk(path) for f in fs)


def entries(cache_dir: str) -> list[dict]:
    """Every encoded corpus in the cache (including older formats), least recently used first."""
    out = []
    if not os.path.isdir(cache_dir):
        return out
    for name in os.listdir(cache_dir):
        path = os.path.join(cache_dir, name)
        is_entry = os.path.isdir(path) and not name.startswith(TMP_PREFIX)
        old = name.endswith(".pt") and os.path.isfile(path) and len(name) == 35  # format 2: <digest>.pt
        if not (is_entry or old):
            continue  # the budget probe's timings and other small files are not corpora
        info = {"name": name, "path": path, "bytes": _size(path), "used": os.path.getmtime(path),
                "format": "old" if old else "current"}
        if is_entry:
            try:
                meta = safe_load(os.path.join(path, "meta.pt"))
                info.update(source=meta.get("source"), tokenizer=(meta.get("tokenizer") or {}).get("kind"),
                            tokens=sum(int(v) for v in meta["lengths"].values()), dtype=meta.get("dtype"))
            except Exception:
                info["format"] = "broken"
        out.append(info)
    return sorted(out, key=lambda e: e["used"])


def remove(path: str) -> None:
    if os.path.isdir(path):
        shutil.rmtree(path, ignore_errors=True)
    else:
        try:
            os.remove(path)
        except OSError:
            pass


def clear(cache_dir: str) -> tuple[int, int]:
    """Remove every encoded corpus (and leftover temporary directories): (count, bytes) removed."""
    n = size = 0
    for e in entries(cache_dir):
        size += e["bytes"]
        remove(e["path"])
        n += 1
    if os.path.isdir(cache_dir):
        for name in os.listdir(cache_dir):
            if name.startswith(TMP_PREFIX):
                remove(os.path.join(cache_dir, name))
    return n, size


def prune(cache_dir: str, max_bytes: float, keep: str | None = None, log=None) -> int:
    """Evict the least recently used entries until the cache fits ``max_bytes``; ``keep`` (the
    entry in use) is never evicted. Returns the bytes freed."""
    es = entries(cache_dir)
    total, freed = sum(e["bytes"] for e in es), 0
    for e in es:
        if total <= max_bytes:
            break
        if e["name"] == keep:
            continue
        remove(e["path"])
        total, freed = total - e["bytes"], freed + e["bytes"]
        if log:
            log(f"cache: evicted {e['name']} ({e['bytes'] / 1e6:.1f} MB, least recently used) to stay under "
                f"{max_bytes / 1e9:g} GB")
    return freed
