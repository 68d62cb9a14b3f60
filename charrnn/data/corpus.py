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

from charrnn.data.encode import encode_corpus, encode_records_corpus, split_sizes
from charrnn.data.records import encode_records, split_records
from charrnn.data.store import SPLITS, StoreWriter, prune, read_entry, remove, write_entry
from charrnn.data.text import Source, decode_text, read_bytes
from charrnn.data.tokenizers import adapt_vocab, fit_tokenizer, tokenizer_from_state
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


def make_split(tok, text: str, records: str | None = None) -> Split:
    n_chars, n_bytes = len(text), len(text.encode("utf-8"))
    if records is not None:
        ids, starts = encode_records(tok, text, records)
        return Split(ids, n_chars, n_bytes, starts)
    return Split(tok.encode(text) if text else np.zeros(0, np.int32), n_chars, n_bytes)


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
        if records is not None and kind != "byte":
            corpus = _encode_records_streaming(src, val_src, kind, vocab_size, val_frac, test_frac, store, digest,
                                               tok_state, path, log, records, unknown)
        elif records is None:
            corpus = _encode_streaming(src, val_src, kind, vocab_size, val_frac, test_frac, store, digest,
                                       tok_state, path, log, raw_info, unknown)
        else:
            corpus = _encode_in_memory(src, val_src, kind, vocab_size, val_frac, test_frac, tok_state, path,
                                       records, unknown, log, raw_info)
            corpus.digest = digest
        if len(corpus.val.ids) < 2:
            raise CharrnnError("the validation split is shorter than two tokens; raise --val-frac or give --val-file")
        if check is not None:
            check(corpus)  # e.g. too short for the batch shape: fail before caching anything
        if records is not None and kind == "byte" and store == cache_dir:
            write_entry(cache_dir, digest, corpus.tokenizer.vocab_size,
                        {s: getattr(corpus, s).ids for s in SPLITS}, _meta(corpus))
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


def _meta(corpus: Corpus) -> dict:
    meta = {"tokenizer": corpus.tokenizer.state(), "source": corpus.source}
    for s in SPLITS:
        part = getattr(corpus, s)
        meta[s + "_chars"], meta[s + "_bytes"] = part.n_chars, part.n_bytes
        if part.starts is not None:
            meta[s + "_starts"] = torch.from_numpy(part.starts.astype(np.int64))
    return meta


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
                              path, log, records, unknown) -> Corpus:
    tok = tokenizer_from_state(tok_state) if tok_state else None
    tok, stats, writer, starts = encode_records_corpus(src, val_src, kind, vocab_size, val_frac, test_frac, records,
                                                       lambda v: StoreWriter(store, digest, v), tok=tok, log=log,
                                                       unknown=unknown)
    meta = {"tokenizer": tok.state(), "source": path}
    for s in SPLITS:
        meta[s + "_chars"], meta[s + "_bytes"] = stats[s].chars, stats[s].bytes
        meta[s + "_starts"] = torch.from_numpy(starts[s].astype(np.int64))
    writer.finish(meta)
    entry = read_entry(store, digest)
    if entry is None:
        raise CharrnnError(f"cannot read back the encoded corpus in '{store}'; check the disk (space, permissions)")
    return _from_entry(entry, path, digest, records)


def _encode_in_memory(src, val_src, kind, vocab_size, val_frac, test_frac, tok_state, path, records, unknown,
                      log, raw_info) -> Corpus:
    """Records of a byte model: the whole text in memory (they split by bytes, invalid UTF-8 included)."""
    raw = src.read_all()
    raw_val = val_src.read_all() if val_src else b""
    val_file = val_src.path if val_src else None
    if kind == "byte" and not raw_info["utf8"]:
        # Bytes need no decoding: any file trains. Characters are counted with replacement chars.
        if log:
            log(f"note: '{path}' is not valid UTF-8; training on its raw bytes")
        tok = tokenizer_from_state({"kind": "byte"})
        sep = records.encode("utf-8") if records is not None else None
        parts = _cut(raw, 0.0 if val_file else val_frac, test_frac, sep, path)
        train, val, test = (_byte_split(tok, p, records) for p in (parts[0], raw_val or parts[1], parts[2]))
        return Corpus(tok, train, val, test, source=path, digest="", records=records)
    text = decode_text(raw, path, "corpus")
    val_text = decode_text(raw_val, val_file, "validation file") if val_file else None
    tok = tokenizer_from_state(tok_state) if tok_state else None
    if tok is not None and unknown is not None:
        new = set(tok.unknown_chars(text)) | set(tok.unknown_chars(val_text or "")) if tok.kind == "char" else ()
        tok, skip = adapt_vocab(tok, new, unknown, log)
        if skip:
            text, val_text = (tok.decode(tok.encode(t, skip_unknown=True)) if t else t for t in (text, val_text))
    if val_file:
        train_text, _, test_text = _cut(text, 0.0, test_frac, records, path)
    else:
        train_text, val_text, test_text = _cut(text, val_frac, test_frac, records, path)
    if not train_text.strip():
        raise CharrnnError("the training split is empty; lower --val-frac/--test-frac")
    if not val_text:
        raise CharrnnError("the validation split is empty; raise --val-frac or give --val-file")
    if tok is None:
        # Characters come from the whole corpus (as in char-rnn); subword models see only train.
        fit_on = text + val_text if (kind == "char" and val_file) else text if kind == "char" else train_text
        tok = fit_tokenizer(kind, fit_on, vocab_size, log=log)
    hint = "use --tokenizer byte, which never meets an unknown character"
    train, val, test = (make_split_checked(tok, t, hint, records) for t in (train_text, val_text, test_text))
    return Corpus(tok, train, val, test, source=path, digest="", records=records)


def _cut(text, val_frac: float, test_frac: float, records, path: str):
    if records is None:
        return split_text(text, val_frac, test_frac)
    return split_records(text, records, val_frac, test_frac, path)


def _byte_split(tok, p: bytes, records: str | None) -> Split:
    ids, starts = encode_records(tok, p, records) if records else (np.frombuffer(p, np.uint8).astype(np.int32), None)
    return Split(ids, len(p.decode("utf-8", "replace")), len(p), starts)


def make_split_checked(tok, text: str, hint: str, records: str | None = None) -> Split:
    try:
        return make_split(tok, text, records)
    except CharrnnError as e:
        raise CharrnnError(f"{e}; {hint}") from None


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
