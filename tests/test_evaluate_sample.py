"""Evaluation metrics checked against hand computations; generation: seeds, primes, greedy recall."""

from __future__ import annotations

import math
import time

import numpy as np
import pytest
import torch
import torch.nn.functional as F

import charrnn.evaluation.evaluate as ev
from charrnn.data.batching import eval_layout as real_eval_layout, eval_plan as real_eval_plan
from charrnn.errors import CharrnnError
from charrnn.evaluation.evaluate import evaluate_split, metrics, score
from charrnn.model.network import RNNLM
from charrnn.generation.sample import generate
from charrnn.data.tokenizers import fit_tokenizer
from tests.conftest import CONTEXT_TEXT as TEXT, context_model as _model, fading_model
from tests.conftest import make_model

CPU = torch.device("cpu")


pytestmark = pytest.mark.usefixtures("one_thread")


@torch.no_grad()
def _nll_direct(model: RNNLM, ids: np.ndarray, boundaries=None) -> float:
    """Sum of -log p(ids[i+1] | ids[..i]) in one forward per segment; state reset at boundaries.

    ``boundaries`` are target positions (indices into ids[1:]) where a fresh state starts.
    """
    n = len(ids) - 1
    cuts = [0, *(boundaries or []), n]
    total = 0.0
    for lo, hi in zip(cuts[:-1], cuts[1:]):
        seg = torch.as_tensor(ids[lo:hi + 1], dtype=torch.long).view(1, -1)
        logits, _ = model(seg[:, :-1])
        total += F.cross_entropy(logits[0].double(), seg[0, 1:], reduction="sum").item()
    return total


@pytest.fixture(scope="module")
def char_tok():
    return fit_tokenizer("char", TEXT)


@pytest.fixture(scope="module")
def bpe_tok():
    return fit_tokenizer("bpe", TEXT, vocab_size=400)


# ----------------------------------------------------------------------------- metrics

def test_metrics_formulas():
    m = metrics(nll=1234.5, n_tokens=1000, n_chars=1500, n_bytes=2100)
    assert m["loss"] == pytest.approx(1.2345)
    assert m["perplexity"] == pytest.approx(math.exp(1.2345))
    assert m["bpc"] == pytest.approx(1234.5 / math.log(2) / 1500)
    assert m["bpb"] == pytest.approx(1234.5 / math.log(2) / 2100)
    assert (m["tokens"], m["chars"], m["bytes"]) == (1000, 1500, 2100)


@pytest.mark.numerics
@pytest.mark.parametrize("kind", ["char", "bpe"])
def test_evaluate_split_matches_hand_computation(kind, char_tok, bpe_tok):
    tok = char_tok if kind == "char" else bpe_tok
    text = TEXT[:1500]
    ids = tok.encode(text)
    assert len(ids) - 1 < 4096 * 2  # one eval stream: no state reset anywhere
    model = _model(tok.vocab_size, seed=3)
    m = evaluate_split(model, tok, ids, len(text), len(text.encode("utf-8")), CPU)

    nll = _nll_direct(model, ids)
    first_chars = len(text) - len(tok.decode(ids[1:]))        # characters of the unpredicted token
    first_bytes = len(text.encode()) - len(tok.decode(ids[1:]).encode())
    if kind == "char":
        assert first_chars == 1
        assert len(ids) == len(text)
    else:
        assert len(ids) < 0.8 * len(text)                      # tokens != chars
        assert first_chars >= 2                                 # and the correction is non-trivial
    assert m["tokens"] == len(ids) - 1
    # evaluate's float32 windows against the direct float64 sum of the fused model's float32 NLLs: ~sqrt(n) eps
    # relative, n <= 1,000 tokens: 4e-6
    assert m["loss"] == pytest.approx(nll / (len(ids) - 1), rel=1e-5)
    # both float64 from the same loss: exact up to exp's last bit
    assert m["perplexity"] == pytest.approx(math.exp(m["loss"]), rel=1e-9)
    assert m["bpc"] == pytest.approx(nll / math.log(2) / (len(text) - first_chars), rel=1e-5)
    assert m["bpb"] == pytest.approx(nll / math.log(2) / (len(text.encode()) - first_bytes), rel=1e-5)
    assert m["chars"] == len(text) - first_chars
    if kind == "char":
        assert m["bpc"] == pytest.approx(m["loss"] / math.log(2), rel=1e-5)
    else:
        # per-token loss and per-char bits differ by the characters per token
        assert m["bpc"] == pytest.approx(m["loss"] / math.log(2) * m["tokens"] / m["chars"], rel=1e-5)


@torch.no_grad()
def _nll_warmed(model: RNNLM, ids: np.ndarray, boundaries, warm: int, fresh=()) -> float:
    """Like _nll_direct, but at each boundary b the state is the one after reading ids[b - warm : b]
    from a fresh state (the warm-up), not a fresh state; at the cuts in ``fresh`` a fresh state."""
    n = len(ids) - 1
    cuts = sorted({0, *boundaries, *fresh, n})
    total = 0.0
    for lo, hi in zip(cuts[:-1], cuts[1:]):
        state = None
        if lo > 0 and warm and lo not in fresh:
            _, state = model(torch.as_tensor(ids[lo - warm:lo], dtype=torch.long).view(1, -1))
        seg = torch.as_tensor(ids[lo:hi + 1], dtype=torch.long).view(1, -1)
        logits, _ = model(seg[:, :-1], state)
        total += F.cross_entropy(logits[0].double(), seg[0, 1:], reduction="sum").item()
    return total


@pytest.mark.slow
@pytest.mark.numerics
@pytest.mark.parametrize("kind", ["char", "bpe"])
@pytest.mark.parametrize("max_streams,min_len,window,warm", [(5, 50, 37, 30), (3, 100, 512, 1000), (7, 20, 1, 20)])
def test_score_warms_each_stream_on_the_text_before_its_cut(monkeypatch, kind, char_tok, bpe_tok,
                                                            max_streams, min_len, window, warm):
    tok = char_tok if kind == "char" else bpe_tok
    ids = tok.encode(TEXT[:1200])
    model = _model(tok.vocab_size, seed=4)
    monkeypatch.setattr(ev, "eval_plan", lambda i, **kw: real_eval_plan(i, **{
        **kw, "max_streams": max_streams, "min_len": min_len}))
    monkeypatch.setattr(ev, "EVAL_WINDOW", window)
    monkeypatch.setattr(ev, "EVAL_WARM", warm)
    total, count = score(model, ids, CPU)
    x, _, ctx = real_eval_layout(ids, max_streams=max_streams, min_len=min_len, warm=warm)
    s, length = x.shape
    assert s > 1 and ctx.shape[1] == min(warm, length)  # (3, 100, 512, 1000): the warm-up is the whole stream before
    boundaries = [r * length for r in range(1, s)]
    assert count == len(ids) - 1
    # float32 passes against a float64 sum of one forward per segment: 1e-2 nats over ~1200 tokens
    assert total == pytest.approx(_nll_warmed(model, ids, boundaries, ctx.shape[1]), rel=0, abs=1e-2)
    # sensitivity: the warm-up matters (a fresh state at each cut scores differently) ...
    assert abs(total - _nll_direct(model, ids, boundaries)) > 1.0
    # ... and the state is carried from window to window inside a stream
    window_cuts = [c for c in range(window, len(ids) - 1, window) if c % length]
    if window_cuts:
        assert abs(total - _nll_warmed(model, ids, boundaries, ctx.shape[1], fresh=window_cuts)) > 1.0


@pytest.mark.numerics
def test_score_default_layout_multi_stream(char_tok):
    """The real layout on a text long enough for two streams (> 2 x 4096 tokens), warmed on EVAL_WARM tokens."""
    ids = char_tok.encode(TEXT * 2)
    assert len(ids) - 1 >= 2 * 4096
    model = _model(char_tok.vocab_size, seed=5, hidden=16)
    total, count = score(model, ids, CPU)
    x, _, ctx = real_eval_layout(ids, warm=ev.EVAL_WARM)
    assert x.shape[0] == 2 and ctx.shape[1] == ev.EVAL_WARM
    assert count == len(ids) - 1
    assert total == pytest.approx(_nll_warmed(model, ids, [x.shape[1]], ev.EVAL_WARM), rel=0, abs=5e-2)
    assert abs(total - _nll_direct(model, ids, [x.shape[1]])) > 1.0


@pytest.fixture(scope="module")
def long_text():
    """About 200k characters of shuffled words: many streams, each warmed on the text before it."""
    words = TEXT.replace("\n", " \n ").split(" ")
    return " ".join(np.random.default_rng(0).choice(words, 50_000))[:200_001]


def test_batched_score_equals_one_pass_over_the_whole_text(long_text, monkeypatch):
    tok = fit_tokenizer("char", long_text)
    ids = tok.encode(long_text)
    n, forget, hidden = len(ids) - 1, 0.95, 16
    model = fading_model(tok.vocab_size, hidden, forget)
    x, _, ctx = real_eval_layout(ids, warm=ev.EVAL_WARM)
    assert n >= 200_000 and x.shape[0] == 32 and ctx.shape[1] == ev.EVAL_WARM
    one_each = ev.token_nlls(model, ids, CPU, one_stream=True)  # every target given everything before it
    one, count = float(one_each.sum()), len(one_each)
    batched, count_b = score(model, ids, CPU)
    assert count == count_b == n
    # The tolerance, 1e-3 nats/token, is what the warm-up promises (evaluate.EVAL_WARM). For this model the
    # warm-up's residual is bounded: at t tokens past a cut the two cell states differ by at most
    # f^(W+t) / (1 - f) per unit, the hidden states by sqrt(H) times that in norm, and a token's nll by at
    # most 2 max_v |w_v| |dh|, so a cut adds at most 2 max_v |w_v| sqrt(H) f^W / (1 - f)^2 nats in all.
    w_max = float(model.head.weight.detach().norm(dim=1).max())
    per_cut = 2 * w_max * math.sqrt(hidden) * forget ** ev.EVAL_WARM / (1 - forget) ** 2
    assert per_cut * (x.shape[0] - 1) / n < 1e-4  # well inside 1e-3; the rest is float32 rounding (~1e-6 relative)
    assert abs(batched - one) / n < 1e-3
    # the --eval-tokens blocks too: each is warmed on the tokens before it (starts as batching lays them out)
    limit = 16_384
    bx, _, bctx = real_eval_layout(ids, limit=limit, warm=ev.EVAL_WARM)
    s, length = bx.shape
    starts = [(n - length) * i // (s - 1) for i in range(s)]
    assert s > 1 and bctx.shape[1] == ev.EVAL_WARM
    assert all(np.array_equal(bx[i].numpy(), ids[a:a + length]) for i, a in enumerate(starts))
    blocks, count_l = score(model, ids, CPU, limit=limit)
    want = sum(float(one_each[a:a + length].sum()) for a in starts)
    assert count_l == s * length and abs(blocks - want) / count_l < 1e-3
    # sensitivity: a fresh state at each cut (the layout before the warm-up) misses by more than that
    monkeypatch.setattr(ev, "EVAL_WARM", 0)
    cold, _ = score(model, ids, CPU)
    assert abs(cold - one) / n > 1e-3
    assert abs(score(model, ids, CPU, limit=limit)[0] - want) / count_l > 1e-3


@pytest.mark.numerics
def test_bpb_first_token_is_a_byte_fallback_piece(bpe_tok):
    text = "Ж" + TEXT[:300]  # Cyrillic: never seen in training, so it starts with two byte pieces
    ids = bpe_tok.encode(text)
    assert bpe_tok.sp.IsByte(int(ids[0])) and bpe_tok.sp.IsByte(int(ids[1]))
    model = _model(bpe_tok.vocab_size, seed=13)
    n_bytes = len(text.encode("utf-8"))
    m = evaluate_split(model, bpe_tok, ids, len(text), n_bytes, CPU)
    nll = _nll_direct(model, ids)
    assert m["bpb"] == pytest.approx(nll / math.log(2) / (n_bytes - 1), rel=1e-5)  # only byte 0 is unscored


def test_score_restores_training_mode(char_tok):
    model = _model(char_tok.vocab_size)
    model.train()
    score(model, char_tok.encode(TEXT[:100]), CPU)
    assert model.training


# ----------------------------------------------------------------------------- generate

def _gen(model, tok, **kw) -> list[str]:
    return list(generate(model, tok, **kw))


@pytest.mark.numerics
def test_same_seed_same_text_different_seed_different_text(char_tok):
    model = _model(char_tok.vocab_size, seed=6, sharpen=1.0)
    a = "".join(_gen(model, char_tok, length=60, temperature=1.0, seed=11))
    b = "".join(_gen(model, char_tok, length=60, temperature=1.0, seed=11))
    c = "".join(_gen(model, char_tok, length=60, temperature=1.0, seed=12))
    assert len(a) == 60
    assert a == b
    assert a != c


def test_unseeded_sampling_varies_but_greedy_is_deterministic(char_tok):
    model = _model(char_tok.vocab_size, seed=7, sharpen=1.0)
    hot = {"".join(_gen(model, char_tok, length=60, temperature=1.0)) for _ in range(3)}
    assert len(hot) > 1
    greedy = {"".join(_gen(model, char_tok, length=60, temperature=0.0, prime="the")) for _ in range(3)}
    assert len(greedy) == 1
    # greedy is the argmax path, which top_k=1 sampling must reproduce at any temperature/seed
    top1 = "".join(_gen(model, char_tok, length=60, temperature=2.0, top_k=1, seed=3, prime="the"))
    assert top1 == greedy.pop()


def test_unseeded_generate_leaves_global_rng_alone(char_tok):
    model = _model(char_tok.vocab_size, seed=14)
    torch.manual_seed(123)
    expected = torch.rand(3)
    torch.manual_seed(123)
    _gen(model, char_tok, length=5, temperature=1.0)
    assert torch.equal(torch.rand(3), expected)


def test_prime_is_yielded_first(char_tok):
    model = _model(char_tok.vocab_size, seed=8)
    chunks = _gen(model, char_tok, length=25, prime="the quick", seed=0)
    assert chunks[0] == "the quick"
    assert len("".join(chunks[1:])) == 25   # char tokenizer: one character per new token


def test_chinese_prime(char_tok):
    model = _model(char_tok.vocab_size, seed=9)
    chunks = _gen(model, char_tok, length=20, prime="举头望明月", seed=1)
    assert chunks[0] == "举头望明月"
    rest = "".join(chunks[1:])
    assert len(rest) == 20 and set(rest) <= set(TEXT)


def test_unknown_prime_char_raises_and_skip_unknown_drops_it(char_tok):
    model = _model(char_tok.vocab_size, seed=10)
    with pytest.raises(CharrnnError) as exc:
        _gen(model, char_tok, length=5, prime="the Ω fox")
    assert "Ω" in str(exc.value)
    chunks = _gen(model, char_tok, length=5, prime="the Ω fox", skip_unknown=True, seed=0)
    assert chunks[0] == "the  fox"
    assert len("".join(chunks[1:])) == 5
    with pytest.raises(CharrnnError):  # nothing left of the prime
        _gen(model, char_tok, length=5, prime="ΩЖ", skip_unknown=True)


def test_length_zero_yields_only_the_prime(char_tok):
    model = _model(char_tok.vocab_size, seed=11)
    assert _gen(model, char_tok, length=0, prime="明月", seed=0) == ["明月"]
    assert _gen(model, char_tok, length=0, seed=0) == []


def test_generate_with_bpe_yields_text(bpe_tok):
    model = _model(bpe_tok.vocab_size, seed=12, sharpen=1.0)
    chunks = _gen(model, bpe_tok, length=30, prime="the quick", seed=0, temperature=0.0)
    assert chunks[0] == "the quick"
    assert all(isinstance(c, str) and c for c in chunks)


@pytest.mark.numerics
def test_overfit_then_greedy_generation_reproduces_the_text():
    text = "the cat sat on a mat, 猫在垫子上 ok!\n"  # ~40 characters, some repeated
    assert 30 <= len(text) <= 45
    tok = fit_tokenizer("char", text)
    model = make_model(tok.vocab_size, "lstm", layers=1, hidden=64, emb=32, seed=0, dropout=0.0).train()
    seq = torch.as_tensor(tok.encode(text * 3), dtype=torch.long).view(1, -1)
    x, y = seq[:, :-1], seq[:, 1:]
    opt = torch.optim.Adam(model.parameters(), lr=1e-2)
    model.train()
    loss = float("inf")
    for step in range(600):
        logits, _ = model(x)
        loss_t = F.cross_entropy(logits.reshape(-1, tok.vocab_size), y.reshape(-1))
        opt.zero_grad()
        loss_t.backward()
        opt.step()
        loss = loss_t.item()
        if loss < 0.05:
            break
    assert loss < 0.05, f"did not overfit: loss {loss:.3f} after {step + 1} steps"

    out = "".join(generate(model, tok, length=2 * len(text) + 10, temperature=0.0, prime=text[0]))
    expected = (text * 3)[:len(out)]
    assert out.startswith(text[0])
    prefix = 0
    while prefix < len(out) and out[prefix] == expected[prefix]:
        prefix += 1
    assert prefix >= 2 * len(text), f"only {prefix} characters reproduced: {out!r}"


def test_an_evaluation_past_its_deadline_scores_the_first_window_of_every_stream(char_tok):
    ids = char_tok.encode(TEXT * 3)
    model = _model(char_tok.vocab_size, seed=6, hidden=16)
    x, y, _ = real_eval_layout(ids, warm=ev.EVAL_WARM)
    first = y[:, :ev.EVAL_WINDOW]
    total, count = score(model, ids, CPU, deadline=0.0)  # long past: one window, then no more
    assert x.shape[0] > 1 and count == int((first >= 0).sum()) < len(ids) - 1
    whole, n = score(model, ids, CPU, deadline=time.perf_counter() + 3600)
    assert n == len(ids) - 1 and 0 < total < whole
    m = evaluate_split(model, char_tok, ids, len(ids), len(ids), CPU, deadline=0.0)
    assert m["tokens"] == count and m["chars"] == count  # a part of the split: its share of the characters
