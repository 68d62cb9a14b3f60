"""The one-token sampling step computes exactly what the fused nn.LSTM/GRU/RNN computes, and the
rows of a batch are independent streams."""

from __future__ import annotations

import pytest
import torch

from charrnn.model.network import RNNLM, resolve_head
from charrnn.generation.sample import Stepper
from tests.conftest import make_model


def _model(cell: str, head: str, V: int = 1200) -> RNNLM:
    kind, cutoffs = resolve_head(head, V, False)
    m = make_model(V, cell, 2, 24, 8, seed=0, dropout=0.0, tie_weights=False, head=kind, cutoffs=cutoffs)
    if head == "adaptive":
        m.init_output_bias(torch.randint(0, 50, (V,)).numpy())
    return m


@pytest.mark.slow
@pytest.mark.numerics
@pytest.mark.parametrize("cell", ["lstm", "gru", "rnn"])
@pytest.mark.parametrize("head", ["full", "adaptive"])
def test_step_by_step_equals_fused_forward(cell, head):
    m = _model(cell, head)
    ids = torch.randint(0, m.cfg.vocab_size, (1, 12))
    with torch.no_grad():
        want, _ = m(ids)
        _, state = m(ids[:, :4])
        step = Stepper(m)
        state = step.from_module(state)
        got = []
        for t in ids[0, 4:]:
            logp, state = step(t.view(1), state)
            got.append(logp[0])
    for k, g in enumerate(got):
        # the stepper's per-step matmuls against the fused RNN kernel: the same float32 products (eps 1.2e-7)
        # summed in another order, ~sqrt(hidden) eps per step through 8 steps of O(1) values: ~1e-6; a wrong
        # gate order or a dropped state moves them by >= 1e-2
        torch.testing.assert_close(torch.log_softmax(g, -1), torch.log_softmax(want[0, 4 + k], -1),
                                   atol=1e-5, rtol=1e-5)


@pytest.mark.slow
@pytest.mark.numerics
@pytest.mark.parametrize("cell", ["lstm", "gru", "rnn"])
def test_batched_rows_are_independent_streams(cell):
    """B different token sequences stepped together equal each sequence run alone through the fused model,
    also after rows are dropped and reordered (what finished streams and beam search do)."""
    m = _model(cell, "full", V=50)
    B, T = 5, 10
    ids = torch.randint(0, 50, (B, T))
    with torch.no_grad():
        want = torch.stack([m(ids[b:b + 1])[0][0] for b in range(B)])  # (B, T, V), one stream at a time
        step = Stepper(m)
        _, s0 = m(ids[:1, :1])
        copies = step.from_module(s0, B)
        assert all(torch.equal(layer[0], layer[b]) for part in copies for layer in part for b in range(B))
        state = tuple(tuple(torch.zeros(B, 24) for _ in range(2)) for _ in range(2 if cell == "lstm" else 1))
        rows = torch.arange(B)
        for t in range(T):
            if t == 6:  # drop row 1 and reverse the rest
                rows = torch.tensor([4, 3, 2, 0])
                state = step.select(state, torch.tensor([4, 3, 2, 0]))
            logp, state = step(ids[rows, t], state)
            # as in test_step_by_step_equals_fused_forward: float32 sums in another order, ~1e-6; a row mixed up
            # with another moves the log-probs by >= 1e-1
            torch.testing.assert_close(logp, want[rows, t], atol=1e-5, rtol=1e-5)


def test_module_state_round_trip():
    m = _model("lstm", "full", V=40)
    ids = torch.randint(0, 40, (1, 7))
    with torch.no_grad():
        _, state = m(ids)
        step = Stepper(m)
        back = step.to_module(step.from_module(state, 3))
    for a, b in zip(state, back):
        torch.testing.assert_close(a, b)


@pytest.mark.slow
@pytest.mark.numerics
@pytest.mark.parametrize("cell", ["lstm", "gru"])
def test_bf16_products_stay_close_to_fp32(cell):
    m = _model(cell, "full", V=60)
    ids = torch.randint(0, 60, (4, 20))
    with torch.no_grad():
        exact, fast = Stepper(m), Stepper(m, "bf16")
        assert exact.layers[0][0].dtype is None and fast.layers[0][0].dtype == torch.bfloat16
        zeros = tuple(tuple(torch.zeros(4, 24) for _ in range(2)) for _ in range(2 if cell == "lstm" else 1))
        a, b = zeros, zeros
        for t in range(20):
            la, a = exact(ids[:, t], a)
            lb, b = fast(ids[:, t], b)
            assert lb.dtype == torch.float32 and not torch.equal(la, lb)
            # bf16 products (8 significant bits: relative 2^-8 = 0.004 per rounding) summed over ~24 inputs into
            # gate pre-activations, through 20 steps: measured <= 6e-4 on log-probs of size ~4; 0.05 is ~12
            # roundings' worth, while a wrong weight layout is off by >= 1
            torch.testing.assert_close(lb, la, atol=0.05, rtol=0.05)


@pytest.mark.slow
@pytest.mark.numerics
@pytest.mark.parametrize("precision", ["fp32", "bf16"])
def test_packed_rows_have_the_same_bits_whatever_the_batch(precision):
    """With oneDNN's packed weights (one layout for every row count) a stream's numbers do not depend on
    how many streams run beside it. (The fastest kernel may differ between row counts, so sampling
    only promises equality up to rounding; see test_kernels.py.) Hidden sizes that are multiples of
    32: torch's elementwise kernels take a scalar path for the last elements of a row otherwise,
    and the scalar sigmoid's last bit differs from the vector one."""
    m = make_model(70, "lstm", 2, 64, 16, seed=0, dropout=0.0)
    step = Stepper(m, precision)
    name = "onednn" if precision == "fp32" else "onednn_bf16"
    if not step.use_kernel(name):
        pytest.skip(f"no oneDNN packed {precision} products on this build and CPU")
    ids = torch.randint(0, 70, (70, 6))
    with torch.no_grad():
        _, s0 = m(ids[:1, :1])
        state, alone = step.from_module(s0, 70), [step.from_module(s0, 1) for _ in range(70)]
        for t in range(6):
            logp, state = step(ids[:, t], state)
            for b in (0, 5, 69):
                one, alone[b] = step(ids[b:b + 1, t], alone[b])
                assert torch.equal(one[0], logp[b])


@pytest.mark.numerics
def test_without_onednn_the_products_fall_back_to_blas(monkeypatch):
    from charrnn.system import compat

    m = _model("lstm", "full", V=60)
    ids = torch.randint(0, 60, (3, 8))
    packed = Stepper(m)
    monkeypatch.setattr(compat, "onednn_packing", lambda device: False)
    plain = Stepper(m)
    assert all("onednn" not in p.candidates() for p in plain.products())
    with torch.no_grad():
        a = b = tuple(tuple(torch.zeros(3, 24) for _ in range(2)) for _ in range(2))
        for t in range(8):
            la, a = packed(ids[:, t], a)
            lb, b = plain(ids[:, t], b)
            # oneDNN's packed matmul against ATen's addmm: the same float32 products in another order, ~1e-6
            # over 8 steps
            torch.testing.assert_close(la, lb, atol=1e-5, rtol=1e-5)
