"""Encoding a corpus chunk by chunk into the on-disk cache (data/store.py), never holding it whole.

Characters: a first streaming pass counts code points (the vocabulary, as fitting on the whole text
would find it) and the text's length, which fixes the split points; a second pass encodes each
chunk with a lookup table. Bytes: no vocabulary to fit, splits by byte fractions (the standard
enwik8 split). Sentencepiece: fitted on a bounded, evenly spread sample of the training split,
then each split is encoded in pieces cut after a newline (newline is its own piece, so this equals
encoding the whole split). Records (--records): encode_records.py. A text to evaluate
(``encode_for_eval``): the model's tokenizer, chunk by chunk, into an id file. The result equals
encoding the whole text at once (tests check it).
"""

from __future__ import annotations

import codecs

import numpy as np

from charrnn.data.store import SPLITS
from charrnn.data.text import codepoints, refuse_blank
from charrnn.data.tokenizers import ByteTokenizer, CharTokenizer, adapt_vocab, fit_tokenizer
from charrnn.errors import CharrnnError

SP_SAMPLE_CHARS = 32_000_000  # sentencepiece trains on at most this many characters of the training split
SP_BLOCKS = 64                # spread over this many blocks of the training split
PIECE_BUFFER = 1 << 20        # characters a sentencepiece split buffers while it looks for a safe cut
UNKNOWN_HINT = "use --tokenizer byte, which never meets an unknown character"


def split_sizes(n: int, val_frac: float, test_frac: float) -> tuple[int, int, int]:
    """Contiguous split sizes: train first (nanoGPT's ``int(n * 0.9)`` for val 0.1), then val, then test."""
    n_train = int(n * (1 - val_frac - test_frac) + 1e-6)  # + 1e-6: 1 - 0.05 - 0.05 is 0.8999...
    n_test = min(n - n_train, int(round(n * test_frac)))
    return n_train, n - n_train - n_test, n_test


def _regions(bounds, start: int, length: int):
    """(split, a, b): the parts of [start, start + length) that fall in each split, chunk-relative."""
    for s, (lo, hi) in zip(SPLITS, bounds):
        a, b = max(lo, start), min(hi, start + length)
        if a < b:
            yield s, a - start, b - start


def _bounds(sizes):
    n_train, n_val, n_test = sizes
    return [(0, n_train), (n_train, n_train + n_val), (n_train + n_val, n_train + n_val + n_test)]


def scan_text(sources) -> tuple[list, np.ndarray]:
    """Characters of each source and the code-point counts of all of them (one streaming pass); a
    source with nothing but whitespace is refused, as text.decode_text refuses a whole text."""
    counts, lengths = np.zeros(128, np.int64), []
    for src in sources:
        n, nonspace = 0, False
        for text in src.text_chunks():
            nonspace = nonspace or not text.isspace()
            cps = codepoints(text)
            if cps.size:
                top = int(cps.max()) + 1
                if top > len(counts):
                    counts = np.concatenate([counts, np.zeros(top - len(counts), np.int64)])
                for i in range(0, cps.size, 1 << 20):  # bincount copies to intp: keep that copy small
                    part = np.bincount(cps[i:i + (1 << 20)], minlength=len(counts))
                    counts[:len(part)] += part
            n += len(text)
        if not nonspace:
            refuse_blank(src.path, src.what)
        lengths.append(n)
    return lengths, counts


class _SplitStats:
    def __init__(self):
        self.chars = self.bytes = 0
        self.nonspace = False


def encode_corpus(src, val_src, kind: str, vocab_size: int, val_frac: float, test_frac: float,
                  writer_for, tok=None, log=None, utf8: bool | None = None, unknown: str | None = None):
    """Encode ``src`` (and ``val_src``, the --val-file, if given) into a new cache entry.

    ``writer_for(vocab_size)`` opens the StoreWriter once the vocabulary is known; ``tok`` is a given
    tokenizer (resume): then nothing is fitted; ``utf8``: whether a byte corpus is UTF-8, when already
    known (a leading byte-order mark is dropped only then); ``unknown``: fine-tuning's policy for
    characters a given char tokenizer never saw (tokenizers.adapt_vocab), applied after the counting
    pass. Returns (tokenizer, stats per split, entry path).
    """
    if kind == "byte":
        return _encode_bytes(src, val_src, val_frac, test_frac, writer_for, utf8)
    sources = [src] + ([val_src] if val_src else [])
    lengths, counts = scan_text(sources)
    sizes = split_sizes(lengths[0], 0.0 if val_src else val_frac, test_frac)
    skip = False
    if tok is None and kind == "char":
        tok = CharTokenizer(np.flatnonzero(counts))  # the characters of the whole corpus, as char-rnn
    elif unknown is not None and tok.kind == "char":
        present = np.flatnonzero(counts)
        tok, skip = adapt_vocab(tok, map(chr, present[~np.isin(present, tok.codepoints)]), unknown, log)
    elif tok is None:
        tok = fit_tokenizer(kind, _sample(src, sizes[0]), vocab_size, log=log)
    if log and lengths[0] >= 1 << 20:
        log(f"encoding {lengths[0]:,} characters with the {tok.kind} tokenizer ...")
    w = writer_for(tok.vocab_size)
    try:
        stats = {s: _SplitStats() for s in SPLITS}
        feed = (_char_feed_skipping if skip else _char_feed) if tok.kind == "char" else _piece_feed(tok)
        _encode_regions(src, _bounds(sizes), tok, w, stats, feed)
        if val_src:
            _encode_regions(val_src, [(0, 0), (0, lengths[1]), (0, 0)], tok, w, stats, feed)
        if getattr(feed, "flush", None):
            feed.flush(w, stats)
        _check_splits(stats, w)
        return tok, stats, w
    except BaseException:
        w.abort()
        raise


def encode_for_eval(src, tok, out, skip_unknown: bool = False, hint: str = "") -> tuple[int, int]:
    """Encode a text to evaluate (``charrnn eval --file``) chunk by chunk into ``out`` (store.IdFile),
    with the model's tokenizer: equal to encoding the whole text, which is never held. Returns the
    characters and bytes the ids stand for. A byte model reads the bytes as they are (a byte-order mark
    and invalid UTF-8 included, characters counted as a replacing decoder counts them); other models read
    the text with the checks of text.decode_text (byte-order mark dropped, whitespace only refused);
    ``skip_unknown``: characters a char model never saw are dropped and not counted, else refused, all
    of them named, with ``hint``."""
    if tok.kind == "byte":
        dec, chars = codecs.getincrementaldecoder("utf-8")("replace"), 0
        for _, chunk in src.byte_chunks():
            out.append(np.frombuffer(chunk, np.uint8))
            chars += len(dec.decode(chunk))
        return chars + len(dec.decode(b"", final=True)), src.size
    st, w = _SplitStats(), _OneSplit(out)
    if tok.kind != "char":
        feed = _piece_feed(tok)
    elif skip_unknown:
        feed = _char_feed_skipping
    else:
        def feed(tok, split, part, w, st):
            if len(ids := tok.encode(part, skip_unknown=True)) < len(part):  # name every unknown one, as a whole text does
                tok.encode("".join(c for part in src.text_chunks() for c in tok.unknown_chars(part)), hint=hint)
            w.append(split, ids)
    for text, n_bytes in src.text_chunks(with_bytes=True):
        st.chars, st.bytes = st.chars + len(text), st.bytes + n_bytes
        st.nonspace = st.nonspace or not text.isspace()
        feed(tok, "val", text, w, st)
    if getattr(feed, "flush", None):
        feed.flush(w, {"val": st})
    if not st.nonspace:
        refuse_blank(src.path, src.what)
    return st.chars, st.bytes


class _OneSplit:
    """The writer a feed appends to, for one text (encode_for_eval)."""

    def __init__(self, out):
        self.out = out

    def append(self, split, ids) -> None:
        self.out.append(ids)


def _encode_regions(src, bounds, tok, w, stats, feed) -> None:
    pos = 0
    for text, n_bytes in src.text_chunks(with_bytes=True):
        for s, a, b in _regions(bounds, pos, len(text)):
            part = text if b - a == len(text) else text[a:b]
            st = stats[s]
            st.chars += len(part)
            st.bytes += n_bytes if part is text else len(part.encode("utf-8"))
            st.nonspace = st.nonspace or not part.isspace()
            feed(tok, s, part, w, st)
        pos += len(text)


def _char_feed(tok, split, part, w, st) -> None:
    w.append(split, tok.encode(part, hint=UNKNOWN_HINT))


def _char_feed_skipping(tok, split, part, w, st) -> None:
    """--skip-unknown: characters the tokenizer never saw are dropped, and not counted."""
    ids = tok.encode(part, skip_unknown=True)
    if len(ids) < len(part):
        cps = codepoints(part)
        dropped = cps[~np.isin(cps, tok.codepoints)]
        st.chars -= len(dropped)
        st.bytes -= int(np.sum(1 + (dropped >= 0x80) + (dropped >= 0x800) + (dropped >= 0x10000)))
    w.append(split, ids)


class _piece_feed:
    """Sentencepiece: buffer each split's text and encode it up to a cut where encoding the pieces
    equals encoding the whole: the last newline, or, in a text without newlines (text8), the last space
    after a non-space once the buffer passes PIECE_BUFFER characters (pieces never cross into the
    whitespace that starts a word). The buffer stays bounded, so encoding is linear in the text. A
    buffer of PIECE_BUFFER characters with neither is cut where it ends (the one place where the pieces
    may differ from encoding the whole)."""

    def __init__(self, tok):
        self.tok, self.buf = tok, dict.fromkeys(SPLITS, "")

    def __call__(self, tok, split, part, w, st) -> None:
        text = self.buf[split] + part  # the buffer is at most PIECE_BUFFER characters: linear overall
        cut = text.rfind("\n") + 1
        if len(text) - cut > PIECE_BUFFER:
            cut = max(cut, _word_start(text, cut) or len(text))
        if cut:
            w.append(split, tok.encode(text[:cut]))
        self.buf[split] = text[cut:]

    def flush(self, w, stats) -> None:
        for s, text in self.buf.items():
            if text:
                w.append(s, self.tok.encode(text))
            self.buf[s] = ""


def _word_start(text: str, lo: int) -> int:
    """The last position after ``lo`` where a space follows a non-space (0: none)."""
    i = len(text)
    while True:
        i = text.rfind(" ", lo + 1, i)
        if i <= lo:
            return 0
        if not text[i - 1].isspace():
            return i


def _sample(src, n_train: int) -> str:
    """The training split, or an evenly spread sample of it (SP_BLOCKS blocks) when it is longer than
    SP_SAMPLE_CHARS: enough for a subword vocabulary, without holding a huge text."""
    if n_train <= SP_SAMPLE_CHARS:
        parts, pos = [], 0
        for text in src.text_chunks():
            parts.append(text[:max(0, n_train - pos)])
            pos += len(text)
            if pos >= n_train:
                break
        return "".join(parts)
    block = SP_SAMPLE_CHARS // SP_BLOCKS
    starts = [n_train * i // SP_BLOCKS for i in range(SP_BLOCKS)]
    bounds = [(a, a + block) for a in starts]
    parts, pos = [], 0
    for text in src.text_chunks():
        for a, b in bounds:
            lo, hi = max(a, pos), min(b, pos + len(text))
            if lo < hi:
                parts.append(text[lo - pos:hi - pos])
        pos += len(text)
        if pos >= n_train:
            break
    return "\n".join(parts)


def _encode_bytes(src, val_src, val_frac: float, test_frac: float, writer_for, utf8: bool | None):
    tok = ByteTokenizer()
    bom = src.read_prefix(3) == b"\xef\xbb\xbf"
    skip = 3 if bom and (utf8 if utf8 is not None else src.scan_bytes()["utf8"]) else 0  # dropped, as from text
    sizes = split_sizes(src.size - skip, 0.0 if val_src else val_frac, test_frac)
    w = writer_for(tok.vocab_size)
    try:
        stats = {s: _SplitStats() for s in SPLITS}
        _byte_regions(src, _bounds(sizes), w, stats, skip)
        if val_src:
            _byte_regions(val_src, [(0, 0), (0, val_src.size), (0, 0)], w, stats, 0)
        _check_splits(stats, w)
        return tok, stats, w
    except BaseException:
        w.abort()
        raise


def _byte_regions(src, bounds, w, stats, skip: int) -> None:
    pos = -skip
    for _, chunk in src.byte_chunks():
        arr = np.frombuffer(chunk, np.uint8)
        for s, a, b in _regions(bounds, pos, len(arr)):
            part = arr[a:b]
            st = stats[s]
            st.bytes += len(part)
            st.chars += int(np.count_nonzero((part & 0xC0) != 0x80))  # characters of UTF-8; lead bytes otherwise
            st.nonspace = True
            w.append(s, part)
        pos += len(arr)


def _check_splits(stats, w) -> None:
    if not stats["val"].chars:
        raise CharrnnError("the validation split is empty; raise --val-frac or give --val-file")
    if not stats["train"].nonspace:
        raise CharrnnError("the training split is empty; lower --val-frac/--test-frac")
    if w.counts["val"] < 2:
        raise CharrnnError("the validation split is shorter than two tokens; raise --val-frac or give --val-file")
