"""encode_stream: encoding in chunks equals encoding the whole text (char, byte, bpe), with the
same splits, counts and vocabulary, whatever the chunk size."""

from __future__ import annotations

import random

import numpy as np
import pytest

import charrnn.data.encode as es
import charrnn.data.text as ts
from charrnn.data.store import StoreWriter, read_entry
from charrnn.data.corpus import split_text
from charrnn.data.encode import encode_corpus, split_sizes
from charrnn.errors import CharrnnError
from charrnn.data.text import Source
from charrnn.data.tokenizers import fit_tokenizer


def _text(n: int, seed: int = 0) -> str:
    rng = random.Random(seed)
    words = ["the", "cat", "sat", "on", "mat", "你好", "世界", "é", "🎉", "\u2581x", "def", "()"]
    out = []
    while sum(map(len, out)) < n:
        out.append(" ".join(rng.choice(words) for _ in range(rng.randint(1, 9))) + "\n")
    return "".join(out)[:n]


def _encode(tmp_path, text: str, kind: str, chunk: int, monkeypatch, val_text: str | None = None, tok=None,
            vocab_size=300):
    monkeypatch.setattr(ts, "CHUNK_BYTES", chunk)
    f = tmp_path / "c.txt"
    f.write_bytes(text.encode("utf-8"))
    val_src = None
    if val_text is not None:
        (tmp_path / "v.txt").write_bytes(val_text.encode("utf-8"))
        val_src = Source(str(tmp_path / "v.txt"), "validation file")
    store = tmp_path / f"store-{kind}-{chunk}"
    tok, stats, w = encode_corpus(Source(str(f)), val_src, kind, vocab_size, 0.1, 0.05,
                                  lambda v: StoreWriter(str(store), "d", v), tok=tok)
    w.finish({"tokenizer": tok.state()})
    entry = read_entry(str(store), "d")
    return tok, stats, entry["ids"]


@pytest.mark.slow
@pytest.mark.parametrize("chunk", [1, 7, 64, 1 << 20])
def test_char_chunked_equals_whole(tmp_path, monkeypatch, chunk):
    text = _text(5000, seed=chunk)
    tok, stats, ids = _encode(tmp_path, text, "char", chunk, monkeypatch)
    whole = fit_tokenizer("char", text)
    assert np.array_equal(tok.codepoints, whole.codepoints)
    for name, part in zip(("train", "val", "test"), split_text(text, 0.1, 0.05)):
        assert np.array_equal(ids[name], whole.encode(part))
        assert stats[name].chars == len(part)
        assert stats[name].bytes == len(part.encode("utf-8"))


@pytest.mark.slow
@pytest.mark.parametrize("chunk", [3, 50, 1 << 20])
def test_bpe_chunked_equals_whole(tmp_path, monkeypatch, chunk):
    text = _text(8000, seed=3)
    tok, stats, ids = _encode(tmp_path, text, "bpe", chunk, monkeypatch, vocab_size=320)
    train, val, test = split_text(text, 0.1, 0.05)
    for name, part in zip(("train", "val", "test"), (train, val, test)):
        assert np.array_equal(ids[name], tok.encode(part))
        assert tok.decode(ids[name]) == part
    # the tokenizer is the one fitted on the whole training split (it is shorter than the sample bound)
    assert tok.model_proto == fit_tokenizer("bpe", train, 320).model_proto


def test_bpe_sample_of_a_long_training_split_is_bounded_and_spread(tmp_path, monkeypatch):
    monkeypatch.setattr(es, "SP_SAMPLE_CHARS", 640)
    monkeypatch.setattr(es, "SP_BLOCKS", 8)
    text = "".join(f"{i:05d}\n" for i in range(2000))  # each line names its place
    f = tmp_path / "c.txt"
    f.write_text(text)
    sample = es._sample(Source(str(f)), len(text))
    assert len(sample) <= 640 + 8
    firsts = [int(line) for line in sample.split("\n") if len(line) == 5]
    assert min(firsts) < 20 and max(firsts) > 1700


@pytest.mark.parametrize("chunk", [1, 5, 1 << 20])
def test_bytes_split_by_byte_fractions(tmp_path, monkeypatch, chunk):
    text = _text(3000, seed=9)
    raw = text.encode("utf-8")
    tok, stats, ids = _encode(tmp_path, text, "byte", chunk, monkeypatch)
    n_train, n_val, n_test = split_sizes(len(raw), 0.1, 0.05)
    parts = (raw[:n_train], raw[n_train:n_train + n_val], raw[n_train + n_val:])
    for name, part in zip(("train", "val", "test"), parts):
        assert bytes(np.asarray(ids[name])) == part
        assert stats[name].bytes == len(part)
        assert stats[name].chars == sum(1 for b in part if b & 0xC0 != 0x80)  # characters starting here
    assert stats["train"].chars + stats["val"].chars + stats["test"].chars == len(text)


def test_val_file_char_vocabulary_covers_both(tmp_path, monkeypatch):
    text, val_text = _text(3000, seed=1), "ζζζ only here ζ\n"
    tok, stats, ids = _encode(tmp_path, text, "char", 11, monkeypatch, val_text=val_text)
    whole = fit_tokenizer("char", text + val_text)
    assert np.array_equal(tok.codepoints, whole.codepoints)
    assert np.array_equal(ids["val"], whole.encode(val_text))
    train, _, test = split_text(text, 0.0, 0.05)
    assert np.array_equal(ids["train"], whole.encode(train)) and np.array_equal(ids["test"], whole.encode(test))


def test_given_tokenizer_refuses_unknown_characters(tmp_path, monkeypatch):
    tok = fit_tokenizer("char", "abc \n")
    with pytest.raises(CharrnnError, match="never saw.*--tokenizer byte"):
        _encode(tmp_path, "abc abc\n" * 50 + "z\n" + "abc\n" * 100, "char", 16, monkeypatch, tok=tok)
    assert list((tmp_path / "store-char-16").iterdir()) == []  # the half-written entry is gone


def test_whitespace_only_is_refused(tmp_path, monkeypatch):
    with pytest.raises(CharrnnError, match="only whitespace"):
        _encode(tmp_path, " \n\t\n" * 100, "char", 8, monkeypatch)


@pytest.mark.parametrize("chunk", [5, 300])
def test_bpe_on_text_without_newlines_is_bounded_and_equals_whole(tmp_path, monkeypatch, chunk):
    """text8: one line of words. The buffer is cut before a word's leading space once it passes
    PIECE_BUFFER characters (made small here), so it never holds the whole text, and the ids equal
    encoding each split whole (sentencepiece pieces never cross into the space that starts a word)."""
    monkeypatch.setattr(es, "PIECE_BUFFER", 40)
    rng = random.Random(1)
    text = " ".join(rng.choice(["one", "two", "three", "nine", "zero", "eight"]) for _ in range(3000))
    tok, _, ids = _encode(tmp_path, text, "bpe", chunk, monkeypatch, vocab_size=300)
    whole = [tok.encode(part) for part in split_text(text, 0.1, 0.05)]
    lengths, encode = [], type(tok).encode
    monkeypatch.setattr(type(tok), "encode", lambda self, t, *a, **k: (lengths.append(len(t)), encode(self, t, *a, **k))[1])
    (tmp_path / "again").mkdir()
    _encode(tmp_path / "again", text, "bpe", chunk, monkeypatch, tok=tok)  # the same, counting what is encoded
    assert 0 < max(lengths) <= 40 + chunk + 6  # the buffer, a chunk and a word at most: never the whole text
    for name, want in zip(("train", "val", "test"), whole):
        assert np.array_equal(ids[name], want)


@pytest.mark.parametrize("chunk", [7, 1 << 20])
@pytest.mark.parametrize("unknown", ["skip", "extend"])
def test_fine_tuning_on_new_characters_streams(tmp_path, monkeypatch, chunk, unknown):
    """A char model fine-tuned on text with characters it never saw is encoded chunk by chunk like any
    corpus: "extend" adds them to the vocabulary; "skip" drops them, and the split's character and
    byte counts (the denominators of bits per character) leave them out."""
    text = _text(6000, seed=5)
    old = fit_tokenizer("char", text.replace("🎉", "").replace("é", ""))
    monkeypatch.setattr(ts, "CHUNK_BYTES", chunk)
    f = tmp_path / "c.txt"
    f.write_bytes(text.encode("utf-8"))
    tok, stats, w = encode_corpus(Source(str(f)), None, "char", 0, 0.1, 0.05,
                                  lambda v: StoreWriter(str(tmp_path / "s"), "d", v), tok=old, unknown=unknown)
    w.finish({"tokenizer": tok.state()})
    ids = read_entry(str(tmp_path / "s"), "d")["ids"]
    for name, part in zip(("train", "val", "test"), split_text(text, 0.1, 0.05)):
        kept = part if unknown == "extend" else part.replace("🎉", "").replace("é", "")
        assert tok.decode(ids[name]) == kept
        assert stats[name].chars == len(kept) and stats[name].bytes == len(kept.encode("utf-8"))
    assert tok.vocab_size == old.vocab_size + (2 if unknown == "extend" else 0)


@pytest.mark.parametrize("chunk", [1, 6, 1 << 20])
@pytest.mark.parametrize("kind,sep", [("char", "\n"), ("char", "\n\n"), ("bpe", "\n"), ("byte", "\n")])
def test_records_stream_equal_the_whole_text(tmp_path, monkeypatch, chunk, kind, sep):
    """--records: the streaming pass finds the same record boundaries as text.split(sep) on the whole
    (a separator may straddle two chunks, and "\\n\\n\\n" must split greedily), so the splits, ids and
    record starts equal splitting and encoding the whole text."""
    from charrnn.data.encode_records import encode_records_corpus
    from charrnn.data.records import encode_records, split_records

    rng = random.Random(7)
    records = ["".join(rng.choice("abcdé\n 你") for _ in range(rng.randint(1, 12))) for _ in range(400)]
    text = sep.join(records) + sep
    monkeypatch.setattr(ts, "CHUNK_BYTES", chunk)
    f = tmp_path / "r.txt"
    f.write_bytes(text.encode("utf-8"))
    tok, stats, w, starts = encode_records_corpus(Source(str(f)), None, kind, 300, 0.1, 0.05, sep,
                                                  lambda v: StoreWriter(str(tmp_path / "s"), "d", v))
    w.finish({"tokenizer": tok.state()})
    ids = read_entry(str(tmp_path / "s"), "d")["ids"]
    for name, part in zip(("train", "val", "test"), split_records(text, sep, 0.1, 0.05)):
        want_ids, want_starts = encode_records(tok, part, sep)
        assert np.array_equal(ids[name], want_ids)
        assert np.array_equal(starts[name], want_starts)
        assert stats[name].chars == len(part)


@pytest.mark.parametrize("chunk", [1, 5, 1 << 20])
@pytest.mark.parametrize("utf8", [True, False])
def test_byte_records_stream_equal_the_whole_file(tmp_path, monkeypatch, chunk, utf8):
    """--records with --tokenizer byte streams like the char path (the file is never read whole): UTF-8
    text splits at the records nearest the character fractions, other bytes at the byte fractions, each
    split's characters counted as decoding it whole (with replacement) counts them."""
    from charrnn.data.corpus import load_corpus
    from charrnn.data.records import encode_records, split_records
    from charrnn.data.tokenizers import ByteTokenizer

    rng = random.Random(9)
    pieces = ["a", "é", "你", "b c", "\xff" if not utf8 else "d", "\n"]
    records = ["".join(rng.choice(pieces[:-1]) for _ in range(rng.randint(1, 15))) for _ in range(300)]
    raw = "\n".join(records).encode("utf-8") + b"\n"
    if not utf8:
        raw = raw.replace("\xff".encode("utf-8"), b"\xff")  # a lone 0xff: not UTF-8
    f = tmp_path / "r.bin"
    f.write_bytes(raw)
    monkeypatch.setattr(ts, "CHUNK_BYTES", chunk)
    monkeypatch.setattr(Source, "read_all", lambda self: pytest.fail("the whole file was read"))
    c = load_corpus(str(f), "byte", val_frac=0.1, test_frac=0.05, records="\n", cache_dir=str(tmp_path / "cache"))
    tok = ByteTokenizer()
    whole = raw.decode("utf-8") if utf8 else raw
    for name, part in zip(("train", "val", "test"), split_records(whole, "\n" if utf8 else b"\n", 0.1, 0.05)):
        want_ids, want_starts = encode_records(tok, part, "\n")
        got = getattr(c, name)
        assert np.array_equal(got.ids, want_ids) and np.array_equal(got.starts, want_starts)
        part_bytes = part.encode("utf-8") if utf8 else part
        assert (got.n_chars, got.n_bytes) == (len(part_bytes.decode("utf-8", "replace")), len(part_bytes))
