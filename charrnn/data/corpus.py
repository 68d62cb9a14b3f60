"""Corpus reading, train/val/test splits and the encoded-corpus cache (batching.py reads windows from them)."""

from __future__ import annotations

import glob
import hashlib
import os
import shutil
import sysconfig
import tempfile
from dataclasses import dataclass

import numpy as np
import torch

from charrnn.data.encode import encode_corpus, split_sizes
from charrnn.data.encode_records import encode_byte_records, encode_records_corpus
from charrnn.data.store import SPLITS, StoreWriter, prune, read_entry, remove
from charrnn.data.text import Source, decode_text, read_bytes
from charrnn.data.tokenizers import tokenizer_from_state
from charrnn.errors import CharrnnError

BUILTIN_CORPORA = ("pystdlib",)
CACHE_VERSION = 2  # bump whenever splitting or encoding changes: old caches are then ignored


# ----------------------------------------------------------------------------- reading text

def is_builtin(path: str) -> bool:
    """A built-in corpus name (a file of that name wins)."""
    return path in BUILTIN_CORPORA and not os.path.exists(path)


def pystdlib_files() -> list[str]:
    """The top-level modules of this Python's standard library, in sorted order."""
    return sorted(glob.glob(os.path.join(sysconfig.get_paths()["stdlib"], "*.py")))


def read_pystdlib() -> str:
    parts = []
    for path in pystdlib_files():
        try:
            with open(path, encoding="utf-8") as f:
                parts.append(f.read())
        except (OSError, UnicodeDecodeError):
            continue
    if not parts:
        raise CharrnnError("the built-in corpus 'pystdlib' found no Python sources in "
                           f"{sysconfig.get_paths()['stdlib']}; pass a text file instead")
    return "".join(parts)


def read_text(path: str, what: str = "file") -> str:
    if is_builtin(path):
        return read_pystdlib()
    return decode_text(read_bytes(path, what), path, what)


# ----------------------------------------------------------------------------- splits and cache

@dataclass
class Split:
    ids: np.ndarray       # token ids: memory-mapped uint8/uint16/int32 (data/store.py), or in memory
    n_chars: int          # Unicode characters of the text these ids encode
    n_bytes: int          # UTF-8 bytes of that text
    starts: np.ndarray | None = None  # --records: where each record starts in ids (records.py)


@dataclass
class Corpus:
    tokenizer: object
    train: Split
    val: Split
    test: Split
    source: str
    digest: str
    records: str | None = None  # the record separator (--records), or None for one continuous text


def token_counts(ids: np.ndarray, vocab_size: int) -> np.ndarray:
    """How often each id occurs, read in slices (np.bincount copies its input to int64: a slice at a time)."""
    counts = np.zeros(vocab_size, np.int64)
    for i in range(0, len(ids), 1 << 22):
        part = np.bincount(ids[i:i + (1 << 22)], minlength=vocab_size)
        counts[:len(part)] += part[:vocab_size]
    return counts


def split_text(text, val_frac: float, test_frac: float):
    """Contiguous split by character fractions: train first, then val, then test (encode.split_sizes)."""
    n_train, n_val, _ = split_sizes(len(text), val_frac, test_frac)
    return text[:n_train], text[n_train:n_train + n_val], text[n_train + n_val:]


def load_corpus(path: str, tokenizer: str = "char", vocab_size: int = 512, val_frac: float = 0.05,
                test_frac: float = 0.05, val_file: str | None = None, cache_dir: str | None = None,
                log=None, tok_state: dict | None = None, expect_digest: str | None = None,
                check=None, records: str | None = None, unknown: str | None = None,
                cache_limit: float | None = None) -> Corpus:
    """Read, split and encode a corpus, reusing the cached encoding when nothing changed.

    The encoded splits live in the cache (data/store.py) and come back memory-mapped: a corpus
    larger than memory trains, and nothing holds it whole (data/encode.py encodes it in chunks).
    The tokenizer is fitted on the training split only (never on val/test; characters: the whole
    corpus, as char-rnn), unless ``tok_state`` gives one (on resume, or the model being fine-tuned:
    then ``unknown`` says what to do with characters it never saw, see adapt_vocab). ``records``: the
    separator of a corpus of records (records.py): splits fall between records and each split knows
    where its records start. ``cache_limit``: bytes the cache may hold (least recently used evicted).
    """
    src = Source(path, "corpus", data=read_pystdlib().encode("utf-8") if is_builtin(path) else None)
    val_src = Source(val_file, "validation file") if val_file else None
    kind = tok_state.get("kind") if tok_state else tokenizer
    key = (CACHE_VERSION, tokenizer, vocab_size, val_frac, test_frac, bool(val_file))
    key += (("records", records),) if records is not None else ()  # older runs keep their digest
    key += (("unknown", unknown),) if unknown == "skip" else ()
    raw_info = src.scan_bytes() if kind == "byte" else None
    if raw_info and raw_info["utf8"] and not raw_info["ascii"] and records is None:
        key += (("split", "bytes"),)  # a byte model of UTF-8 text splits by bytes (older versions: by characters)
    h = hashlib.blake2b(digest_size=16)
    src.update_hash(h)
    h.update(b"\x00")
    if val_src:
        val_src.update_hash(h)
    h.update(repr(key).encode())
    digest = h.hexdigest()
    if expect_digest is not None and digest != expect_digest:
        raise CharrnnError(f"the corpus '{path}' differs from the one this run was trained on; "
                           "resume with the same corpus file, or start a new run")
    entry = read_entry(cache_dir, digest) if cache_dir else None
    if entry is not None and (tok_state is None or _same_state(entry["tokenizer"], tok_state)):
        if log:
            log(f"using cached encoding {os.path.join(cache_dir, digest)}")
        return _from_entry(entry, path, digest, records)
    # A given tokenizer (resume, fine-tuning) is not part of the digest: such encodings stay out of the cache.
    store = cache_dir if cache_dir and tok_state is None else tempfile.mkdtemp(prefix="charrnn-")
    try:
        if records is not None:
            corpus = _encode_records_streaming(src, val_src, kind, vocab_size, val_frac, test_frac, store, digest,
                                               tok_state, path, log, records, unknown, raw_info)
        else:
            corpus = _encode_streaming(src, val_src, kind, vocab_size, val_frac, test_frac, store, digest,
                                       tok_state, path, log, raw_info, unknown)
        if len(corpus.val.ids) < 2:
            raise CharrnnError("the validation split is shorter than two tokens; raise --val-frac or give --val-file")
        if check is not None:
            check(corpus)  # e.g. too short for the batch shape: fail before caching anything
    except BaseException:
        if store == cache_dir:
            remove(os.path.join(cache_dir, digest))  # an entry that failed its check is not a cache
        raise
    finally:
        if store != cache_dir:
            shutil.rmtree(store, ignore_errors=True)  # the memory maps stay readable (POSIX)
    if cache_dir and store == cache_dir and cache_limit is not None:
        prune(cache_dir, cache_limit, keep=digest, log=log)
    return corpus


def _from_entry(entry: dict, path: str, digest: str, records: str | None) -> Corpus:
    tok = tokenizer_from_state(entry["tokenizer"])
    splits = [Split(entry["ids"][s], int(entry[s + "_chars"]), int(entry[s + "_bytes"]),
                    entry[s + "_starts"].numpy() if s + "_starts" in entry else None) for s in SPLITS]
    return Corpus(tok, *splits, source=path, digest=digest, records=records)


def _encode_streaming(src, val_src, kind, vocab_size, val_frac, test_frac, store, digest, tok_state, path,
                      log, raw_info, unknown=None) -> Corpus:
    tok = tokenizer_from_state(tok_state) if tok_state else None
    if raw_info and log and not raw_info["utf8"]:
        log(f"note: '{path}' is not valid UTF-8; training on its raw bytes")
    tok, stats, writer = encode_corpus(src, val_src, kind, vocab_size, val_frac, test_frac,
                                       lambda v: StoreWriter(store, digest, v), tok=tok, log=log,
                                       utf8=raw_info["utf8"] if raw_info else None, unknown=unknown)
    meta = {"tokenizer": tok.state(), "source": path}
    for s in SPLITS:
        meta[s + "_chars"], meta[s + "_bytes"] = stats[s].chars, stats[s].bytes
    writer.finish(meta)
    entry = read_entry(store, digest)
    if entry is None:
        raise CharrnnError(f"cannot read back the encoded corpus in '{store}'; check the disk (space, permissions)")
    return _from_entry(entry, path, digest, None)


def _encode_records_streaming(src, val_src, kind, vocab_size, val_frac, test_frac, store, digest, tok_state,
                              path, log, records, unknown, raw_info=None) -> Corpus:
    """Records: split on record boundaries and encoded chunk by chunk (encode.py); a byte model of a text
    that is not UTF-8 splits by bytes and needs no decoding (any file trains)."""
    tok = tokenizer_from_state(tok_state) if tok_state else None
    writer_for = lambda v: StoreWriter(store, digest, v)  # noqa: E731
    if kind == "byte" and raw_info and not raw_info["utf8"]:
        if log:
            log(f"note: '{path}' is not valid UTF-8; training on its raw bytes")
        tok, stats, writer, starts = encode_byte_records(src, val_src, val_frac, test_frac, records, writer_for)
    else:
        tok, stats, writer, starts = encode_records_corpus(src, val_src, kind, vocab_size, val_frac, test_frac,
                                                           records, writer_for, tok=tok, log=log, unknown=unknown)
    meta = {"tokenizer": tok.state(), "source": path}
    for s in SPLITS:
        meta[s + "_chars"], meta[s + "_bytes"] = stats[s].chars, stats[s].bytes
        meta[s + "_starts"] = torch.from_numpy(starts[s].astype(np.int64))
    writer.finish(meta)
    entry = read_entry(store, digest)
    if entry is None:
        raise CharrnnError(f"cannot read back the encoded corpus in '{store}'; check the disk (space, permissions)")
    return _from_entry(entry, path, digest, records)


def _same_state(a: dict, b: dict) -> bool:
    if set(a) != set(b):
        return False
    for k in a:
        x, y = a[k], b[k]
        if isinstance(x, torch.Tensor) or isinstance(y, torch.Tensor):
            if not (isinstance(x, torch.Tensor) and isinstance(y, torch.Tensor) and x.shape == y.shape
                    and torch.equal(x, y)):
                return False
        elif x != y:
            return False
    return True
