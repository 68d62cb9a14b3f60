"""The model: parameter count, shapes, initialisation, exact state carry, weight tying."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F

from charrnn.model.network import ModelConfig, RNNLM, detach_state

GATES = {"lstm": 4, "gru": 3, "rnn": 1}


pytestmark = pytest.mark.usefixtures("one_thread")


def closed_form(V: int, e: int, h: int, layers: int, cell: str, tied: bool = False) -> int:
    n = V * e
    for layer in range(layers):
        m = e if layer == 0 else h
        n += GATES[cell] * (m * h + h * h + 2 * h)
    return n + (0 if tied else h * V) + V


@pytest.mark.parametrize("cell", ["lstm", "gru", "rnn"])
@pytest.mark.parametrize("V,e,h,layers", [(65, 16, 32, 1), (100, 24, 48, 2), (7, 64, 16, 3), (300, 8, 64, 2)])
def test_parameter_count_closed_form(cell, V, e, h, layers):
    model = RNNLM(ModelConfig(vocab_size=V, cell=cell, layers=layers, hidden=h, emb=e, dropout=0.1))
    expected = closed_form(V, e, h, layers, cell)
    assert model.num_parameters() == expected
    assert sum(p.numel() for p in model.parameters()) == expected


@pytest.mark.parametrize("cell", ["lstm", "gru"])
def test_tie_weights_shares_the_tensor(cell):
    V, h = 50, 32
    model = RNNLM(ModelConfig(vocab_size=V, cell=cell, layers=2, hidden=h, emb=h, tie_weights=True))
    assert model.head.weight is model.embed.weight
    assert model.head.weight.data_ptr() == model.embed.weight.data_ptr()
    assert model.num_parameters() == closed_form(V, h, h, 2, cell, tied=True)
    with torch.no_grad():
        model.embed.weight[3, 5] = 123.0
    assert float(model.head.weight.detach()[3, 5]) == 123.0
    # a gradient through the head reaches the shared tensor
    model.zero_grad()
    logits, _ = model(torch.tensor([[1, 2, 3]]))
    logits[..., 7].sum().backward()
    assert model.embed.weight.grad is not None and model.embed.weight.grad[7].abs().sum() > 0
    # the state dict round-trips and stays tied
    clone = RNNLM(ModelConfig(vocab_size=V, cell=cell, layers=2, hidden=h, emb=h, tie_weights=True))
    clone.load_state_dict(model.state_dict())
    assert clone.head.weight is clone.embed.weight
    assert float(clone.head.weight.detach()[3, 5]) == 123.0


def test_untied_weights_are_separate():
    model = RNNLM(ModelConfig(vocab_size=50, layers=1, hidden=32, emb=32))
    assert model.head.weight is not model.embed.weight
    assert model.head.weight.data_ptr() != model.embed.weight.data_ptr()


@pytest.mark.parametrize("cell", ["lstm", "gru", "rnn"])
@pytest.mark.parametrize("layers", [1, 2])
def test_output_and_state_shapes(cell, layers):
    V, B, T, h = 40, 3, 11, 24
    model = RNNLM(ModelConfig(vocab_size=V, cell=cell, layers=layers, hidden=h, emb=12))
    logits, state = model(torch.randint(0, V, (B, T)))
    assert logits.shape == (B, T, V)
    if cell == "lstm":
        assert isinstance(state, tuple) and len(state) == 2
        assert state[0].shape == state[1].shape == (layers, B, h)
    else:
        assert isinstance(state, torch.Tensor)
        assert state.shape == (layers, B, h)
    d = detach_state(state)
    assert type(d) is type(state)
    assert detach_state(None) is None


@pytest.mark.parametrize("layers", [1, 2, 3])
def test_lstm_forget_gate_bias_is_one(layers):
    h = 32
    model = RNNLM(ModelConfig(vocab_size=30, cell="lstm", layers=layers, hidden=h, emb=16))
    for k in range(layers):
        b_ih = getattr(model.rnn, f"bias_ih_l{k}").detach()
        b_hh = getattr(model.rnn, f"bias_hh_l{k}").detach()
        total = b_ih + b_hh
        assert torch.allclose(total[h:2 * h], torch.ones(h)), f"layer {k}: forget gate bias"
        # the other gates (input, cell, output) are not biased towards 1
        for lo, hi in [(0, h), (2 * h, 3 * h), (3 * h, 4 * h)]:
            assert not torch.allclose(total[lo:hi], torch.ones(hi - lo))


@pytest.mark.parametrize("cell", ["lstm", "gru", "rnn"])
@pytest.mark.parametrize("V", [30, 257])
def test_initial_loss_is_about_ln_vocab(cell, V):
    torch.manual_seed(0)
    model = RNNLM(ModelConfig(vocab_size=V, cell=cell, layers=2, hidden=64, emb=32, dropout=0.0))
    model.eval()
    x = torch.randint(0, V, (8, 64))
    y = torch.randint(0, V, (8, 64))
    with torch.no_grad():
        logits, _ = model(x)
    loss = F.cross_entropy(logits.reshape(-1, V), y.reshape(-1)).item()
    # not a rounding bound: an initialised model's logits are small (init scale), so its loss is ln V to within
    # their spread, measured <= 0.017 over cells and V from 10 to 3,000; 0.1 is 3% of ln 30
    assert abs(loss - math.log(V)) < 0.1, (loss, math.log(V))


@pytest.mark.numerics
@pytest.mark.parametrize("cell", ["lstm", "gru", "rnn"])
@pytest.mark.parametrize("split", [1, 7, 19])
def test_state_carry_is_exact(cell, split):
    torch.manual_seed(1)
    V = 37
    model = RNNLM(ModelConfig(vocab_size=V, cell=cell, layers=2, hidden=32, emb=16, dropout=0.5))
    model.eval()  # dropout off: the two computations must agree exactly
    x = torch.randint(0, V, (3, 20))
    with torch.no_grad():
        full, full_state = model(x)
        a, state = model(x[:, :split])
        b, state = model(x[:, split:], state)
        fresh, _ = model(x[:, split:])
    # the fused RNN kernel over 20 steps and over two pieces: the same recurrence, but oneDNN/ATen may block the
    # time loop differently; float32 (eps 1.2e-7) through 20 steps of O(1) values stays below 20 * 4 eps = 1e-5
    torch.testing.assert_close(torch.cat([a, b], 1), full, rtol=1e-5, atol=1e-5)
    if cell == "lstm":
        torch.testing.assert_close(state[0], full_state[0], rtol=1e-5, atol=1e-5)
        torch.testing.assert_close(state[1], full_state[1], rtol=1e-5, atol=1e-5)
    else:
        torch.testing.assert_close(state, full_state, rtol=1e-5, atol=1e-5)
    # the carried state matters: starting the second window fresh gives different logits
    assert not torch.allclose(fresh, b, atol=1e-4)


def test_dropout_is_active_in_train_mode_only():
    torch.manual_seed(2)
    model = RNNLM(ModelConfig(vocab_size=20, layers=2, hidden=32, emb=16, dropout=0.5))
    x = torch.randint(0, 20, (2, 10))
    model.train()
    a, _ = model(x)
    b, _ = model(x)
    assert not torch.allclose(a, b)
    model.eval()
    c, _ = model(x)
    d, _ = model(x)
    assert torch.equal(c, d)
