"""Encoding a corpus of records (``--records SEP``) chunk by chunk into the store, never holding it whole.

The splits fall on the record boundaries nearest the fractions, found in a streaming pass
(records.record_starts, record_cuts); each split is then encoded a run of whole records at a time,
with where each record starts. Characters and sentencepiece read the text; a byte model reads UTF-8
text as text (its splits by characters, as before) and any other file as bytes. The result equals
splitting and encoding the whole text at once (tests/test_encode_stream.py).
"""

from __future__ import annotations

import codecs

import numpy as np

from charrnn.data.encode import _check_splits, _encode_regions, _regions, _sample, _SplitStats, scan_text
from charrnn.data.records import encode_records, record_cuts, record_starts
from charrnn.data.store import SPLITS
from charrnn.data.tokenizers import ByteTokenizer, CharTokenizer, adapt_vocab, fit_tokenizer


def encode_records_corpus(src, val_src, kind: str, vocab_size: int, val_frac: float, test_frac: float, sep: str,
                          writer_for, tok=None, log=None, unknown: str | None = None):
    """``encode_corpus`` for a corpus of records (--records SEP, characters or sentencepiece): the splits
    fall on the record boundaries nearest the fractions (records.record_cuts, from a streaming pass),
    and each split is encoded a run of whole records at a time (records.encode_records), so that its
    record starts are known without holding the text. Returns (tokenizer, stats, writer, starts)."""
    sources = [src] + ([val_src] if val_src else [])
    lengths, counts = scan_text(sources)
    starts, n = record_starts(src.text_chunks(), sep)
    a, b = record_cuts(starts, n, sep, 0.0 if val_src else val_frac, test_frac, src.path)
    bounds = [(0, a), (a, a if val_src else b), (b, n)]  # with a --val-file the records between are unused
    skip = False
    if tok is None and kind in ("char", "byte"):
        tok = CharTokenizer(np.flatnonzero(counts)) if kind == "char" else ByteTokenizer()
    elif tok is None:
        tok = fit_tokenizer(kind, _sample(src, a), vocab_size, log=log)
    elif unknown is not None and tok.kind == "char":
        present = np.flatnonzero(counts)
        tok, skip = adapt_vocab(tok, map(chr, present[~np.isin(present, tok.codepoints)]), unknown, log)
    w = writer_for(tok.vocab_size)
    try:
        stats = {s: _SplitStats() for s in SPLITS}
        feed = _records_feed(tok, sep, skip)
        _encode_regions(src, bounds, tok, w, stats, feed)
        if val_src:
            _encode_regions(val_src, [(0, 0), (0, lengths[1]), (0, 0)], tok, w, stats, feed)
        return _finish(tok, feed, w, stats)
    except BaseException:
        w.abort()
        raise


def encode_byte_records(src, val_src, val_frac: float, test_frac: float, sep: str, writer_for):
    """``encode_records_corpus`` for a byte model of a text that is not UTF-8: the splits fall on the
    record boundaries nearest the byte fractions, and each split's characters are counted as a replacing
    decoder of its bytes counts them (equal to reading it whole). Returns (tokenizer, stats, writer, starts)."""
    tok, sep_b = ByteTokenizer(), sep.encode("utf-8")
    starts, n = record_starts((chunk for _, chunk in src.byte_chunks()), sep_b)
    a, b = record_cuts(starts, n, sep_b, 0.0 if val_src else val_frac, test_frac, src.path)
    w = writer_for(tok.vocab_size)
    try:
        stats = {s: _SplitStats() for s in SPLITS}
        feed = _records_feed(tok, sep_b, False)
        decoders = {s: codecs.getincrementaldecoder("utf-8")("replace") for s in SPLITS}
        _byte_record_regions(src, [(0, a), (a, a if val_src else b), (b, n)], w, stats, feed, decoders)
        if val_src:
            decoders["val"] = codecs.getincrementaldecoder("utf-8")("replace")  # the val file is read on its own
            _byte_record_regions(val_src, [(0, 0), (0, val_src.size), (0, 0)], w, stats, feed, decoders)
        return _finish(tok, feed, w, stats)
    except BaseException:
        w.abort()
        raise


def _finish(tok, feed, w, stats):
    """The last record flushed and the splits checked: (tokenizer, stats, writer, each split's record starts)."""
    feed.flush(w, stats)
    _check_splits(stats, w)
    return tok, stats, w, {s: np.concatenate(feed.starts[s] or [np.zeros(0, np.int64)]) for s in SPLITS}


def _byte_record_regions(src, bounds, w, stats, feed, decoders) -> None:
    pos = 0
    for _, chunk in src.byte_chunks():
        for s, a, b in _regions(bounds, pos, len(chunk)):
            part, st = chunk[a:b], stats[s]
            st.bytes += len(part)
            st.chars += len(decoders[s].decode(part))
            st.nonspace = True
            feed(None, s, part, w, st)
        pos += len(chunk)
    for s in SPLITS:  # a cut character at a split's end counts as the whole text's decoder counts it
        stats[s].chars += len(decoders[s].decode(b"", final=True))
        decoders[s].reset()


class _records_feed:
    """Buffer each split's text (or bytes) up to the end of its last whole record, then encode those
    records (their ids and where each starts); only the record being read stays in memory."""

    def __init__(self, tok, sep, skip: bool):
        self.tok, self.sep, self.skip = tok, sep, skip
        self.buf, self.n = dict.fromkeys(SPLITS, sep[:0]), dict.fromkeys(SPLITS, 0)
        self.starts = {s: [] for s in SPLITS}

    def __call__(self, tok, split, part, w, st) -> None:
        text = self.buf[split] + part
        cut = len(text) - len(text.split(self.sep)[-1])  # after the last separator, greedy as the whole splits
        if cut:
            self._encode(split, text[:cut], w, st)
        self.buf[split] = text[cut:]

    def _encode(self, split, text: str, w, st) -> None:
        if self.skip:  # --skip-unknown: drop what the tokenizer never saw, and leave it out of the counts
            kept = self.tok.decode(self.tok.encode(text, skip_unknown=True))
            st.chars -= len(text) - len(kept)
            st.bytes -= len(text.encode("utf-8")) - len(kept.encode("utf-8"))
            text = kept
        ids, starts = encode_records(self.tok, text, self.sep)
        self.starts[split].append(starts + self.n[split])
        self.n[split] += len(ids)
        w.append(split, ids)

    def flush(self, w, stats) -> None:
        for s, text in self.buf.items():
            if text:
                self._encode(s, text, w, stats[s])
            self.buf[s] = self.sep[:0]
