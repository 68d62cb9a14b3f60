"""Weight drop, locked dropout and embedding dropout: what they do, that the fused kernel stays, that
the state_dict and evaluation are unchanged, determinism with everything off, and bad values."""

from __future__ import annotations

import json

import pytest
import torch
import torch.nn as nn
from torch.profiler import profile

import charrnn.model.regularise as reg
from charrnn.model.network import ModelConfig
from charrnn.model.regularise import (Dropout, EmbeddingDropout, LockedDropout, RecurrentStack, WeightDrop,
                                      dropout_mask, dropout_scale, random_words)
from tests.conftest import make_model

pytestmark = pytest.mark.usefixtures("one_thread")
KERNEL = {"lstm": "aten::lstm", "gru": "aten::gru", "rnn": "aten::rnn_tanh"}


def model(cell="lstm", layers=2, **kw):
    kw.setdefault("dropout", 0.1)  # ModelConfig's default
    return make_model(23, cell, layers=layers, hidden=16, emb=8, seed=0, **kw).train()


def kernel_calls(fn, cell) -> tuple[int, int]:
    """(fused multi-step kernel calls, single-step cell calls) made by fn()."""
    with profile() as prof:
        fn()
    names = [e.name for e in prof.events()]
    return names.count(KERNEL[cell]), sum(n.endswith("_cell") for n in names)


def recording(monkeypatch):
    """Record the parameters every functional_call receives."""
    seen, real = [], reg.functional_call

    def spy(module, params, args):
        seen.append({k: v.detach().clone() for k, v in params.items()})
        return real(module, params, args)

    monkeypatch.setattr(reg, "functional_call", spy)
    return seen


@pytest.mark.numerics
@pytest.mark.parametrize("cell", ["lstm", "gru", "rnn"])
def test_weight_drop_keeps_one_fused_call_and_equals_the_rnn_with_the_masked_weight(cell, monkeypatch):
    m = model(cell, weight_drop=0.5, dropout=0.0).train()
    plain = model(cell, dropout=0.0)
    assert list(m.state_dict()) == list(plain.state_dict())  # checkpoint names unchanged
    x = torch.randint(0, 23, (3, 11))
    seen = recording(monkeypatch)
    fused, cells = kernel_calls(lambda: m.features(x), cell)
    assert (fused, cells) == (1, 0)
    (params,) = seen
    for layer in range(2):
        raw, dropped = getattr(m.rnn, f"weight_hh_l{layer}").detach(), params[f"weight_hh_l{layer}"]
        kept = dropped != 0
        assert 0.3 < 1 - kept.float().mean() < 0.7
        torch.testing.assert_close(dropped[kept], raw[kept] * 2)  # rescaled by 1 / (1 - p)
        torch.testing.assert_close(params[f"weight_ih_l{layer}"], getattr(m.rnn, f"weight_ih_l{layer}").detach())
    # the output is nn.LSTM/GRU/RNN's own forward with the masked weights
    seen.clear()
    out, state = m.features(x)
    ref = type(m.rnn)(8, 16, 2, batch_first=True)
    ref.load_state_dict(seen[0])
    want, want_state = ref(m.embed(x))
    torch.testing.assert_close(out, want)
    torch.testing.assert_close(state, want_state)


def test_weight_drop_gradient_reaches_the_raw_weight_only_where_kept(monkeypatch):
    m = model(weight_drop=0.5, dropout=0.0).train()
    seen = recording(monkeypatch)
    m.loss(torch.randint(0, 23, (4, 9)), torch.randint(0, 23, (4, 9)))[0].backward()
    kept = seen[0]["weight_hh_l0"] != 0
    grad = m.rnn.weight_hh_l0.grad
    assert grad is not None and grad[kept].abs().sum() > 0
    assert torch.all(grad[~kept] == 0)


@pytest.mark.parametrize("cell", ["lstm", "gru", "rnn"])
def test_regularisers_do_nothing_in_eval_mode(cell, monkeypatch):
    m = model(cell, weight_drop=0.5, embed_dropout=0.3, locked_dropout=True, dropout=0.4).eval()
    plain = model(cell, dropout=0.4).eval()
    plain.load_state_dict(m.state_dict())
    seen = recording(monkeypatch)
    x = torch.randint(0, 23, (2, 7))
    torch.testing.assert_close(m(x)[0], plain(x)[0], rtol=0, atol=0)
    assert seen == []  # the plain fused call


@pytest.mark.numerics
@pytest.mark.parametrize("cell", ["lstm", "gru", "rnn"])
def test_per_layer_calls_use_the_same_parameters_as_the_stacked_rnn(cell):
    torch.manual_seed(1)
    rnn = {"lstm": nn.LSTM, "gru": nn.GRU, "rnn": nn.RNN}[cell](6, 10, 3, batch_first=True)
    x = torch.randn(4, 5, 6)
    state = (torch.randn(3, 4, 10), torch.randn(3, 4, 10)) if cell == "lstm" else torch.randn(3, 4, 10)
    between = LockedDropout(0.5).train()
    between.forward = lambda h: h  # per-layer path, but nothing dropped: must equal the stacked call
    got = kernel_calls(lambda: RecurrentStack(rnn)(rnn, x, state, WeightDrop(0.0), between), cell)
    assert got == (3, 0)  # one fused call per layer, no loop over time steps
    out, st = RecurrentStack(rnn)(rnn, x, state, WeightDrop(0.0), between)
    want, want_st = rnn(x, state)
    torch.testing.assert_close(out, want)
    torch.testing.assert_close(st, want_st)


@pytest.mark.numerics
def test_a_seed_gives_the_same_masks_on_every_cpu_class():
    """The words are torch's mt19937 draws (integers) and the threshold's float arithmetic is exact, so
    these indices hold under every ATEN_CPU_CAPABILITY and thread count (they change only if torch
    changes its generator, which would change every seeded run)."""
    torch.manual_seed(0)
    dropped = (dropout_mask((48,), 0.5, torch.float32, "cpu") == 0).nonzero().flatten().tolist()
    assert dropped == [0, 1, 3, 4, 5, 6, 7, 9, 10, 11, 13, 15, 16, 17, 18, 20, 23, 26, 28, 31, 32, 34, 35, 41,
                       43, 44, 46, 47]


@pytest.mark.numerics
@pytest.mark.parametrize("p", [0.1, 0.5, 0.99999])
def test_the_mask_is_its_words_against_the_threshold_exactly(p):
    """Kept exactly where the 16-bit word is at or above -32768 + round(p * 65536), and then exactly
    the float32 of 1 / (1 - q) (the float route's sub, mul and clamp are exact: see dropout_mask)."""
    torch.manual_seed(4)
    words = random_words(5003, "cpu").tolist()
    torch.manual_seed(4)
    mask = dropout_mask((5003,), p, torch.float32, "cpu").tolist()
    below = -32768 + min(round(p * 65536), 65535)
    scale = float(torch.tensor(dropout_scale(p)))
    assert mask == [scale if w >= below else 0.0 for w in words]


@pytest.mark.numerics
def test_dropout_masks_do_not_depend_on_the_thread_count():
    masks = []
    for threads in (1, 2):
        torch.set_num_threads(threads)
        torch.manual_seed(5)
        masks.append(dropout_mask((64, 64, 256), 0.1, torch.float32, "cpu"))  # above the parallel grain
    assert torch.equal(masks[0], masks[1])


@pytest.mark.parametrize("p", [0.1, 0.5])
def test_dropout_keeps_the_expectation_and_drops_independently(p):
    """n mask elements, each dropped with probability q (p to 1/65536): the dropped count is
    Binomial(n, q), so its fraction, the mask's mean (kept fraction x scale) and the fraction of
    neighbouring pairs both dropped (q^2 if independent: neighbours share a 64-bit draw) lie
    within 6 standard deviations of their expectations unless the mask is wrong (a chance of ~2e-9)."""
    torch.manual_seed(11)
    n, scale = 1 << 20, dropout_scale(p)
    q = 1 - 1 / scale
    m = Dropout(p).train()(torch.ones(n))
    dropped = m == 0
    assert set(m.unique().tolist()) == {0.0, float(torch.tensor(scale))}
    assert abs(dropped.float().mean().item() - q) < 6 * (q * (1 - q) / n) ** 0.5
    assert abs(m.double().mean().item() - 1) < 6 * scale * (q * (1 - q) / n) ** 0.5
    pairs = (dropped[:-1] & dropped[1:]).double().mean().item()
    assert abs(pairs - q * q) < 6 * (q * q * (1 - q * q) / (n - 1)) ** 0.5
    assert abs(q - p) <= 2 ** -17  # p rounded to 1/65536


def test_dropout_acts_in_training_only_and_resumes_from_the_generator_state():
    x = torch.randn(4, 9, 7)
    d = Dropout(0.3)
    assert torch.equal(d.eval()(x), x) and torch.equal(Dropout(0.0).train()(x), x)
    d.train()
    state = torch.get_rng_state()
    a, b = d(x), d(x)
    assert not torch.equal(a, b)  # a new mask per call
    torch.set_rng_state(state)  # what a resumed run restores (system/rng.py): the same masks again
    assert torch.equal(d(x), a) and torch.equal(d(x), b)


def test_the_mask_follows_the_memory_layout_of_its_input():
    """An RNN's batch-first output is a transposed view: its mask is drawn in memory order, so the
    product is one contiguous pass and keeps the layout (the next layer reads it without a copy)."""
    d = Dropout(0.5).train()
    seq_first = torch.randn(7, 5, 6)
    torch.manual_seed(2)
    y = d(seq_first.transpose(0, 1))
    assert y.stride() == seq_first.transpose(0, 1).stride()
    torch.manual_seed(2)
    assert torch.equal(y.transpose(0, 1), d(seq_first))  # the same words, element by element in memory


def test_dropout_between_layers_is_ours_with_one_fused_call_per_layer(monkeypatch):
    m = model(layers=2, dropout=0.5).train()
    calls = []
    real = Dropout.forward
    monkeypatch.setattr(Dropout, "forward", lambda self, x: calls.append(x.shape) or real(self, x))
    fused, cells = kernel_calls(lambda: m.features(torch.randint(0, 23, (4, 13))), "lstm")
    assert (fused, cells, len(calls)) == (2, 0, 3)  # embedding output, between the layers, before the head
    assert m.rnn.dropout == 0.0  # the RNN's own bernoulli_ masks are not drawn
    x = torch.randint(0, 23, (4, 13))
    assert torch.equal(m.eval().features(x)[0], m.rnn(m.embed(x))[0])  # eval: the plain stacked RNN


def test_locked_dropout_mask_is_constant_over_time_and_differs_across_sequences():
    d = LockedDropout(0.5).train()
    out = d(torch.ones(8, 30, 12))
    assert set(out.unique().tolist()) <= {0.0, 2.0}
    assert torch.equal(out, out[:, :1].expand_as(out))  # the same mask at every time step
    assert not torch.equal(out[0], out[1])
    assert torch.equal(d.eval()(out), out)


def test_locked_dropout_between_layers_is_one_mask_per_sequence(monkeypatch):
    m = model(layers=2, locked_dropout=True, dropout=0.5).train()
    masks = []
    real = LockedDropout.forward

    def spy(self, x):
        y = real(self, x)
        masks.append((y == 0) & (x != 0))
        return y

    monkeypatch.setattr(LockedDropout, "forward", spy)
    fused, _ = kernel_calls(lambda: m.features(torch.randint(0, 23, (4, 13))), "lstm")
    assert fused == 2 and len(masks) == 3  # embedding output, between the layers, before the head
    for dropped in masks:
        assert dropped.any()
        assert torch.equal(dropped, dropped[:, :1].expand_as(dropped))
    assert m.rnn.dropout == 0.0  # the RNN's own (per time step) dropout is replaced


def test_embedding_dropout_zeros_whole_rows_and_rescales():
    torch.manual_seed(3)
    emb = nn.Embedding(10, 6)
    d = EmbeddingDropout(0.4).train()
    x = torch.arange(10).repeat(5, 3)  # every token many times
    out = d(emb, x)
    for tok in range(10):
        rows = out[x == tok]
        assert torch.equal(rows, rows[:1].expand_as(rows))  # every occurrence dropped or kept together
        kept = emb.weight[tok] * dropout_scale(0.4)  # 1 / (1 - p), p to 1/65536: one float32 multiply
        assert torch.equal(rows[0], torch.zeros(6)) or torch.equal(rows[0], kept)
    zero = [(out[x == t] == 0).all().item() for t in range(10)]
    assert any(zero) and not all(zero)
    assert torch.equal(d.eval()(emb, x), emb(x))


def test_dynamic_evaluation_switches_them_off():
    """dynamic.py zeroes every nn.Dropout's p; the regularisers are nn.Dropout subclasses."""
    m = model(weight_drop=0.5, embed_dropout=0.3, locked_dropout=True, dropout=0.4)
    kinds = {type(mod) for mod in m.modules() if isinstance(mod, nn.Dropout)}
    assert kinds == {LockedDropout, EmbeddingDropout, WeightDrop}


def _losses(run_dir):
    return [json.loads(line)["loss"] for line in open(run_dir / "metrics.jsonl")]


def test_every_dropout_off_two_runs_are_identical(cli, tmp_path, monkeypatch):
    from tests.conftest import TINY_MODEL, TINY_TEXT

    corpus = tmp_path / "t.txt"
    corpus.write_text(TINY_TEXT, encoding="utf-8")
    calls = []
    real = RecurrentStack.__call__
    monkeypatch.setattr(RecurrentStack, "__call__", lambda self, *a: calls.append(1) or real(self, *a))
    for name in ("a", "b"):
        r = cli("train", corpus, "--checkpoint-dir", tmp_path, "--name", name, "--max-steps", 20, *TINY_MODEL,
                "--layers", 2, "--dropout", 0, "--log-every", 2, "--eval-every", 10)
        assert r.code == 0, r.err
    assert calls  # the regularised path was taken (and is the plain fused call with everything off)
    assert _losses(tmp_path / "a") == _losses(tmp_path / "b") and len(_losses(tmp_path / "a")) == 12


@pytest.mark.parametrize("argv,needle", [
    (["--weight-drop", "1"], "--weight-drop must be in [0, 1) (got 1)"),
    (["--embed-dropout", "-0.1"], "--embed-dropout must be in [0, 1) (got -0.1)"),
    (["--ema", "1.5"], "--ema must be in [0, 1) (got 1.5)"),
    (["--ema", "nan"], "--ema': 'nan' is not a finite number"),
    (["--variable-len", "--records", "\\n"], "--variable-len does not apply to --records"),
])
def test_bad_values_are_one_line_errors(cli, tmp_path, argv, needle):
    corpus = tmp_path / "t.txt"
    corpus.write_text("hello world\n" * 200, encoding="utf-8")
    r = cli("train", corpus, "--checkpoint-dir", tmp_path, "--max-steps", 1, *argv)
    assert r.code != 0 and needle in r.err, r.err
    assert r.err.count("\n") == 1 and "Traceback" not in r.err
    assert not list(tmp_path.glob("*/last.pt"))


def test_fine_tuning_takes_the_new_runs_regularisers(cli, tmp_path):
    from charrnn.model.checkpoint import load_checkpoint
    from tests.conftest import TINY_MODEL, TINY_TEXT

    corpus = tmp_path / "t.txt"
    corpus.write_text(TINY_TEXT, encoding="utf-8")
    assert cli("train", corpus, "--checkpoint-dir", tmp_path, "--name", "src", *TINY_MODEL, "--max-steps", 5).code == 0
    r = cli("train", corpus, "--checkpoint-dir", tmp_path, "--name", "ft", "--init-from", tmp_path / "src",
            "--max-steps", 3, "--weight-drop", 0.2, "--embed-dropout", 0.05, "--locked-dropout", "--precision", "fp32",
            "--batch-size", 4, "--seq-len", 16)
    assert r.code == 0, r.err
    mc = load_checkpoint(str(tmp_path / "ft" / "last.pt"))["model_config"]
    assert (mc["weight_drop"], mc["embed_dropout"], mc["locked_dropout"]) == (0.2, 0.05, True)
    src = ModelConfig(**load_checkpoint(str(tmp_path / "src" / "last.pt"))["model_config"])
    assert (src.weight_drop, src.embed_dropout, src.locked_dropout) == (0.0, 0.0, False)


def test_checkpoints_name_the_regularisers_only_when_set():
    """Unset, they are left out of model_config, so such checkpoints stay readable by older charrnn."""
    plain = ModelConfig(vocab_size=5).to_dict()
    assert not set(plain) & {"weight_drop", "embed_dropout", "locked_dropout"}
    assert ModelConfig(**plain).to_dict() == plain and ModelConfig(**plain).weight_drop == 0.0
    on = ModelConfig(vocab_size=5, weight_drop=0.2, locked_dropout=True).to_dict()
    assert on["weight_drop"] == 0.2 and on["locked_dropout"] is True and "embed_dropout" not in on
    assert ModelConfig(**on).to_dict() == on
