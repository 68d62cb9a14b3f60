"""Dynamic evaluation: every token is scored before the model trains on it, the weights come back
unchanged, lr 0 is the static one-stream score, and bad values are one-line errors."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

import charrnn
import charrnn.evaluation.dynamic as dyn
from charrnn.system import device as runtime
from charrnn.evaluation.dynamic import apply_update, dynamic_nlls
from charrnn.evaluation.evaluate import evaluate_split, token_nlls
from charrnn.data.tokenizers import fit_tokenizer
from tests.conftest import CONTEXT_TEXT as TEXT, context_model as _model, snapshot
from tests.conftest import make_model

CPU = torch.device("cpu")
SEG = 16

pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.fixture(scope="module")
def tok():
    return fit_tokenizer("char", TEXT)


def _weights(model) -> dict:
    return {k: v.clone() for k, v in model.state_dict().items()}


def _same(a: dict, b: dict) -> bool:
    return a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)


def _pairs(V: int, pairs: int = 6) -> np.ndarray:
    """ids: one start token, then segments of one repeated token, each segment twice: aaaa aaaa bbbb
    bbbb ...; with --dyn-seq SEG every segment of targets (target i is ids[i + 1]) is one of them."""
    tokens = np.random.default_rng(0).permutation(V)[:pairs]
    return np.concatenate([[0], *[np.full(SEG, t) for t in tokens for _ in (0, 1)]]).astype(np.int64)


def _per_segment(nll: np.ndarray) -> np.ndarray:
    return nll.reshape(-1, SEG).mean(1)


LEAK_LR = 3.0  # one step on a segment all but memorises it (the second copies show it)


@pytest.mark.numerics
def test_no_token_is_scored_after_training_on_it(tok):
    """Each segment appears twice in a row. One step on a segment makes the model all but certain
    of it, which the second copies show; the first copies stay as surprising as without adapting
    (more: the model has just learnt to expect the previous token). Had a segment's step come
    before its scoring, the first copies would be near-certain too: the leaky order below, run on
    the same model, fails the same check."""
    model = _model(tok.vocab_size, seed=31, sharpen=1.0, memory=1.0)
    ids = _pairs(tok.vocab_size)
    static = _per_segment(token_nlls(model, ids, CPU, one_stream=True))

    def first_copies_unlearnt(per_segment) -> bool:
        return (per_segment[0] == pytest.approx(static[0], rel=1e-6)              # nothing learnt before segment 1
                and per_segment[2::2].mean() > 0.8 * static[2::2].mean())

    dynamic = _per_segment(dynamic_nlls(model, ids, CPU, lr=LEAK_LR, seq=SEG))
    assert dynamic[1::2].mean() < 0.25 * static[1::2].mean()  # the steps are strong enough to reveal a leak
    assert first_copies_unlearnt(dynamic)
    leaky = _per_segment(_leaky_nlls(model, ids, LEAK_LR))
    assert not first_copies_unlearnt(leaky)


def _leaky_nlls(model, ids, lr) -> np.ndarray:
    """The wrong order, for the test above: step on a segment, then score it (state carried the same way)."""
    params = [p for p in model.parameters()]
    saved = [p.detach().clone() for p in params]
    x = torch.as_tensor(ids).view(1, -1)
    out, state = [], None
    for s in range(0, len(ids) - 1, SEG):
        xb, yb = x[:, s:s + SEG], x[:, s + 1:s + SEG + 1]
        nll, _ = model.token_nll(xb, yb, state)
        apply_update(params, torch.autograd.grad(nll.mean(), params, allow_unused=True), saved, lr, 0.0)
        with torch.no_grad():
            nll, state = model.token_nll(xb, yb, state)
        out.append(nll[0].double().numpy())
    with torch.no_grad():
        for p, p0 in zip(params, saved):
            p.copy_(p0)
    return np.concatenate(out)


def test_each_segment_is_scored_by_the_weights_before_its_own_step(tok, monkeypatch):
    """Instrumented: when segment k is scored, exactly k steps (on segments 0..k-1) have been taken."""
    model = _model(tok.vocab_size, seed=32)
    ids = tok.encode(TEXT[:200])
    steps, scored_after = [], []
    real_update, real_nll = dyn.apply_update, model.token_nll

    def counting_update(*a):
        steps.append(len(scored_after))
        real_update(*a)

    def recording_nll(x, y, state=None):
        scored_after.append(len(steps))
        return real_nll(x, y, state)

    monkeypatch.setattr(dyn, "apply_update", counting_update)
    monkeypatch.setattr(model, "token_nll", recording_nll)
    each = dynamic_nlls(model, ids, CPU, lr=0.5, seq=30)
    n_seg = -(-(len(ids) - 1) // 30)
    assert scored_after == list(range(n_seg))            # segment k scored after k steps
    assert steps == list(range(1, n_seg))                 # step k after segment k was scored; none after the last
    # total=True (what evaluate reads: nothing per token): the same float32 NLLs, summed per segment in float64
    # on the device rather than all at once, ~1e-15 relative
    total, count = dynamic_nlls(model, ids, CPU, lr=0.5, seq=30, total=True)
    assert count == len(each) == len(ids) - 1 and total == pytest.approx(float(each.sum()), rel=1e-12)


@pytest.mark.slow
@pytest.mark.numerics
def test_lr_zero_is_the_static_one_stream_score_and_dropout_is_off(tok):
    model = make_model(tok.vocab_size, layers=2, hidden=24, emb=8, seed=0, dropout=0.5).train()
    ids = tok.encode(TEXT[:700])
    static = token_nlls(model, ids, CPU, one_stream=True)
    for seq in (1, 37, 5000):
        # lr 0: the same float32 forward in windows of SEQ against one pass: ~1e-6 per token NLL
        assert dynamic_nlls(model, ids, CPU, lr=0.0, seq=seq) == pytest.approx(static, rel=1e-5, abs=1e-6)
    text = TEXT[:700]
    m_static = evaluate_split(model, tok, ids, len(text), len(text.encode()), CPU)  # < 8192 tokens: one stream
    m_dyn = evaluate_split(model, tok, ids, len(text), len(text.encode()), CPU, dynamic=dict(lr=0.0, seq=20))
    # the same NLLs summed by the same code: equal up to float32 blocking
    assert m_dyn == pytest.approx(m_static, rel=1e-6)
    # must differ: adapting moves the sum by ~1e-2 relative, 100x this
    assert dynamic_nlls(model, ids, CPU, lr=0.05, seq=20).sum() != pytest.approx(static.sum(), rel=1e-4)


def test_weights_and_modes_are_restored_even_when_interrupted(tok, monkeypatch):
    model = make_model(tok.vocab_size, layers=2, hidden=16, emb=8, seed=1, dropout=0.2).train()
    before = _weights(model)
    dynamic_nlls(model, tok.encode(TEXT[:300]), CPU, lr=0.3, seq=20, decay=0.1)
    assert _same(before, _weights(model)) and model.training
    # the model's one dropout (also between the layers: the RNN's own dropout= is 0) restored
    assert model.drop.p == 0.2 and model.rnn.dropout == 0.0 and all(p.grad is None for p in model.parameters())

    calls, real = [], dyn.apply_update

    def interrupt_third(*a):
        calls.append(1)
        if len(calls) == 3:
            raise KeyboardInterrupt
        real(*a)

    monkeypatch.setattr(dyn, "apply_update", interrupt_third)
    model.eval()
    with pytest.raises(KeyboardInterrupt):
        dynamic_nlls(model, tok.encode(TEXT[:300]), CPU, lr=0.3, seq=20)
    assert len(calls) == 3 and _same(before, _weights(model)) and not model.training and model.drop.p == 0.2


def test_update_rule_with_decay():
    p = torch.nn.Parameter(torch.tensor([1.0, -2.0]))
    p0, g = torch.tensor([0.0, 0.0]), torch.tensor([0.5, 1.0])
    apply_update([p], [g], [p0], lr=0.1, decay=0.25)   # theta - lr g + decay (theta_0 - theta)
    assert torch.allclose(p.detach(), torch.tensor([1.0 - 0.05 - 0.25, -2.0 - 0.1 + 0.5]))
    q = torch.nn.Parameter(torch.tensor([3.0]))
    apply_update([q], [None], [torch.tensor([1.0])], lr=0.1, decay=1.0)  # an unused weight still decays
    assert q.item() == 1.0


def test_adaptive_head(tok):
    model = make_model(600, layers=1, hidden=16, emb=8, seed=2, dropout=0.0, head="adaptive",
                       cutoffs=(512,)).train()
    ids = np.random.default_rng(0).integers(0, 520, 400)   # the tail cluster is rarely used: unused gradients
    before = _weights(model)
    nll = dynamic_nlls(model, ids, CPU, lr=0.1, seq=25, decay=0.01)
    assert np.isfinite(nll).all() and _same(before, _weights(model))


BF16_U = 2.0 ** -8  # bf16 keeps 8 significant bits: each rounding is a relative error of at most 2^-8


@pytest.mark.numerics
@pytest.mark.parametrize("onednn", [True, False], ids=["onednn-lstm", "aten-lstm"])
def test_bf16_dynamic_eval_runs_on_every_cpu(tok, monkeypatch, onednn):
    """bf16 autocast reaches the fused LSTM. Where oneDNN has a bf16 LSTM it runs there; where it has
    none (AVX2-only CPUs, or ONEDNN_MAX_CPU_ISA=AVX2) the region runs on ATen's kernels instead of
    failing. The ATen path is forced here, so both are tested on a CPU that has both."""
    if onednn and not runtime.onednn_has_bf16_lstm():
        pytest.skip("oneDNN has no bf16 LSTM on this CPU: the aten-lstm case tests the path used here")
    monkeypatch.setattr(runtime, "onednn_has_bf16_lstm", lambda: onednn)
    small = _model(tok.vocab_size, seed=33, hidden=16)
    ids = tok.encode(TEXT[:300])
    mkldnn_before = torch.backends.mkldnn.enabled
    static32 = dynamic_nlls(small, ids, CPU, "fp32", lr=0.0, seq=20).mean()
    static16 = dynamic_nlls(small, ids, CPU, "bf16", lr=0.0, seq=20).mean()
    # A token's NLL passes three bf16 roundings in sequence (embedding, LSTM gates, head logits), each
    # a relative error <= 2^-8 of values of the NLL's order: <= 3 * 2^-8 (1.2%); measured <= 0.07%.
    assert static16 == pytest.approx(static32, rel=3 * BF16_U)
    fp32 = dynamic_nlls(small, ids, CPU, "fp32", lr=0.05, seq=20).mean()
    # 15 dynamic updates at lr 0.05 from gradients that differ by the same roundings let the two runs
    # drift apart; 4x the static bound (5%) holds that drift (measured 0.004% - 0.4% over 4 seeds).
    assert dynamic_nlls(small, ids, CPU, "bf16", lr=0.05, seq=20).mean() == pytest.approx(fp32, rel=0.05)
    assert torch.backends.mkldnn.enabled == mkldnn_before  # the region switched oneDNN back as it was


# ----------------------------------------------------------------------------- command line and API

@pytest.mark.slow
@pytest.mark.numerics
def test_cli_dynamic_eval_changes_no_file_and_reports_its_settings(run_copy, cli):
    run_dir, corpus, _ = run_copy
    before = snapshot(run_dir)
    r = cli("eval", run_dir, "--file", corpus, "--dynamic", "--dyn-lr", "0.05", "--dyn-seq", "40", "--json",
            "--device", "cpu")
    assert r.code == 0, r.err
    m = json.loads(r.out)
    assert (m["dynamic"], m["dyn_lr"], m["dyn_seq"], m["dyn_decay"]) == (True, 0.05, 40, 0.0)
    static = json.loads(cli("eval", run_dir, "--file", corpus, "--json", "--device", "cpu").out)
    assert "dynamic" not in static and m["tokens"] == static["tokens"] and m["chars"] == static["chars"]
    assert m["bpc"] < static["bpc"]  # the tiny model learns the repetitive text as it reads it
    r = cli("eval", run_dir, "--file", corpus, "--dynamic", "--device", "cpu")
    assert "dynamic evaluation: --dyn-lr" in r.out and "bits/char" in r.out
    assert snapshot(run_dir) == before
    model = charrnn.load(run_dir, device="cpu")
    w = _weights(model.module)
    # the same computation through the API and the CLI, both float32: equal up to JSON's float64 printing
    assert model.evaluate(corpus, dynamic=True, dyn_lr=0.05, dyn_seq=40)["bpc"] == pytest.approx(m["bpc"], rel=1e-6)
    assert _same(w, _weights(model.module))


@pytest.mark.parametrize("args,needle", [
    (["--dynamic", "--dyn-lr", "-0.1"], "--dyn-lr must not be negative (got -0.1)"),
    (["--dynamic", "--dyn-seq", "0"], "--dyn-seq must be a positive integer (got 0)"),
    (["--dynamic", "--dyn-decay", "1.5"], "--dyn-decay must be in [0, 1] (got 1.5)"),
    (["--dynamic", "--dyn-decay", "-0.5"], "--dyn-decay must be in [0, 1] (got -0.5)"),
    (["--dynamic", "--dyn-lr", "nan"], "'nan' is not a finite number"),
    (["--dyn-lr", "0.1"], "--dyn-lr only acts with --dynamic; add --dynamic or leave --dyn-lr out"),
    (["--dyn-seq", "10"], "--dyn-seq only acts with --dynamic"),
])
def test_cli_bad_dynamic_values(run_copy, cli, args, needle):
    run_dir, corpus, _ = run_copy
    before = snapshot(run_dir)
    r = cli("eval", run_dir, "--file", corpus, "--device", "cpu", *args)
    assert r.code == 2 and needle in r.err and r.err.startswith("error: ") and len(r.err.splitlines()) == 1
    assert r.out == "" and snapshot(run_dir) == before


def test_api_bad_dynamic_values(trained_run):
    model = charrnn.load(trained_run[0], device="cpu")
    with pytest.raises(charrnn.CharrnnError, match="--dyn-seq must be a positive integer"):
        model.evaluate(text="the fox", dynamic=True, dyn_seq=0)
    with pytest.raises(charrnn.CharrnnError, match="--dyn-decay only acts with --dynamic"):
        model.evaluate(text="the fox", dyn_decay=0.1)
    with pytest.raises(charrnn.CharrnnError, match="needs --dyn-lr >= 0"):
        dynamic_nlls(model.module, np.arange(5), CPU, lr=-1.0, seq=5)
