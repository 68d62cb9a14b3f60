"""Sampling features on small random models: top-p, N parallel streams in one batch, stop strings,
line limits, line-start constraints with every tokenizer, beam search, and honest log-probabilities."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

import charrnn.generation.sample as sm
from charrnn.errors import CharrnnError
from charrnn.model.network import RNNLM
from charrnn.generation.draw import choose
from charrnn.generation.sample import Job, sample_options
from charrnn.data.tokenizers import fit_tokenizer
from tests.conftest import make_model

pytestmark = pytest.mark.usefixtures("one_thread")

TEXT = ("the quick brown fox jumps over the lazy dog.\npack my box with five dozen liquor jugs!\n"
        "床前明月光，疑是地上霜。\n举头望明月，低头思故乡。\n春眠不觉晓，处处闻啼鸟。\n夜来风雨声，花落知多少。\n") * 20


@pytest.fixture(scope="module")
def toks():
    return {"char": fit_tokenizer("char", TEXT), "byte": fit_tokenizer("byte", TEXT),
            "bpe": fit_tokenizer("bpe", TEXT, vocab_size=300)}


def _model(tok, seed=0, newline_bias=0.0, cell="lstm") -> RNNLM:
    m = make_model(tok.vocab_size, cell, layers=2, hidden=32, emb=16, seed=seed, dropout=0.0)
    with torch.no_grad():
        m.head.weight.mul_(3.0)
        m.head.bias.normal_(0, 1.0)
        m.head.bias[int(tok.encode("\n")[0])] += newline_bias
    return m.eval()


def _job(model, tok, prime="", **options) -> Job:
    return Job(model, tok, prime, sample_options(options))


def _samples(model, tok, prime="", **options):
    return list(_job(model, tok, prime, **options).samples())


def _text(model, tok, prime="", **options) -> str:
    (s,) = _samples(model, tok, prime, **options)
    return s.text


@torch.no_grad()
def _model_logprob(model, tok, prime_ids, text_ids) -> float:
    """Sum of log p(text | prime) by one fused forward pass (teacher forcing)."""
    ids = torch.as_tensor(np.concatenate([prime_ids, text_ids]), dtype=torch.long).view(1, -1)
    logp, _ = model(ids[:, :-1])
    return float(logp[0, len(prime_ids) - 1:].double().gather(-1, ids[0, len(prime_ids):, None]).sum())


# ----------------------------------------------------------------------------- temperature, top-k, top-p

def _reference_probs(logp: np.ndarray, temp: float, top_k: int, top_p: float) -> np.ndarray:
    """The sampling distribution written out directly (numpy, one row)."""
    z = logp / temp
    if 0 < top_k < len(z):
        z = np.where(z >= np.sort(z)[-top_k], z, -np.inf)
    p = np.exp(z - z.max())
    p /= p.sum()
    order = np.argsort(-p, kind="stable")
    before = np.cumsum(p[order]) - p[order]  # mass of the more likely tokens
    keep = np.zeros_like(p, dtype=bool)
    keep[order[before < top_p]] = True
    p = np.where(keep, p, 0.0)
    return p / p.sum()


@pytest.mark.numerics
@pytest.mark.parametrize("temp,top_k,top_p", [(1.0, 0, 0.6), (1.0, 0, 0.5), (2.0, 0, 0.7), (0.5, 3, 0.9),
                                              (1.0, 4, 1.0), (1.5, 0, 1.0)])
def test_temperature_top_k_top_p_give_the_reference_distribution(temp, top_k, top_p):
    probs = torch.tensor([0.4, 0.25, 0.15, 0.1, 0.05, 0.03, 0.02])
    logp = probs.log().view(1, -1).expand(20000, -1)
    gen = torch.Generator().manual_seed(0)
    got = np.bincount(choose(logp, temp, top_k, top_p, gen).numpy(), minlength=7) / 20000
    want = _reference_probs(probs.log().numpy().astype(np.float64), temp, top_k, top_p)
    assert set(np.flatnonzero(got)) == set(np.flatnonzero(want))   # exactly the nucleus is sampled
    np.testing.assert_allclose(got, want, atol=0.015)               # in the right proportions


def test_top_p_of_a_tiny_nucleus_is_greedy(toks):
    tok = toks["char"]
    m = _model(tok, seed=1)
    assert _text(m, tok, "the ", length=40, temp=1.0, top_p=1e-6, seed=3) == _text(m, tok, "the ", length=40, temp=0)


# ----------------------------------------------------------------------------- N parallel streams

@pytest.mark.numerics
def test_batched_greedy_streams_equal_single_stream_greedy_runs(toks):
    tok = toks["char"]
    m = _model(tok, seed=2, newline_bias=1.0)
    for prime, opts in (("the ", {}), ("", {"max_lines": 2}), ("举头", {"stop": ("。",)})):
        single = [_text(m, tok, prime, length=60, temp=0, **opts) for _ in range(3)]
        batch = _samples(m, tok, prime, length=60, temp=0, num_samples=5, **opts)
        assert [s.index for s in batch] == [1, 2, 3, 4, 5]
        assert [s.text for s in batch] == [single[0]] * 5 and single == [single[0]] * 3


@pytest.mark.slow
@pytest.mark.numerics
@pytest.mark.parametrize("kind", ["char", "byte", "bpe"])
def test_samples_without_rules_equal_the_per_step_path(toks, kind):
    """Without stop/max-lines/line-starts, samples() gathers tokens in tensors and decodes at the end:
    the very Samples (text, tokens, logprob, end) that the per-step trackers of events() give."""
    tok = toks[kind]
    m = _model(tok, seed=9)
    for prime, opts in (("the ", {"temp": 1.0}), ("", {"temp": 0.7, "top_k": 5}), ("举", {"temp": 0})):
        opts = dict(length=45, num_samples=4, seed=3, **opts)
        fast = _samples(m, tok, prime, **opts)
        slow = [e for e in _job(m, tok, prime, **opts).events() if isinstance(e, sm.Sample)]
        assert fast == sorted(slow, key=lambda s: s.index) and len(fast) == 4


def test_n_samples_are_one_batch_per_step_not_n_runs(toks, monkeypatch):
    tok = toks["char"]
    m = _model(tok, seed=3)
    calls = []
    real = sm.Runner.__call__

    def spy(self, tokens):
        calls.append(tokens.shape[0])
        return real(self, tokens)

    monkeypatch.setattr(sm.Runner, "__call__", spy)
    out = _samples(m, tok, "the ", length=30, num_samples=8, seed=1)
    assert calls == [8] * 30  # one step of all 8 streams per token, not 8 runs
    assert len({s.text for s in out}) == 8 and all(s.tokens == 30 and len(s.text) == 34 for s in out)


@pytest.mark.numerics
def test_seeded_batches_are_reproducible_and_streams_differ(toks):
    tok = toks["char"]
    m = _model(tok, seed=4)
    a = [s.text for s in _samples(m, tok, length=50, num_samples=4, seed=7, temp=1.0)]
    b = [s.text for s in _samples(m, tok, length=50, num_samples=4, seed=7, temp=1.0)]
    c = [s.text for s in _samples(m, tok, length=50, num_samples=4, seed=8, temp=1.0)]
    assert a == b and a != c and len(set(a)) == 4


def test_finished_streams_are_dropped_from_the_batch(toks, monkeypatch):
    tok = toks["char"]
    m = _model(tok, seed=5, newline_bias=2.0)
    sizes = []
    real = sm.Runner.__call__

    def spy(self, tokens):
        sizes.append(tokens.shape[0])
        return real(self, tokens)

    monkeypatch.setattr(sm.Runner, "__call__", spy)
    out = _samples(m, tok, length=200, num_samples=6, max_lines=1, seed=2, temp=1.0)
    assert all(s.end == "max_lines" and s.text.count("\n") == 1 and s.text.endswith("\n") for s in out)
    assert sizes == sorted(sizes, reverse=True) and sizes[-1] < 6 and len(sizes) == max(s.tokens for s in out)


@pytest.mark.numerics
def test_logprob_is_the_models_own_at_temperature_one(toks):
    tok = toks["char"]
    m = _model(tok, seed=6)
    for precision, tol in (("fp32", 1e-3), ("auto", 0.02)):  # auto may be bf16 products: close, not exact
        for s in _samples(m, tok, "the ", length=40, num_samples=3, temp=0.6, top_k=5, seed=1, precision=precision):
            gen_ids = tok.encode(s.text[4:])
            assert s.tokens == len(gen_ids) == 40
            exact = _model_logprob(m, tok, tok.encode("the "), gen_ids)
            # fp32: the stepper's per-step matmuls against the fused model, ~1e-6 per token over 40 tokens of ~2
            # nats: 1e-4, 1e-3 absolute leaves 10x; auto may be bf16 products: 2^-8 per rounding, 2% = 5
            # roundings (see test_stepper)
            assert s.logprob == pytest.approx(exact, abs=1e-3 if precision == "fp32" else None, rel=tol)


# ----------------------------------------------------------------------------- stop strings and line limits

def test_stop_string_ends_the_same_text_where_it_first_appears(toks):
    tok = toks["char"]
    m = _model(tok, seed=7, newline_bias=1.0)
    full = _text(m, tok, "the ", length=150, temp=1.0, seed=5)[4:]
    stop = full[40:42]
    at = full.find(stop)
    kept = _text(m, tok, "the ", length=150, temp=1.0, seed=5, stop=(stop, "never said"))
    stripped = list(_job(m, tok, "the ", length=150, temp=1.0, seed=5, stop=stop, strip_stop=True).pieces())
    assert kept == "the " + full[:at + 2]
    assert "".join(stripped) == "the " + full[:at]  # the stop text was never streamed out


def test_stop_inside_a_multi_character_piece_cuts_the_piece(toks):
    tok = toks["bpe"]
    m = _model(tok, seed=8)
    full = _text(m, tok, "the ", length=60, temp=1.0, seed=1)[4:]
    pieces = [tok.decode([i]) for i in tok.encode(full)]
    long = next(p for p in pieces[3:] if len(p) >= 3)
    stop = long[1:]
    out = _text(m, tok, "the ", length=60, temp=1.0, seed=1, stop=stop)
    assert out == "the " + full[:full.find(stop) + len(stop)]


def test_max_lines(toks):
    tok = toks["char"]
    m = _model(tok, seed=9, newline_bias=1.5)
    full = _text(m, tok, "the", length=300, temp=1.0, seed=2)
    assert full.count("\n") >= 3
    out = _samples(m, tok, "the", length=300, temp=1.0, seed=2, max_lines=3)[0]
    cut = [i for i, c in enumerate(full) if c == "\n"][2]
    assert out.text == full[:cut + 1] and out.end == "max_lines"


# ----------------------------------------------------------------------------- line starts

@pytest.mark.parametrize("kind", ["char", "byte", "bpe"])
def test_line_starts_begin_every_line_and_end_after_the_last(toks, kind):
    tok = toks[kind]
    m = _model(tok, seed=10, newline_bias=2.5)
    for s in _samples(m, tok, length=400, num_samples=3, seed=4, line_starts="春花夜处", temp=1.0):
        lines = s.text.split("\n")
        assert s.end == "line_starts", s.text
        assert lines[-1] == "" and [ln[:1] for ln in lines[:-1]] == list("春花夜处"), s.text


def test_line_starts_after_a_prime_mid_line_begin_at_the_next_line(toks):
    tok = toks["char"]
    m = _model(tok, seed=11, newline_bias=2.5)
    text = _text(m, tok, "床前", length=300, seed=1, line_starts="举低")
    first, *rest = text.split("\n")
    assert first.startswith("床前") and [ln[:1] for ln in rest[:-1]] == ["举", "低"] and rest[-1] == ""
    text = _text(m, tok, "床前\n", length=300, seed=1, line_starts="举低")
    assert [ln[:1] for ln in text.split("\n")[1:-1]] == ["举", "低"]


def test_line_starts_with_an_unknown_character_fail_before_any_output(toks):
    tok = toks["char"]
    with pytest.raises(CharrnnError, match="'Ω' is not in the model's vocabulary"):
        _job(_model(tok), tok, line_starts="春Ω")


# ----------------------------------------------------------------------------- beam search

def _beam(m, tok, prime, k, **opts):
    return _samples(m, tok, prime, beam=k, **opts)


@pytest.mark.slow
@pytest.mark.numerics
@pytest.mark.parametrize("seed", [12, 13, 14])
def test_beam_beats_greedy_and_beam_1_is_greedy(toks, seed):
    tok = toks["char"]
    m = _model(tok, seed=seed)
    exact = {"precision": "fp32"}  # scores compared with the fused fp32 model's to 1e-3 (auto may be bf16)
    greedy = _samples(m, tok, "the ", length=40, temp=0, **exact)[0]
    (one,) = _beam(m, tok, "the ", 1, length=40, **exact)
    # beam 1 and greedy step the same fp32 stepper over 40 tokens; their scores are summed in float64 (beam) and
    # float32: ~40 * 2 nats * 1.2e-7 = 1e-5
    assert (one.text, one.logprob) == (greedy.text, pytest.approx(greedy.logprob, abs=1e-4))
    # Beam rows and the single greedy row may be multiplied by different kernels (the fastest for each
    # row count, kernels.py), which agree to float rounding: each step's log-probabilities agree with
    # the fused model's to 1e-5 (test_stepper.py), so 40 of them summed to 40 * 1e-5.
    slack = 40 * 1e-5
    for k in (2, 4, 8):
        (best,) = _beam(m, tok, "the ", k, length=40, **exact)
        assert best.tokens == 40
        assert best.logprob >= greedy.logprob - slack
        assert best.logprob == pytest.approx(_model_logprob(m, tok, tok.encode("the "), tok.encode(best.text[4:])),
                                             abs=1e-3)


@pytest.mark.numerics
def test_beam_gives_the_m_best_distinct_beams_deterministically(toks):
    tok = toks["char"]
    m = _model(tok, seed=15)
    a = _beam(m, tok, "the ", 5, length=30, num_samples=3)
    b = _beam(m, tok, "the ", 5, length=30, num_samples=3, seed=99, temp=1.5)  # no randomness, no temperature
    assert [(s.index, s.text) for s in a] == [(s.index, s.text) for s in b] and [s.index for s in a] == [1, 2, 3]
    assert len({s.text for s in a}) == 3
    assert a[0].logprob >= a[1].logprob >= a[2].logprob


def test_beam_with_endings_and_line_starts(toks):
    tok = toks["char"]
    m = _model(tok, seed=16, newline_bias=2.0)
    greedy = _samples(m, tok, "", length=200, temp=0, line_starts="春花")[0]
    best, second = _beam(m, tok, "", 4, length=200, num_samples=2, line_starts="春花")
    assert best.end == "line_starts" and [ln[:1] for ln in best.text.split("\n")] == ["春", "花", ""]
    assert best.logprob >= greedy.logprob - 1e-6 and best.logprob >= second.logprob
    starts = [ln[:1] for ln in second.text.split("\n") if ln]  # it may have run out of --length first
    assert starts == ["春", "花"][:len(starts)]
    for s in _beam(m, tok, "the", 3, length=200, stop="o", strip_stop=True):
        assert "o" not in s.text[3:] and s.end in ("stop", "length")


def test_beam_options_that_do_not_apply_are_refused(toks):
    tok = toks["char"]
    m = _model(tok)
    with pytest.raises(CharrnnError, match="--top-p does not apply to --beam"):
        _job(m, tok, beam=3, top_p=0.5)
    with pytest.raises(CharrnnError, match="--num-samples 4 is more than --beam 3"):
        _job(m, tok, beam=3, num_samples=4)


def test_length_zero(toks):
    tok = toks["char"]
    m = _model(tok)
    assert [s.text for s in _samples(m, tok, "the", length=0, num_samples=2)] == ["the", "the"]
    assert _beam(m, tok, "the", 2, length=0)[0].text == "the"
    assert math.isclose(_samples(m, tok, "the", length=0)[0].logprob, 0.0)
