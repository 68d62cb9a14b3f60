"""The cells of model/cells (QRNN, SRU, IndRNN, JANET, peephole LSTM): the parallel scan against a
step-by-step reference (values and gradients), the closed-form sizes, one-token steps equal to the
full forward, training, bit-exact resume, sampling, and the settings they refuse."""

from __future__ import annotations

import math
import os
import signal

import pytest
import torch

import charrnn
from charrnn.errors import CharrnnError, Interrupted
from charrnn.generation.interactive import Session
from charrnn.generation.stepper import Stepper
from charrnn.model.cells import STACKS
from charrnn.model.cells import scan as S
from charrnn.model.sizes import n_parameters, rnn_layer_count
from charrnn.reports.inspect import parameter_table
from charrnn.settings import SAMPLE, defaults
from tests.conftest import TINY_TEXT, make_model, weights_hash

CELLS = list(STACKS)
U = 2.0 ** -24  # fp32 unit roundoff
TINY = dict(layers=2, hidden=16, emb=8, batch_size=4, seq_len=16, precision="fp32", eval_every=4, save_every=4,
            log_every=4, device="cpu", seed=3)


@pytest.fixture
def corpus(tmp_path):
    p = tmp_path / "tiny.txt"
    p.write_text(TINY_TEXT, encoding="utf-8")
    return p


# ----------------------------------------------------------------------------------------------- the scan

def _ref(f, x, c0):
    """float64 step-by-step c_t = f_t c_{t-1} + x_t (f, x >= 0 give the bound's sum_s |x_s| prod f)."""
    return S.scan_loop(f.double(), x.double(), None if c0 is None else c0.double())


def _gates(kind: str, shape, gen):
    z = torch.randn(shape, generator=gen)
    if kind == "near0":   # sigmoid of -12..-20: f ~ 1e-9..6e-6 (products underflow quickly)
        return torch.sigmoid(z.abs() * -4 - 12)
    if kind == "near1":   # sigmoid of 12..20: 1 - f ~ 1e-9..6e-6 (the state is kept for hundreds of steps)
        return torch.sigmoid(z.abs() * 4 + 12)
    return torch.rand(shape, generator=gen)


@pytest.mark.numerics
@pytest.mark.parametrize("T", [1, 5, 16, 100, 512])
@pytest.mark.parametrize("kind", ["near0", "near1", "uniform"])
def test_scan_matches_the_step_by_step_reference_in_values_and_gradients(T, kind):
    gen = torch.Generator().manual_seed(T)
    B, H = 2, 8
    f = _gates(kind, (B, T, H), gen).requires_grad_()
    x = torch.randn(B, T, H, generator=gen).requires_grad_()
    c0 = torch.randn(B, H, generator=gen).requires_grad_()
    grad = torch.randn(B, T, H, generator=gen)
    c = S.linear_scan(f, x, c0)
    gf, gx, gc0 = torch.autograd.grad(c, (f, x, c0), grad)
    fd, xd, c0d = (t.detach().double().requires_grad_() for t in (f, x, c0))
    want = _ref(fd, xd, c0d)
    wf, wx, wc0 = torch.autograd.grad(want, (fd, xd, c0d), grad.double())
    # Each term of c_t goes through at most CHUNK + 2 log2 T + 3 rounded multiply-adds (scan.py), so
    # |c - exact| <= 2 (CHUNK + 2 log2 T + 3) u sum_s |x_s| prod f; the exact magnitudes are the same scan of |x|.
    k = 2 * (S.CHUNK + 2 * math.log2(max(T, 2)) + 3) * U
    f64 = f.detach().double()
    mag = _ref(f64, x.detach().double().abs(), c0.detach().double().abs())
    assert ((c.double() - want).abs() <= k * mag + 1e-300).all()
    # the backward is the same scan reversed: g_t = grad_t + f_{t+1} g_{t+1}, bounded the same way
    f_next = torch.cat([f64[:, 1:], torch.zeros(B, 1, H, dtype=torch.float64)], 1)
    gmag = _ref(f_next.flip(1), grad.double().abs().flip(1), None).flip(1)
    assert ((gx.double() - wx).abs() <= k * gmag + 1e-300).all()
    # df_t = g_t c_{t-1}: the errors of both factors plus one rounding of the product
    prev = torch.cat([c0.detach().double().unsqueeze(1), want[:, :-1].detach()], 1)
    prev_mag = torch.cat([c0.detach().double().abs().unsqueeze(1), mag[:, :-1]], 1)
    bound = k * gmag * prev.abs() + wx.abs() * k * prev_mag + k * gmag * k * prev_mag + U * (wx * prev).abs()
    assert ((gf.double() - wf).abs() <= bound + 1e-300).all()
    assert ((gc0.double() - wc0).abs() <= k * (f64[:, 0] * gmag[:, 0]) + U * wc0.abs() + 1e-300).all()


def test_scan_without_c0_starts_from_zeros():
    gen = torch.Generator().manual_seed(1)
    f, x = torch.rand(3, 40, 4, generator=gen), torch.randn(3, 40, 4, generator=gen)
    assert torch.equal(S.linear_scan(f, x), S.linear_scan(f, x, torch.zeros(3, 4)))


@pytest.mark.numerics
@pytest.mark.parametrize("cell", ["janet", "lstm-peephole"])
def test_recurrent_weight_gradient_in_one_product_equals_autograd_step_by_step(cell):
    torch.manual_seed(0)
    layer = STACKS[cell].layer_class(6, 10)
    if cell == "lstm-peephole":
        with torch.no_grad():
            layer.peephole.normal_()  # non-zero peepholes: their gradients are compared too
    x = torch.randn(3, 20, 6)
    st = tuple(torch.randn(3, 10) for _ in range(2 if cell == "lstm-peephole" else 1))
    grad = torch.randn(3, 20, 10)
    out, _ = layer(x, st)
    got = torch.autograd.grad(out, list(layer.parameters()), grad)
    # reference: plain autograd through every step's product (W_hh's gradient summed step by step)
    a = torch.nn.functional.linear(x, layer.weight_ih, layer.bias)
    s, hs = st, []
    for t in range(20):
        h, s = layer.update(torch.addmm(a[:, t], s[0], layer.weight_hh.t()), s)
        hs.append(h)
    want = torch.autograd.grad(torch.stack(hs, 1), list(layer.parameters()), grad)
    # the same products summed in another order: dW_hh's B*T = 60 terms as one GEMM against 20 sums of 3;
    # each entry's error <= 60 u sum |terms| (u = 2^-24) ~ 4e-6 relative to O(1) sums: 1e-4 with margin
    for g, w in zip(got, want):
        torch.testing.assert_close(g, w, atol=1e-4, rtol=1e-4)


@pytest.mark.numerics
def test_indrnn_recurrence_backward_equals_autograd_step_by_step():
    from charrnn.model.cells.elementwise import _IndRecurrence

    gen = torch.Generator().manual_seed(0)
    a = torch.randn(50, 3, 7, generator=gen, dtype=torch.float64).requires_grad_()
    u = (torch.rand(7, generator=gen, dtype=torch.float64) * 2 - 0.5).requires_grad_()  # some |u| > 1, some < 0
    h0 = torch.randn(3, 7, generator=gen, dtype=torch.float64).clamp_min(0).requires_grad_()
    grad = torch.randn(50, 3, 7, generator=gen, dtype=torch.float64)
    got_out = _IndRecurrence.apply(a, u, h0)
    got = torch.autograd.grad(got_out, (a, u, h0), grad)
    h, outs = h0, []
    for t in range(50):
        h = torch.relu(a[t] + u * h)
        outs.append(h)
    want_out = torch.stack(outs)
    want = torch.autograd.grad(want_out, (a, u, h0), grad)
    # float64, the same operations in the same order but for du's sum over (t, b): equal to ~1e-13 relative
    torch.testing.assert_close(got_out, want_out, rtol=1e-12, atol=1e-12)
    for g, w in zip(got, want):
        torch.testing.assert_close(g, w, rtol=1e-10, atol=1e-10)


# ----------------------------------------------------------------------------------------------- sizes

@pytest.mark.parametrize("cell", CELLS)
@pytest.mark.parametrize("V,e,h,layers", [(30, 8, 16, 1), (50, 16, 16, 2), (7, 24, 12, 3)])
def test_closed_form_sizes_equal_the_module(cell, V, e, h, layers):
    m = make_model(V, cell, layers, h, e)
    for i, layer in enumerate(m.rnn.layers):
        assert sum(p.numel() for p in layer.parameters()) == rnn_layer_count(cell, e if i == 0 else h, h)
    assert m.num_parameters() == n_parameters(V, cell, layers, h, e)
    rows = parameter_table(m)  # what charrnn inspect prints
    assert all(r["closed_form"] == r["count"] for r in rows)


@pytest.mark.parametrize("cell", CELLS)
def test_memory_estimate_and_probe_cost_cover_every_cell(cell):
    from charrnn.model.network import ModelConfig
    from charrnn.training import memory, probe

    est = memory.estimate(vocab=65, cell=cell, layers=2, hidden=64, emb=16, batch=8, window=32)
    assert est["parameters"] == n_parameters(65, cell, 2, 64, 16) and est["total"] > est["parameters"] * 16
    macs = probe.token_macs(ModelConfig(vocab_size=65, cell=cell, layers=2, hidden=64, emb=16))
    assert 64 * 65 < macs < probe.token_macs(ModelConfig(vocab_size=65, cell="lstm-peephole", layers=2, hidden=64,
                                                         emb=16)) + 1


# ----------------------------------------------------------------------------------------------- the step

@pytest.mark.numerics
@pytest.mark.parametrize("cell", CELLS)
def test_steps_single_and_batched_equal_the_full_forward(cell):
    V, B, T = 40, 3, 24
    m = make_model(V, cell, 2, 24, 8, seed=1)
    ids = torch.randint(0, V, (B, T), generator=torch.Generator().manual_seed(2))
    with torch.no_grad():
        want, _ = m(ids)
        step = Stepper(m)
        _, s0 = m(ids[:1, :4])  # a prime through the forward, then one token at a time
        state = step.from_module(s0)
        got = []
        for t in ids[0, 4:]:
            logp, state = step(t.view(1), state)
            got.append(logp[0])
        zero = tuple(tuple(torch.zeros(B, 24) for _ in range(2)) for _ in range(m.rnn.n_states))
        batched = []
        for t in range(T):
            logp, zero = step(ids[:, t], zero)
            batched.append(logp)
    # The step and the forward compute the same fp32 operations per token but for the order of sums:
    # the products over B*T rows against B rows (m + h <= 48 terms) and the scan's blocked order against
    # the sequential one (<= 2 (CHUNK + 2 log2 T + 3) roundings): each a relative error below ~60 u ~ 4e-6
    # on O(1) values per layer, through 2 layers and a head of O(1) weights: < 1e-4. A wrong gate, state
    # or order moves log-probs by > 1e-2.
    for k, g in enumerate(got):
        torch.testing.assert_close(g, want[0, 4 + k], atol=1e-4, rtol=1e-4)
    torch.testing.assert_close(torch.stack(batched, 1), want, atol=1e-4, rtol=1e-4)


@pytest.mark.parametrize("cell", CELLS)
def test_state_none_means_zeros_and_the_state_carries(cell):
    m = make_model(30, cell, 2, 12, 6, seed=0)
    ids = torch.randint(0, 30, (2, 10), generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        whole, _ = m(ids)
        _, st = m(ids[:, :6])
        rest, _ = m(ids[:, 6:], st)
        zeros = tuple(torch.zeros(2, 2, 12) for _ in range(m.rnn.n_states))
        again, _ = m(ids, zeros if len(zeros) > 1 else zeros[0])
    assert torch.equal(whole, again)
    # split at 6: the scan of the second part starts from the carried state; same ops up to the order of
    # sums (<= 2 (CHUNK + 2 log2 T + 3) u relative per layer on O(1) values): 1e-5
    torch.testing.assert_close(rest, whole[:, 6:], atol=1e-5, rtol=1e-5)


# ----------------------------------------------------------------------------------------------- training

def _stop_at(step_no: int):
    def on_log(rec):
        if rec["step"] == step_no:
            os.kill(os.getpid(), signal.SIGTERM)  # the trainer finishes the step, saves, raises Interrupted
    return on_log


@pytest.mark.numerics
@pytest.mark.parametrize("cell", CELLS)
def test_trains_and_resumes_bit_exactly(cell, corpus, tmp_path, one_thread):
    ck = tmp_path / "ck"
    extra = {"cell": cell, "locked_dropout": True, "dropout": 0.2, "embed_dropout": 0.1}
    if cell in ("janet", "lstm-peephole"):
        extra["weight_drop"] = 0.2
    ref = charrnn.train(corpus, checkpoint_dir=ck, name="ref", max_steps=12, verbose=False, **TINY, **extra)
    assert ref.steps == 12 and math.isfinite(ref.best["loss"])
    with pytest.raises(Interrupted):
        charrnn.train(corpus, checkpoint_dir=ck, name="cut", max_steps=12, verbose=False, on_log=_stop_at(4),
                      **TINY, **extra)
    run = charrnn.resume(ck / "cut", verbose=False)
    assert run.steps == 12
    assert weights_hash(ck / "cut" / "last.pt") == weights_hash(ck / "ref" / "last.pt")


@pytest.mark.parametrize("cell", CELLS)
def test_samples_evaluates_scores_and_inspects(cell, corpus, tmp_path, one_thread):
    ck = tmp_path / "ck"
    charrnn.train(corpus, checkpoint_dir=ck, name="m", max_steps=4, verbose=False, cell=cell, **TINY)
    model = charrnn.load(ck / "m")
    one = model.sample(length=20, seed=1, prime="the ")
    many = model.sample(length=20, seed=1, num_samples=3, prime="the ")
    assert isinstance(one, str) and len(many) == 3
    assert len(model.sample(length=10, beam=3, prime="the ")) > 0
    session = Session(model, {**defaults(SAMPLE), "temp": 0.0, "length": 12})  # charrnn sample --interactive
    first = "".join(session.reply("the "))
    assert first == model.sample("the ", temp=0, length=12)[4:]
    assert len("".join(session.reply("a "))) == 12  # the second turn continues from the carried state
    ev = model.evaluate(text=TINY_TEXT[:300], baselines=False)
    dyn = model.evaluate(text=TINY_TEXT[:300], dynamic=True, baselines=False)
    assert math.isfinite(ev["bpc"]) and math.isfinite(dyn["bpc"]) and dyn["bpc"] != ev["bpc"]
    # no dropout while adapting (the stack's own inter-layer dropout included): the same figure again
    assert model.evaluate(text=TINY_TEXT[:300], dynamic=True, baselines=False)["bpc"] == dyn["bpc"]
    assert len(model.score("the cat\na dog\n")) == 2
    info = charrnn.inspect(ck / "m")
    assert all(r["closed_form"] == r["count"] for r in info["parameters"]["rows"])
    with pytest.raises(CharrnnError, match=f"--format onnx supports the lstm, gru and rnn cells"):
        model.export(tmp_path / "m.onnx", format="onnx")
    assert not (tmp_path / "m.onnx").exists()
    model.export(tmp_path / "m.pt", format="pt")
    ft = charrnn.train(corpus, checkpoint_dir=ck, name="ft", init_from=str(ck / "m"), max_steps=2, verbose=False,
                       **{k: v for k, v in TINY.items() if k not in ("layers", "hidden", "emb")})
    assert ft.steps == 2


@pytest.mark.parametrize("cell", ["qrnn", "sru", "indrnn"])
def test_weight_drop_on_a_cell_without_w_hh_is_refused_in_one_line(cell, corpus, tmp_path, cli):
    ck = tmp_path / "ck"
    r = cli("train", corpus, "--checkpoint-dir", ck, "--cell", cell, "--weight-drop", "0.3", "--max-steps", 1)
    assert r.code != 0
    assert f"--weight-drop needs a recurrent matrix W_hh and a {cell} has none" in r.err
    assert len(r.err.strip().splitlines()) == 1 and "Traceback" not in r.err
    assert not ck.exists() or not any(ck.iterdir())  # refused before anything was made
    with pytest.raises(CharrnnError, match="--weight-drop needs a recurrent matrix"):  # the library too
        make_model(20, cell, 1, 8, 4, weight_drop=0.2)


def test_cli_trains_a_cell(corpus, tmp_path, cli, one_thread):
    r = cli("train", corpus, "--checkpoint-dir", tmp_path, "--cell", "sru", "--max-steps", 3, "--layers", 2,
            "--hidden", 16, "--emb", 8, "--batch-size", 4, "--seq-len", 16, "--device", "cpu")
    assert r.code == 0, r.err
    r = cli("inspect", tmp_path / "tiny")
    assert r.code == 0 and "sru layer 1 (m=8, h=16)" in r.out and "4mh + 2h" in r.out


@pytest.mark.integration
@pytest.mark.slow
@pytest.mark.parametrize("cell", ["sru", "janet"])
def test_torchrun_two_ranks_follow_one_process(cell, corpus, tmp_path, cli, one_thread):
    """Two gloo ranks average the gradients of two half-batches: the same loss curve as one process up
    to float32 summation order (~1e-7 relative); 1e-4 nats as tests/test_distributed.py argues."""
    import json
    import subprocess
    import sys

    from tests.test_distributed import env, free_port

    common = ["--cell", cell, "--layers", 2, "--hidden", 32, "--emb", 8, "--batch-size", 8, "--seq-len", 16,
              "--dropout", 0, "--precision", "fp32", "--device", "cpu", "--eval-every", 10, "--log-every", 5,
              "--seed", 5, "--max-steps", 10]
    assert cli("train", corpus, "--checkpoint-dir", tmp_path, "--name", "one", *common).code == 0
    cmd = [sys.executable, "-m", "torch.distributed.run", "--nproc-per-node", "2", "--master-addr", "127.0.0.1",
           "--master-port", str(free_port()), "-m", "charrnn", "train", *map(str, [
               corpus, "--checkpoint-dir", tmp_path, "--name", "two", *common])]
    p = subprocess.run(cmd, capture_output=True, text=True, env=env(), timeout=300)
    assert p.returncode == 0, p.stderr

    def losses(run):
        rows = [json.loads(x) for x in (tmp_path / run / "metrics.jsonl").read_text().splitlines()]
        return [r["loss"] for r in rows if r.get("split") == "train"]

    one, two = losses("one"), losses("two")
    assert len(one) == len(two) >= 2
    assert max(abs(a - b) for a, b in zip(one, two)) <= 1e-4


def test_janet_state_stays_in_unit_interval_over_a_long_carried_stream():
    """charrnn's JANET makes c_t = (f c_{t-1} + i c~_t) / (f + i), a convex combination of two values in
    [-1, 1], so |c| <= 1 over any stream however long. The paper's f c + i c~ (f + i > 1) has the fixed point
    i / (1 - f) -> e under a steady saturated forget gate: with these adversarial weights (forget bias 4,
    candidate pinned near +1, positive feedback through U) its state settles near 2.6 within the stream.
    Tolerance: the layer computes in float32; each step's five roundings (f c, i c~, their sum, f + i, the
    quotient) move |c| by at most ~6 unit roundoffs U of a value <= 1, and an excess carried from the last
    step only shrinks (times f / (f + i) < 1), so 6 T U bounds the drift over T steps (~1.4e-3 here; the
    paper's form reaches 2.6)."""
    from charrnn.model.cells.recurrent import JANETLayer

    torch.manual_seed(0)
    m, h, T = 4, 8, 4000
    layer = JANETLayer(m, h)
    tol = 6 * T * U
    with torch.no_grad():
        layer.weight_ih.mul_(3.0)
        layer.weight_hh.abs_().mul_(3.0)       # c > 0 feeds both gates upwards
        layer.bias[:h].fill_(4.0)              # f = sigmoid(4 + ...) close to 1
        layer.bias[h:].fill_(6.0)              # c~ = tanh(6 + ...) close to +1
    x = torch.randn(2, T, m)
    with torch.no_grad():
        out, _ = layer(x, None)
        # the same stream carried across windows, as training and evaluation do
        st, outs = None, []
        for w in x.split(128, 1):
            o, st = layer(w, st)
            outs.append(o)
    peak = out.abs().max().item()
    assert peak <= 1 + tol
    assert torch.cat(outs, 1).abs().max().item() <= 1 + tol
    assert peak > 0.9                          # the stream does push the state towards the bound
