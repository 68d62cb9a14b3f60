"""Data: splits, the corpus cache, the built-in corpus."""

from __future__ import annotations

import os

import numpy as np
import pytest

import charrnn.data.corpus as data
from charrnn.data.corpus import load_corpus, pystdlib_files, read_pystdlib, split_text
from charrnn.data.tokenizers import fit_tokenizer

# ----------------------------------------------------------------------------- split_text

@pytest.mark.parametrize("n,val,test", [(1000, 0.1, 0.2), (1000, 0.05, 0.05), (7, 0.3, 0.3), (100, 0.0, 0.1),
                                        (100, 0.1, 0.0), (12345, 0.01, 0.02)])
def test_split_text_fractions_and_order(n, val, test):
    text = "".join(chr(0x4E00 + i % 5000) for i in range(n))  # position-identifying characters
    tr, va, te = split_text(text, val, test)
    assert tr + va + te == text
    assert len(tr) == int(n * (1 - val - test) + 1e-6)
    assert len(te) == round(n * test)
    assert len(va) == n - len(tr) - len(te)
    assert abs(len(va) - n * val) < 1.5
    assert text.startswith(tr) and text.endswith(te)
    assert text[len(tr):len(tr) + len(va)] == va


def test_split_text_is_nanogpts_split():
    n = 1_115_394  # tinyshakespeare: nanoGPT trains on data[:int(n * 0.9)]
    tr, va, te = split_text("x" * n, 0.1, 0.0)
    assert (len(tr), len(va), len(te)) == (int(n * 0.9), n - int(n * 0.9), 0)


def test_split_text_train_first_then_val_then_test():
    text = "A" * 80 + "B" * 10 + "C" * 10
    assert split_text(text, 0.1, 0.1) == ("A" * 80, "B" * 10, "C" * 10)


# ----------------------------------------------------------------------------- load_corpus

_WORDS = ("the of and to in is was that for it with as his on be at by had not are but from or have an "
          "they which one you were her all she there would their we him been has when who will more no if "
          "out so said what up its about into than them can only other new some could time these two may "
          "then do first any my now such like our over man me even most made after also did many before "
          "must through back years where much your way well down should because each just those people").split()


def _english(n: int, seed: int) -> str:
    rng = np.random.default_rng(seed)
    out, size = [], 0
    while size < n:
        line = " ".join(rng.choice(_WORDS, 12)) + ".\n"
        out.append(line)
        size += len(line)
    return "".join(out)[:n]


@pytest.mark.parametrize("kind", ["char", "bpe"])
def test_load_corpus_writes_and_reuses_cache(tmp_path, monkeypatch, kind):
    corpus_file = tmp_path / "corpus.txt"
    text = _english(6000, seed=1) + "你好，世界！🎉\n"
    corpus_file.write_text(text, encoding="utf-8")
    cache_dir = tmp_path / "cache"
    first = load_corpus(str(corpus_file), kind, vocab_size=400, val_frac=0.1, test_frac=0.1,
                        cache_dir=str(cache_dir))
    assert os.listdir(cache_dir) == [first.digest]  # one entry, named by the digest
    assert sorted(os.listdir(cache_dir / first.digest)) == ["meta.pt", "test.bin", "train.bin", "val.bin"]
    assert isinstance(first.train.ids, np.memmap)
    assert first.train.ids.dtype == (np.uint8 if first.tokenizer.vocab_size <= 256 else np.uint16)

    calls = []

    def boom(*a, **k):
        calls.append(a)
        raise AssertionError("the corpus must not be encoded again when the cache is valid")

    monkeypatch.setattr(data, "encode_corpus", boom)
    logs = []
    second = load_corpus(str(corpus_file), kind, vocab_size=400, val_frac=0.1, test_frac=0.1,
                         cache_dir=str(cache_dir), log=logs.append)
    assert not calls
    assert any("cache" in m for m in logs)
    assert second.digest == first.digest
    assert second.tokenizer.kind == first.tokenizer.kind == kind
    for split in ("train", "val", "test"):
        a, b = getattr(first, split), getattr(second, split)
        assert np.array_equal(a.ids, b.ids)
        assert a.ids.dtype == b.ids.dtype
        assert (a.n_chars, a.n_bytes) == (b.n_chars, b.n_bytes)
    assert np.array_equal(second.tokenizer.encode(text), first.tokenizer.encode(text))

    # the patch is effective: without a cache the tokenizer must be fitted (and here it explodes)
    with pytest.raises(AssertionError, match="must not be encoded"):
        load_corpus(str(corpus_file), kind, vocab_size=400, val_frac=0.1, test_frac=0.1,
                    cache_dir=str(tmp_path / "other_cache"))
    # and a changed corpus does not reuse the old cache entry
    corpus_file.write_text(text + "more\n", encoding="utf-8")
    with pytest.raises(AssertionError, match="must not be encoded"):
        load_corpus(str(corpus_file), kind, vocab_size=400, val_frac=0.1, test_frac=0.1,
                    cache_dir=str(cache_dir))


def test_load_corpus_splits_match_split_text(tmp_path):
    text = _english(5000, seed=4) + "床前明月光，疑是地上霜。\n"
    f = tmp_path / "c.txt"
    f.write_text(text, encoding="utf-8")
    corpus = load_corpus(str(f), "char", val_frac=0.1, test_frac=0.05)
    parts = split_text(text, 0.1, 0.05)
    for split, part in zip((corpus.train, corpus.val, corpus.test), parts):
        assert corpus.tokenizer.decode(split.ids) == part
        assert split.n_chars == len(part)
        assert split.n_bytes == len(part.encode("utf-8"))


def test_bpe_tokenizer_is_fitted_on_train_split_only(tmp_path):
    word = "quokkaplatypus"
    train = _english(8000, seed=2)
    assert word not in train and word[2:8] not in train
    val = (f"{word} " * 100)[:1000]
    test = _english(1000, seed=3)
    text = train + val + test
    assert split_text(text, 0.1, 0.1) == (train, val, test)
    f = tmp_path / "corpus.txt"
    f.write_text(text, encoding="utf-8")

    # Sensitivity check: a tokenizer fitted on the whole text learns the word as (nearly) one piece.
    leaky = fit_tokenizer("bpe", text, vocab_size=400)
    assert len(leaky.encode(word)) <= 3

    corpus = load_corpus(str(f), "bpe", vocab_size=400, val_frac=0.1, test_frac=0.1)
    tok = corpus.tokenizer
    assert tok.kind == "bpe"
    pieces = [tok.sp.IdToPiece(i) for i in range(tok.vocab_size)]
    assert not any("kkap" in p or "platy" in p or "quok" in p for p in pieces)
    assert len(tok.encode(word)) >= 8
    assert tok.decode(corpus.val.ids) == val
    # the val split is encoded with that tokenizer: far more tokens than the leaky one needs
    assert len(corpus.val.ids) > 3 * len(leaky.encode(val))


# ----------------------------------------------------------------------------- pystdlib

def test_pystdlib_files_sorted_and_nonempty():
    files = pystdlib_files()
    assert len(files) > 20
    assert files == sorted(files)
    assert all(p.endswith(".py") and os.path.isfile(p) for p in files)


def test_read_pystdlib_concatenates_in_sorted_order():
    text = read_pystdlib()
    assert text
    parts = []
    for path in sorted(pystdlib_files()):
        try:
            with open(path, encoding="utf-8") as fh:
                parts.append(fh.read())
        except (OSError, UnicodeDecodeError):
            continue
    assert len(parts) > 20
    assert text == "".join(parts)
    assert text.startswith(parts[0]) and text.endswith(parts[-1])

