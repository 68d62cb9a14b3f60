"""Tokenizers: Unicode characters, UTF-8 bytes, or sentencepiece subwords (bpe/unigram).

All share one small interface:

    ids = tok.encode(text)          # numpy int array, vectorized (no per-character Python loop)
    text = tok.decode(ids)          # str; decode(encode(text)) == text
    tok.vocab_size
    state = tok.state()             # plain dict of tensors/str/int, stored inside a checkpoint
    tok = tokenizer_from_state(state)
    dec = tok.stream_decoder()      # dec.feed(id) -> text that is complete so far; dec.flush()
"""

from __future__ import annotations

import codecs
import io
import os
import re
import threading
import time

import numpy as np
import torch

from charrnn.data.text import codepoints
from charrnn.errors import CharrnnError
from charrnn.system.progress import progress_bar, stderr_is_terminal

TOKENIZERS = ("char", "byte", "bpe", "unigram")
_META = "\u2581"  # sentencepiece's space symbol


def describe_chars(chars) -> str:
    shown = ", ".join(repr(c) for c in list(chars)[:8])
    more = len(chars) - 8
    return shown + (f" and {more} more" if more > 0 else "")


class CharTokenizer:
    """Unicode code points; the vocabulary is the sorted set of characters in the training text."""

    kind = "char"

    def __init__(self, codepoints: np.ndarray):
        self.codepoints = np.asarray(codepoints, dtype=np.int64)
        self._lut = None
        if self.codepoints.ndim != 1 or len(self.codepoints) == 0 or np.any(np.diff(self.codepoints) <= 0):
            raise CharrnnError("checkpoint's character vocabulary is malformed; retrain the model")

    @classmethod
    def fit(cls, text: str) -> "CharTokenizer":
        return cls(np.flatnonzero(np.bincount(codepoints(text), minlength=1)))

    @property
    def vocab_size(self) -> int:
        return len(self.codepoints)

    def encode(self, text: str, skip_unknown: bool = False, hint: str = "") -> np.ndarray:
        cps = codepoints(text)
        if self._lut is None:  # code point -> id, -1 for unknown: one O(n) gather per text
            self._lut = np.full(int(self.codepoints[-1]) + 2, -1, dtype=np.int32)
            self._lut[self.codepoints] = np.arange(len(self.codepoints), dtype=np.int32)
        ids = np.take(self._lut, cps, mode="clip")  # beyond the table: its last entry, -1
        if len(ids) and ids.min() < 0:
            unknown = ids < 0
            if not skip_unknown:
                chars = [chr(c) for c in np.unique(cps[unknown])]
                raise CharrnnError(
                    f"text contains {len(chars)} character(s) the model never saw: "
                    f"{describe_chars(chars)}" + (f" ({hint})" if hint else "")
                )
            ids = ids[~unknown]
        return ids

    def unknown_chars(self, text: str) -> list[str]:
        """The distinct characters of text outside the vocabulary, in code point order."""
        present = np.flatnonzero(np.bincount(codepoints(text), minlength=1))
        return [chr(c) for c in present[~np.isin(present, self.codepoints)]]

    def with_chars(self, chars) -> "CharTokenizer":
        """This vocabulary plus chars (still sorted: ids of known characters may move up)."""
        return CharTokenizer(np.union1d(self.codepoints, [ord(c) for c in chars]))

    def decode(self, ids) -> str:
        cps = self.codepoints[np.asarray(ids, dtype=np.int64)]
        return cps.astype("<u4").tobytes().decode("utf-32-le")

    def state(self) -> dict:
        return {"kind": self.kind, "codepoints": torch.from_numpy(self.codepoints.copy())}

    def stream_decoder(self):
        return _CharStream(self)


class ByteTokenizer:
    """UTF-8 bytes: a fixed vocabulary of 256, nothing is ever unknown (the enwik8 standard)."""

    kind = "byte"
    vocab_size = 256

    @classmethod
    def fit(cls, text: str) -> "ByteTokenizer":
        return cls()

    def encode(self, text, skip_unknown: bool = False, hint: str = "") -> np.ndarray:
        data = text if isinstance(text, (bytes, bytearray)) else text.encode("utf-8")
        return np.frombuffer(data, dtype=np.uint8).astype(np.int32)

    def decode(self, ids) -> str:
        return np.asarray(ids, dtype=np.uint8).tobytes().decode("utf-8", errors="replace")

    def state(self) -> dict:
        return {"kind": self.kind}

    def stream_decoder(self):
        return _ByteStream()


class SentencePieceTokenizer:
    """Sentencepiece bpe/unigram, lossless: byte fallback, identity normalisation, spaces kept."""

    def __init__(self, kind: str, model_proto: bytes):
        import sentencepiece as spm

        self.kind = kind
        self.model_proto = bytes(model_proto)
        self.sp = spm.SentencePieceProcessor()
        try:
            self.sp.LoadFromSerializedProto(self.model_proto)
        except Exception as e:  # sentencepiece raises RuntimeError/OSError on bad protos
            raise CharrnnError(f"checkpoint's sentencepiece model is corrupt ({e}); retrain the model") from None

    @classmethod
    def fit(cls, text: str, kind: str = "bpe", vocab_size: int = 512, log=None) -> "SentencePieceTokenizer":
        import sentencepiece as spm

        if vocab_size < 260:
            raise CharrnnError(f"--vocab-size {vocab_size} is too small for {kind}: byte fallback needs 256 "
                               "byte pieces plus room for merges; use 260 or more (e.g. 512)")
        # Keep the alphabet within half the vocabulary: rarer characters are cut out of the
        # tokenizer's training sentences, so at encode time they fall back to UTF-8 byte pieces.
        cps, counts = np.unique(codepoints(text), return_counts=True)
        room = max(1, (vocab_size - 260) // 2)
        splitter = "\n"
        if len(cps) > room:
            rare = cps[np.argsort(-counts, kind="stable")[room:]]
            splitter = "[\n" + "".join(re.escape(chr(c)) for c in rare) + "]"
        lines = [piece for ln in re.split(splitter, text) if ln for piece in _sentences(ln)]
        if not lines:
            raise CharrnnError(f"training text has no non-empty line to train the {kind} tokenizer on")
        buf = io.BytesIO()
        settings = dict(
            model_writer=buf, model_type=kind, vocab_size=vocab_size,
            character_coverage=0.9995, byte_fallback=True, normalization_rule_name="identity",
            add_dummy_prefix=False, remove_extra_whitespaces=False, allow_whitespace_only_pieces=True,
            split_digits=True, user_defined_symbols=["\n"], unk_id=0, bos_id=-1, eos_id=-1, pad_id=-1,
            max_sentence_length=1 << 16, input_sentence_size=2_000_000, shuffle_input_sentence=True,
            hard_vocab_limit=False, num_threads=os.cpu_count() or 1, minloglevel=2,
        )
        t0 = time.perf_counter()
        try:
            _with_elapsed(f"training {kind} tokenizer (vocab {vocab_size}) on {len(text):,} characters",
                          lambda: spm.SentencePieceTrainer.train(sentence_iterator=iter(lines), **settings),
                          show=log is not None)
        except RuntimeError as e:
            msg = str(e).strip().splitlines()[-1] if str(e).strip() else type(e).__name__
            raise CharrnnError(f"sentencepiece could not train a {kind} tokenizer: {msg} "
                               "(use a smaller --vocab-size or a larger corpus)") from None
        if log:
            log(f"trained the {kind} tokenizer (vocab {vocab_size}) on {len(text):,} characters "
                f"in {time.perf_counter() - t0:.1f}s")
        return cls(kind, buf.getvalue())

    @property
    def vocab_size(self) -> int:
        return self.sp.GetPieceSize()

    def encode(self, text: str, skip_unknown: bool = False, hint: str = "") -> np.ndarray:
        # Newline is its own piece, so encoding line by line (in parallel) equals encoding the whole.
        lines = text.split("\n")
        pieces = self.sp.encode(lines, num_threads=os.cpu_count() or 1)
        if _META in text:  # sentencepiece reads a literal U+2581 as a space: spell it in byte pieces
            meta = [self.sp.PieceToId(f"<0x{b:02X}>") for b in _META.encode("utf-8")]
            for i, line in enumerate(lines):
                if _META in line:
                    parts = self.sp.encode(line.split(_META))
                    pieces[i] = [t for j, part in enumerate(parts) for t in (meta if j else []) + part]
        nl = np.array([self.sp.PieceToId("\n")], dtype=np.int32)
        parts = []
        for i, p in enumerate(pieces):
            if i:
                parts.append(nl)
            parts.append(np.asarray(p, dtype=np.int32))
        return np.concatenate(parts) if parts else np.zeros(0, dtype=np.int32)

    def decode(self, ids) -> str:
        return self.sp.decode([int(i) for i in np.asarray(ids).reshape(-1)])

    def state(self) -> dict:
        return {"kind": self.kind, "model": torch.frombuffer(bytearray(self.model_proto), dtype=torch.uint8).clone()}

    def stream_decoder(self):
        return _PieceStream(self)


class _CharStream:
    def __init__(self, tok):
        self.tok = tok

    def feed(self, i: int) -> str:
        return chr(int(self.tok.codepoints[i]))

    def flush(self) -> str:
        return ""


class _ByteStream:
    """Holds back a partial UTF-8 sequence until its last byte arrives."""

    def __init__(self):
        self.dec = codecs.getincrementaldecoder("utf-8")(errors="replace")

    def feed(self, i: int) -> str:
        return self.dec.decode(bytes([i]))

    def flush(self) -> str:
        return self.dec.decode(b"", final=True)


class _PieceStream:
    """Decodes piece by piece through an incremental UTF-8 decoder, so byte-fallback pieces are
    held back until they complete a character."""

    def __init__(self, tok):
        self.sp = tok.sp
        self.dec = codecs.getincrementaldecoder("utf-8")(errors="replace")

    def feed(self, i: int) -> str:
        i = int(i)
        if self.sp.IsByte(i):
            data = bytes([int(self.sp.IdToPiece(i)[3:5], 16)])
        else:
            data = self.sp.decode([i]).encode("utf-8")
        return self.dec.decode(data)

    def flush(self) -> str:
        return self.dec.decode(b"", final=True)


def _with_elapsed(desc: str, fn, show: bool = True):
    """Run a long blocking call with a ticking elapsed-time line on a terminal (stderr)."""
    bar = progress_bar(desc=desc, bar_format="{desc}: {elapsed}", disable=not (show and stderr_is_terminal()),
                       leave=False)
    done = threading.Event()
    ticker = threading.Thread(target=lambda: [bar.refresh() for _ in iter(lambda: done.wait(0.5), True)],
                              daemon=True)
    ticker.start()
    try:
        return fn()
    finally:
        done.set()
        ticker.join()
        bar.close()


SENTENCE_CHARS = 1 << 14  # sentencepiece skips a training sentence over max_sentence_length bytes (64 KiB)


def _sentences(line: str):
    """A line as sentencepiece's training sentences: whole if short, else (text8: one line of 100M
    characters) cut before a word's space every SENTENCE_CHARS characters or so (a loop over pieces)."""
    start = 0
    while len(line) - start > SENTENCE_CHARS:
        cut = line.rfind(" ", start + 1, start + SENTENCE_CHARS)
        cut = cut if cut > start else start + SENTENCE_CHARS
        yield line[start:cut]
        start = cut
    yield line[start:]


def adapt_vocab(tok, new_chars, unknown: str, log=None):
    """Fine-tuning a char model on text with characters it never saw (``new_chars``): "extend" adds them
    to the vocabulary, "skip" drops them from the text, "error" refuses naming them and both options.
    Returns (the tokenizer, whether to encode with skip_unknown). Other tokenizers never meet an unknown
    character."""
    new = sorted(new_chars)
    if tok.kind != "char" or not new:
        return tok, False
    say = f"{len(new)} character(s) the model never saw: {describe_chars(new)}"
    if unknown == "extend":
        if log:
            log(f"extending the vocabulary with {say}")
        return tok.with_chars(new), False
    if unknown == "skip":
        if log:
            log(f"dropping every occurrence of {say}")
        return tok, True
    raise CharrnnError(f"the text has {say}; pass --extend-vocab to add them to the model, or --skip-unknown "
                       "to drop them from the text")


def fit_tokenizer(kind: str, text: str, vocab_size: int = 512, log=None):
    if kind == "char":
        return CharTokenizer.fit(text)
    if kind == "byte":
        return ByteTokenizer()
    if kind in ("bpe", "unigram"):
        return SentencePieceTokenizer.fit(text, kind, vocab_size, log=log)
    raise CharrnnError(f"unknown tokenizer {kind!r}; choose one of {', '.join(TOKENIZERS)}")


def tokenizer_from_state(state: dict):
    kind = state.get("kind") if isinstance(state, dict) else None
    if kind == "char" and isinstance(state.get("codepoints"), torch.Tensor):
        return CharTokenizer(state["codepoints"].numpy())
    if kind == "byte":
        return ByteTokenizer()
    if kind in ("bpe", "unigram") and isinstance(state.get("model"), torch.Tensor):
        return SentencePieceTokenizer(kind, state["model"].numpy().tobytes())
    raise CharrnnError(f"checkpoint has an unknown or malformed tokenizer ({kind!r}); "
                       "it was not written by this version of charrnn")
