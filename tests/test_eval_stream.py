"""eval --file and score read a text of any size in bounded memory: the text is encoded chunk by chunk
into an id file read a window (or a piece) at a time, never held whole or as int64 ids, and the figures
are the ones the whole text in memory gives."""

from __future__ import annotations

import numpy as np
import pytest
import torch

import charrnn.data.text as text_mod
import charrnn.evaluation.evaluate as ev
import charrnn.evaluation.score as sc
from charrnn.data.store import IdFile
from charrnn.data.tokenizers import fit_tokenizer
from charrnn.errors import CharrnnError
from charrnn.evaluation.evaluate import evaluate_split, file_ids, text_ids
from charrnn.evaluation.score import LineScores, score_lines
from tests.conftest import CONTEXT_TEXT, context_model

CPU = torch.device("cpu")
CHUNK = 257        # bytes a file is read in here (text.CHUNK_BYTES, 4 MiB in use): many chunks, cut mid-character
PIECE = 300        # characters of a score piece here (score.SCORE_PIECE)

pytestmark = pytest.mark.usefixtures("one_thread")


def _long_text() -> str:
    """About 10k characters (more than two eval streams of 4,096), lines of mixed lengths, CJK (3-byte)
    characters, and one line longer than a score piece."""
    words = CONTEXT_TEXT.replace("\n", " \n ").split(" ")
    text = " ".join(np.random.default_rng(3).choice(words, 2200))
    return text[:5000] + "x" * (3 * PIECE) + "\n" + text[5000:]


@pytest.fixture(scope="module")
def toks():
    text = _long_text()
    return {"char": fit_tokenizer("char", text), "byte": fit_tokenizer("byte", text),
            "bpe": fit_tokenizer("bpe", text, vocab_size=300)}


@pytest.fixture
def small_buffers(monkeypatch):
    """The stream buffers shrunk, and every read of the id file recorded: (first, last) token."""
    monkeypatch.setattr(text_mod, "CHUNK_BYTES", CHUNK)
    monkeypatch.setattr(sc, "SCORE_PIECE", PIECE)
    reads, real = [], IdFile.read

    def read(self, a, b):
        reads.append(b - a)
        return real(self, a, b)
    monkeypatch.setattr(IdFile, "read", read)
    return reads


@pytest.mark.parametrize("kind", ["char", "byte", "bpe"])
def test_eval_file_streams_and_gives_the_in_memory_figures(kind, toks, tmp_path, small_buffers):
    tok, text = toks[kind], _long_text()
    path = tmp_path / "t.txt"
    path.write_text(text, encoding="utf-8")
    model = context_model(tok.vocab_size, seed=5)
    ids, n_chars, n_bytes = text_ids(tok, text)
    assert len(ids) > 2 * 4096 + 1  # several streams, each warmed on the text before its cut
    want = evaluate_split(model, tok, ids, n_chars, n_bytes, CPU)
    small_buffers.clear()
    got_ids, got_chars, got_bytes = file_ids(tok, str(path))
    with got_ids:
        assert (got_chars, got_bytes) == (n_chars, n_bytes)
        assert np.array_equal(got_ids[:], ids)  # encoding chunk by chunk equals encoding the whole
        small_buffers.clear()
        got = evaluate_split(model, tok, got_ids, got_chars, got_bytes, CPU)
    # the same windows of the same ids: the same float operations in the same order, so equal figures
    assert got == want
    # nothing read more than a window (plus its shifted target) or a warm-up context at a time
    assert small_buffers and max(small_buffers) <= max(ev.EVAL_WINDOW + 1, ev.EVAL_WARM)


def test_eval_file_of_a_byte_model_reads_the_bytes_as_they_are(toks, tmp_path, monkeypatch):
    """A byte-order mark kept, invalid UTF-8 scored, characters counted as a replacing decoder counts them."""
    monkeypatch.setattr(text_mod, "CHUNK_BYTES", 5)
    raw = b"\xef\xbb\xbfab\xe5\xba\x8a\xff\xfe cd\xe6\x98\x8e\n" * 7
    path = tmp_path / "b.bin"
    path.write_bytes(raw)
    ids, n_chars, n_bytes = file_ids(toks["byte"], str(path))
    with ids:
        assert np.array_equal(ids[:], np.frombuffer(raw, np.uint8))
    assert (n_chars, n_bytes) == (len(raw.decode("utf-8", "replace")), len(raw))


def test_eval_file_unknown_characters_named_all_or_skipped(toks, tmp_path, monkeypatch):
    monkeypatch.setattr(text_mod, "CHUNK_BYTES", 16)
    tok = toks["char"]
    text = "the fox\n" * 10 + "Ω here\n" + "the fox\n" * 10 + "Ж there\n"
    path = tmp_path / "u.txt"
    path.write_text(text, encoding="utf-8")
    with pytest.raises(CharrnnError, match="2 character\\(s\\).*'Ω'.*'Ж'.*--skip-unknown"):
        file_ids(tok, str(path))
    ids, n_chars, n_bytes = file_ids(tok, str(path), skip_unknown=True)
    with ids:
        assert (ids[:].tolist(), n_chars, n_bytes) == (lambda r: (r[0].tolist(), r[1], r[2]))(
            text_ids(tok, text, skip_unknown=True))


@pytest.mark.parametrize("kind", ["char", "byte", "bpe"])
def test_score_file_streams_and_gives_the_in_memory_records(kind, toks, tmp_path, small_buffers):
    tok, text = toks[kind], _long_text()
    path = tmp_path / "t.txt"
    path.write_text(text, encoding="utf-8")
    model = context_model(tok.vocab_size, seed=6)
    want = score_lines(model, tok, text, CPU, per_char=True)  # one piece: the whole text in memory
    assert len(want) > 10 and max(len(r["text"]) for r in want) > PIECE
    small_buffers.clear()
    got = LineScores(model, tok, CPU, path=str(path), per_char=True)
    assert len(got) == len(want)
    # the same token nll (eval's streams) summed per line in the same order: equal records
    assert list(got) == want
    with pytest.raises(CharrnnError, match="read once"):  # its files are gone
        list(got)
    assert max(small_buffers) < len(tok.encode(text)) // 4  # read a piece at a time, never the whole
    if kind != "bpe":  # even the line longer than a piece: read in parts of at most two chunks (pieces.py)
        assert max(small_buffers) <= 2 * PIECE * (4 if kind == "byte" else 1)


@pytest.mark.parametrize("kind", ["char", "bpe"])
def test_score_independent_and_skipping_stream_the_same_records(kind, toks, small_buffers):
    tok, text = toks[kind], _long_text()[:3000] + "Ω\n" * (kind == "char")
    model = context_model(tok.vocab_size, seed=7)
    opts = {"independent": True, "skip_unknown": kind == "char", "per_char": True}
    sc.SCORE_PIECE, piece = 10 ** 9, sc.SCORE_PIECE  # the reference: one piece
    want = score_lines(model, tok, text, CPU, **opts)
    sc.SCORE_PIECE = piece
    got = score_lines(model, tok, text, CPU, **opts)
    assert [{k: v for k, v in r.items() if k not in ("nll", "bpc", "surprisal")} for r in got] == \
        [{k: v for k, v in r.items() if k not in ("nll", "bpc", "surprisal")} for r in want]
    # each line from a fresh state, batched with other lines of its piece rather than of the whole text:
    # float32 with other padding and batch rows, ~1e-6 per token
    assert [r["nll"] for r in got] == pytest.approx([r["nll"] for r in want], rel=1e-5)


def test_score_file_checks_fail_before_any_record(toks, tmp_path, monkeypatch):
    monkeypatch.setattr(sc, "SCORE_PIECE", 16)
    tok = toks["char"]
    path = tmp_path / "u.txt"
    path.write_text("the fox\n" * 10 + "Ω\n" + "the fox\n" * 10 + "Ж\n", encoding="utf-8")
    model = context_model(tok.vocab_size, seed=8)
    with pytest.raises(CharrnnError, match="2 character\\(s\\).*'Ω'.*'Ж'.*--skip-unknown"):
        LineScores(model, tok, CPU, path=str(path))
    path.write_text(" \n\n  \n", encoding="utf-8")
    with pytest.raises(CharrnnError, match="only whitespace"):
        LineScores(model, tok, CPU, path=str(path))
