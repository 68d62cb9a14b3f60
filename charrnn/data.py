"""Corpus reading, train/val/test splits and the encoded-corpus cache (batching.py reads windows from them)."""

from __future__ import annotations

import glob
import hashlib
import os
import stat
import sysconfig
from dataclasses import dataclass

import numpy as np
import torch

from charrnn.errors import CharrnnError
from charrnn.fileio import atomic_save, safe_load
from charrnn.records import encode_records, split_records
from charrnn.tokenizers import adapt_vocab, fit_tokenizer, tokenizer_from_state

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


def read_bytes(path: str, what: str = "file") -> bytes:
    """Read a regular, non-empty file, with a one-line error for every way that can fail."""
    if not os.path.lexists(path):
        raise CharrnnError(f"{what} '{path}' does not exist; check the path")
    try:
        st = os.stat(path)
    except OSError as e:
        raise CharrnnError(f"cannot access {what} '{path}': {e.strerror}") from None
    if stat.S_ISDIR(st.st_mode):
        raise CharrnnError(f"{what} '{path}' is a directory; give a text file")
    if not stat.S_ISREG(st.st_mode):
        raise CharrnnError(f"{what} '{path}' is not a regular file (a fifo, socket or device); give a text file")
    try:
        with open(path, "rb") as f:
            data = f.read()
    except OSError as e:
        raise CharrnnError(f"cannot read {what} '{path}': {e.strerror}; check its permissions") from None
    if not data:
        raise CharrnnError(f"{what} '{path}' is empty; give a file with text in it")
    return data


def decode_text(data: bytes, path: str, what: str = "file") -> str:
    nul = data.find(b"\x00", 0, 1 << 20)
    if nul >= 0:
        raise CharrnnError(f"{what} '{path}' looks binary (NUL byte at offset {nul}); give a UTF-8 text file")
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError as e:
        raise CharrnnError(f"{what} '{path}' is not valid UTF-8 (bad byte 0x{data[e.start]:02x} at offset "
                           f"{e.start}); convert it to UTF-8 (e.g. iconv -t utf-8) or use --tokenizer byte") from None
    if text.startswith("\ufeff"):
        text = text[1:]
    if not text.strip():
        raise CharrnnError(f"{what} '{path}' contains only whitespace; give a file with text in it")
    return text


def read_text(path: str, what: str = "file") -> str:
    if is_builtin(path):
        return read_pystdlib()
    return decode_text(read_bytes(path, what), path, what)


# ----------------------------------------------------------------------------- splits and cache

@dataclass
class Split:
    ids: np.ndarray       # token ids, int32
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


def split_text(text, val_frac: float, test_frac: float):
    """Contiguous split by character fractions: train first, then val, then test.

    The training part is ``int(n * (1 - val_frac - test_frac))`` long, which is nanoGPT's split
    (``int(n * 0.9)``) for ``--val-frac 0.1 --test-frac 0``.
    """
    n = len(text)
    n_train = int(n * (1 - val_frac - test_frac) + 1e-6)  # + 1e-6: 1 - 0.05 - 0.05 is 0.8999...
    n_test = min(n - n_train, int(round(n * test_frac)))
    n_val = n - n_train - n_test
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
                check=None, records: str | None = None, unknown: str | None = None) -> Corpus:
    """Read, split and encode a corpus, reusing the cached encoding when nothing changed.

    The tokenizer is fitted on the training split only (never on val/test), unless ``tok_state``
    gives one (on resume, or the model being fine-tuned: then ``unknown`` says what to do with
    characters it never saw, see adapt_vocab). ``records``: the separator of a corpus of records
    (records.py): splits fall between records and each split knows where its records start.
    """
    builtin = is_builtin(path)
    raw = read_pystdlib().encode("utf-8") if builtin else read_bytes(path, "corpus")
    raw_val = read_bytes(val_file, "validation file") if val_file else b""
    key = (CACHE_VERSION, tokenizer, vocab_size, val_frac, test_frac, bool(val_file))
    key += (("records", records),) if records is not None else ()  # older runs keep their digest
    key += (("unknown", unknown),) if unknown == "skip" else ()
    h = hashlib.blake2b(digest_size=16)
    for part in (raw, b"\x00", raw_val, repr(key).encode()):
        h.update(part)
    digest = h.hexdigest()
    if expect_digest is not None and digest != expect_digest:
        raise CharrnnError(f"the corpus '{path}' differs from the one this run was trained on; "
                           "resume with the same corpus file, or start a new run")
    cache_path = os.path.join(cache_dir, f"{digest}.pt") if cache_dir else None
    cached = _read_cache(cache_path) if cache_path and os.path.exists(cache_path) else None
    if cached is not None and (tok_state is None or _same_state(cached["tokenizer"], tok_state)):
        if log:
            log(f"using cached encoding {cache_path}")
        tok = tokenizer_from_state(cached["tokenizer"])
        splits = [Split(cached[k].numpy(), int(cached[k + "_chars"]), int(cached[k + "_bytes"]),
                        cached[k + "_starts"].numpy() if k + "_starts" in cached else None)
                  for k in ("train", "val", "test")]
        return Corpus(tok, *splits, source=path, digest=digest, records=records)

    kind = tok_state.get("kind") if tok_state else tokenizer
    if kind == "byte" and not _is_utf8(raw):
        # Bytes need no decoding: any file trains. Characters are counted with replacement chars.
        if log:
            log(f"note: '{path}' is not valid UTF-8; training on its raw bytes")
        tok = tokenizer_from_state({"kind": "byte"})
        sep = records.encode("utf-8") if records is not None else None
        parts = _cut(raw, 0.0 if val_file else val_frac, test_frac, sep, path)
        train, val, test = (_byte_split(tok, p, records) for p in (parts[0], raw_val or parts[1], parts[2]))
    else:
        text = decode_text(raw, path, "corpus")
        val_text = decode_text(raw_val, val_file, "validation file") if val_file else None
        tok = tokenizer_from_state(tok_state) if tok_state else None
        if tok is not None and unknown is not None:
            tok, text, val_text = adapt_vocab(tok, text, val_text, unknown, log)
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
            tok = fit_tokenizer(tokenizer, fit_on, vocab_size, log=log)
        if log and len(text) >= 1 << 20:  # a progress hint for slow work only
            log(f"encoding {len(text):,} characters with the {tok.kind} tokenizer ...")
        hint = "use --tokenizer byte, which never meets an unknown character"
        train, val, test = (make_split_checked(tok, t, hint, records) for t in (train_text, val_text, test_text))
    if len(val.ids) < 2:
        raise CharrnnError("the validation split is shorter than two tokens; raise --val-frac or give --val-file")
    corpus = Corpus(tok, train, val, test, source=path, digest=digest, records=records)
    if check is not None:
        check(corpus)  # e.g. too short for the batch shape: fail before caching anything
    if cache_path and tok_state is None:
        _write_cache(cache_path, corpus)
    return corpus


def _cut(text, val_frac: float, test_frac: float, records, path: str):
    if records is None:
        return split_text(text, val_frac, test_frac)
    return split_records(text, records, val_frac, test_frac, path)


def _byte_split(tok, p: bytes, records: str | None) -> Split:
    ids, starts = encode_records(tok, p, records) if records else (np.frombuffer(p, np.uint8).astype(np.int32), None)
    return Split(ids, len(p.decode("utf-8", "replace")), len(p), starts)


def _is_utf8(raw: bytes) -> bool:
    try:
        raw.decode("utf-8")
        return True
    except UnicodeDecodeError:
        return False


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


def _read_cache(path: str):
    try:
        data = safe_load(path)
        return data if isinstance(data, dict) and data.get("version") == CACHE_VERSION else None
    except Exception:
        return None


def _write_cache(path: str, corpus: Corpus) -> None:
    data = {"version": CACHE_VERSION, "tokenizer": corpus.tokenizer.state()}
    for k in ("train", "val", "test"):
        s = getattr(corpus, k)
        data[k] = torch.from_numpy(s.ids.astype(np.int32))
        data[k + "_chars"], data[k + "_bytes"] = s.n_chars, s.n_bytes
        if s.starts is not None:
            data[k + "_starts"] = torch.from_numpy(s.starts.astype(np.int64))
    try:
        os.makedirs(os.path.dirname(path), exist_ok=True)
        atomic_save(data, path)
    except (OSError, CharrnnError):
        pass  # a cache is an optimisation; never fail a run over it
