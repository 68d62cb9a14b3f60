"""Tokenizers: lossless round trips, streaming decode, state round trip, unknown characters, speed."""

from __future__ import annotations

import io
import time

import numpy as np
import pytest
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from charrnn.errors import CharrnnError
from charrnn.data.tokenizers import CharTokenizer, fit_tokenizer, tokenizer_from_state

# ----------------------------------------------------------------------------- training text

_EN = (
    "The quick brown fox jumps over the lazy dog. Pack my box with five dozen liquor jugs!\n"
    "How vexingly quick daft zebras jump; sphinx of black quartz, judge my vow.\n"
    "It was the best of times, it was the worst of times, it was the age of wisdom.\n"
    "    indented line with four spaces, and a trailing one \n"
    "def main(argv):\n\treturn 0  # tab-indented code\r\n"
)
_ZH = (
    "今天天气很好，我们去公园散步吧。\n"
    "学习中文需要耐心和时间，每天练习一点点。\n"
    "我喜欢喝茶，也喜欢在安静的下午看书。\n"
    "北京是中国的首都，上海是一个很大的城市。\n"
    "床前明月光，疑是地上霜。举头望明月，低头思故乡。\n"
)
_EMOJI = "I love pizza 🍕 and coffee ☕! Party time 🎉🎉 with the family 👩‍👩‍👧 🚀✨\n"
_ACCENTS = "Café, naïve résumé, façade, Straße, smörgåsbord, Ångström, señor, crème brûlée.\n"

# A few KB of mixed text, every block present several times so sentencepiece learns merges.
TRAIN_TEXT = "".join(
    f"{_EN}{_ZH}{_EMOJI}{_ACCENTS}Line {i}: 第{i}行 -- {'x' * (i % 5)}\n" for i in range(12)
)
assert 4_000 < len(TRAIN_TEXT.encode("utf-8")) < 20_000

SAMPLES = {
    "english": "The quick brown fox jumps over the lazy dog.",
    "chinese": "我们明天一起去图书馆学习吧。这本书非常有意思！",
    "emoji": "🍕☕🎉👩‍👩‍👧🚀✨😀",
    "accents": "Café naïve résumé façade Straße Ångström",
    "mixed": "Hello 世界! 🎉 Café, 你好吗? ok.\n第二行 with emoji 🍕.",
    "spaces": "  leading, trailing  ",
    "multiple_spaces": "a  b   c    d     e",
    "only_spaces": "     ",
    "tabs": "\tcol1\tcol2\t\t",
    "crlf": "line one\r\nline two\r\n\r\n",
    "newlines": "\n\nblank lines\n\n",
    "empty": "",
    # Characters that never occur in TRAIN_TEXT: they must go through byte fallback.
    "unseen": "Ω Ж ש ก 한국어 日本語のテキスト 𝔘𝔫𝔦𝔠𝔬𝔡𝔢 \x00\x7f",
}

SUBWORD = ("bpe", "unigram")
ALL = ("char", "byte", "bpe", "unigram")
ALPHABET = sorted(set(TRAIN_TEXT))


@pytest.fixture(scope="module")
def toks():
    """One fitted tokenizer of each kind (sentencepiece models fitted once per module)."""
    return {kind: fit_tokenizer(kind, TRAIN_TEXT, vocab_size=360) for kind in ALL}


def _char_sample(text: str, alphabet) -> str:
    """Keep only characters the char tokenizer was fitted on (the sample's structure stays)."""
    return "".join(c for c in text if c in alphabet)


def _stream(tok, ids) -> list[str]:
    dec = tok.stream_decoder()
    chunks = [dec.feed(int(i)) for i in ids]
    chunks.append(dec.flush())
    return chunks


# ----------------------------------------------------------------------------- round trips

@pytest.mark.parametrize("name", sorted(SAMPLES))
@pytest.mark.parametrize("kind", ("byte", "bpe", "unigram"))
def test_round_trip_samples(toks, kind, name):
    tok = toks[kind]
    text = SAMPLES[name]
    ids = tok.encode(text)
    assert len(ids) >= (1 if text else 0)
    assert tok.decode(ids) == text


@pytest.mark.parametrize("name", sorted(set(SAMPLES) - {"unseen"}))
def test_round_trip_samples_char(toks, name):
    tok = toks["char"]
    text = _char_sample(SAMPLES[name], set(ALPHABET))
    if name != "empty":
        assert text, "sample should keep characters the char tokenizer knows"
    ids = tok.encode(text)
    assert len(ids) == len(text)
    assert tok.decode(ids) == text


def test_samples_use_the_learned_vocabulary(toks):
    """Sanity: subword tokenizers really merge (fewer tokens than characters) on seen text."""
    for kind in SUBWORD:
        assert toks[kind].vocab_size > 256
        assert len(toks[kind].encode(_EN)) < 0.75 * len(_EN)


def test_unseen_chars_use_byte_fallback(toks):
    for kind in SUBWORD:
        tok = toks[kind]
        ids = tok.encode("ש")  # Hebrew shin: 2 UTF-8 bytes, never in TRAIN_TEXT
        pieces = [tok.sp.IdToPiece(int(i)) for i in ids]
        assert pieces == ["<0xD7>", "<0xA9>"]
        assert tok.decode(ids) == "ש"


def test_whole_training_text_round_trips(toks):
    for kind in ALL:
        assert toks[kind].decode(toks[kind].encode(TRAIN_TEXT)) == TRAIN_TEXT


@pytest.mark.parametrize("kind", SUBWORD)
def test_round_trip_whitespace_meta_symbol(toks, kind):
    text = "a\u2581b \u2581"
    assert toks[kind].decode(toks[kind].encode(text)) == text


# Property tests.
_ANY_TEXT = st.text(max_size=60)
_SUBWORD_TEXT = st.text(alphabet=st.characters(codec="utf-8"), max_size=60)
_PROPS = settings(max_examples=150, deadline=None, database=None,
                  suppress_health_check=[HealthCheck.function_scoped_fixture])


@_PROPS
@given(text=st.text(alphabet=st.sampled_from(ALPHABET), max_size=80))
def test_property_round_trip_char(toks, text):
    tok = toks["char"]
    ids = tok.encode(text)
    assert len(ids) == len(text)
    assert tok.decode(ids) == text


@pytest.mark.slow
@_PROPS
@given(text=_ANY_TEXT)
def test_property_round_trip_byte(toks, text):
    tok = toks["byte"]
    ids = tok.encode(text)
    assert len(ids) == len(text.encode("utf-8"))
    assert tok.decode(ids) == text


@_PROPS
@given(text=_SUBWORD_TEXT)
def test_property_round_trip_bpe(toks, text):
    assert toks["bpe"].decode(toks["bpe"].encode(text)) == text


@_PROPS
@given(text=_SUBWORD_TEXT)
def test_property_round_trip_unigram(toks, text):
    assert toks["unigram"].decode(toks["unigram"].encode(text)) == text


# ----------------------------------------------------------------------------- streaming decode

@pytest.mark.parametrize("name", sorted(SAMPLES))
@pytest.mark.parametrize("kind", ALL)
def test_stream_decoder_samples(toks, kind, name):
    tok = toks[kind]
    text = SAMPLES[name] if kind != "char" else _char_sample(SAMPLES[name], set(ALPHABET))
    chunks = _stream(tok, tok.encode(text))
    assert "".join(chunks) == text
    assert not any("\ufffd" in c for c in chunks)


@pytest.mark.parametrize("kind", ("byte", "bpe", "unigram"))
def test_stream_decoder_holds_back_partial_characters(toks, kind):
    """A 4-byte emoji never seen in training arrives as byte pieces: nothing until the last one."""
    tok = toks[kind]
    ids = tok.encode("😀")
    assert len(ids) == 4  # byte fallback (or bytes): one id per UTF-8 byte
    chunks = _stream(tok, ids)
    assert chunks[:3] == ["", "", ""]
    assert chunks[3] == "😀"
    assert chunks[4] == ""


# U+FFFD in the input is covered by its own test below; the no-U+FFFD property needs it absent.
_STREAM_TEXT = st.text(alphabet=st.characters(codec="utf-8", exclude_characters="\ufffd"), max_size=60)


@pytest.mark.slow
@pytest.mark.parametrize("kind", ["byte", "bpe", "unigram"])
@_PROPS
@given(text=_STREAM_TEXT)
def test_property_stream_decoder(toks, kind, text):
    chunks = _stream(toks[kind], toks[kind].encode(text))
    assert "".join(chunks) == text
    assert not any("\ufffd" in c for c in chunks)


@pytest.mark.slow
@_PROPS
@given(text=st.text(alphabet=st.sampled_from(ALPHABET), max_size=80))
def test_property_stream_decoder_char(toks, text):
    assert "".join(_stream(toks["char"], toks["char"].encode(text))) == text


@pytest.mark.parametrize("kind", SUBWORD)
def test_stream_decoder_literal_replacement_char(toks, kind):
    text = "x\ufffd\ufffdy"
    assert toks[kind].decode(toks[kind].encode(text)) == text  # the plain decode is fine
    assert "".join(_stream(toks[kind], toks[kind].encode(text))) == text


# ----------------------------------------------------------------------------- state

@pytest.mark.parametrize("kind", ALL)
def test_state_round_trip(toks, kind):
    tok = toks[kind]
    state = tok.state()
    buf = io.BytesIO()  # the state lives inside a checkpoint: it must survive a weights-only load
    torch.save(state, buf)
    buf.seek(0)
    tok2 = tokenizer_from_state(torch.load(buf, weights_only=True))
    assert tok2.kind == tok.kind
    assert tok2.vocab_size == tok.vocab_size
    for text in [TRAIN_TEXT, *SAMPLES.values()]:
        if kind == "char":
            text = _char_sample(text, set(ALPHABET))
        a, b = tok.encode(text), tok2.encode(text)
        assert np.array_equal(a, b)
        assert tok2.decode(b) == text


def test_state_of_a_different_fit_encodes_differently(toks):
    """The state comparison above is meaningful: a tokenizer fitted on other text differs."""
    other = fit_tokenizer("bpe", TRAIN_TEXT.upper(), vocab_size=360)
    twin = tokenizer_from_state(other.state())
    assert not np.array_equal(twin.encode(_EN), toks["bpe"].encode(_EN))


def test_tokenizer_from_state_rejects_garbage():
    with pytest.raises(CharrnnError):
        tokenizer_from_state({"kind": "nonsense"})
    with pytest.raises(CharrnnError):
        tokenizer_from_state({"kind": "bpe", "model": torch.zeros(10, dtype=torch.uint8)})


# ----------------------------------------------------------------------------- unknown chars, dtypes

def test_char_unknown_raises_naming_the_chars(toks):
    tok = toks["char"]
    with pytest.raises(CharrnnError) as exc:
        tok.encode("the dog Ω and ש")
    msg = str(exc.value)
    assert "'Ω'" in msg and "'ש'" in msg
    assert "2 character" in msg


def test_char_unknown_with_hint(toks):
    with pytest.raises(CharrnnError, match="use bytes"):
        toks["char"].encode("Ω", hint="use bytes")


def test_char_skip_unknown_drops_them(toks):
    tok = toks["char"]
    ids = tok.encode("Ωthe 狗 dogש", skip_unknown=True)  # 狗 is not in TRAIN_TEXT either
    assert "狗" not in TRAIN_TEXT
    assert tok.decode(ids) == "the  dog"
    assert np.array_equal(ids, tok.encode("the  dog"))


def test_char_unknown_beyond_the_largest_codepoint(toks):
    """A character above every known code point (searchsorted's end) is unknown, not clipped."""
    tok = toks["char"]
    top = chr(int(tok.codepoints[-1]) + 1)
    with pytest.raises(CharrnnError):
        tok.encode("a" + top)
    assert tok.decode(tok.encode("a" + top, skip_unknown=True)) == "a"


@pytest.mark.parametrize("kind", ALL)
@pytest.mark.parametrize("text", ["", "hello 世界 🎉"])
def test_encode_returns_numpy_int_array(toks, kind, text):
    if kind == "char":
        text = _char_sample(text, set(ALPHABET))
    ids = toks[kind].encode(text)
    assert isinstance(ids, np.ndarray)
    assert ids.ndim == 1
    assert np.issubdtype(ids.dtype, np.integer)
    assert ((ids >= 0) & (ids < toks[kind].vocab_size)).all()  # every id in the vocabulary (none: vacuous)


def test_char_vocabulary_is_the_sorted_set_of_characters(toks):
    tok = toks["char"]
    assert tok.vocab_size == len(ALPHABET)
    assert tok.decode(np.arange(tok.vocab_size)) == "".join(ALPHABET)


# ----------------------------------------------------------------------------- speed

def test_large_chinese_alphabet_is_fast():
    rng = np.random.default_rng(0)
    alphabet = np.arange(0x4E00, 0x4E00 + 3500, dtype=np.uint32)
    n = 350_000  # ~1 MB of UTF-8
    cps = np.concatenate([alphabet, rng.choice(alphabet, n - len(alphabet))])
    text = cps.astype("<u4").tobytes().decode("utf-32-le")
    assert len(text.encode("utf-8")) > 1_000_000
    t0 = time.perf_counter()
    tok = CharTokenizer.fit(text)
    ids = tok.encode(text)
    elapsed = time.perf_counter() - t0
    assert tok.vocab_size == 3500
    assert len(ids) == n
    assert np.array_equal(ids, np.searchsorted(alphabet, cps))
    assert tok.decode(ids) == text
    assert elapsed < 2.0, f"fit+encode of ~1 MB took {elapsed:.2f}s; encode must be vectorized"


def test_bpe_fits_on_text_without_newlines():
    """text8 is one line: sentencepiece would skip it whole (over its 64 KiB sentence limit) and fit
    nothing; the line is fed as sentences cut before a word's space."""
    import random

    rng = random.Random(0)
    text = " ".join(rng.choice(["anarchism", "originated", "as", "a", "term", "of", "abuse"]) for _ in range(40_000))
    assert "\n" not in text and len(text.encode()) > 1 << 16
    tok = fit_tokenizer("bpe", text, 300)
    ids = tok.encode(text[:5000])
    assert tok.decode(ids) == text[:5000]
    assert len(ids) < 5000 / 3  # merges were learned: far fewer pieces than characters
