"""step.py: a CUDA out-of-memory splits the step into micro-batches with the same gradients, and
the CUDA path finds non-finite steps without a host sync per step (simulated on the CPU)."""

from __future__ import annotations

import contextlib

import pytest
import torch

from charrnn.training import step as step_mod
from charrnn.model.checkpoint import load_checkpoint
from charrnn.errors import CharrnnError
from charrnn.model.network import ModelConfig, RNNLM
from charrnn.training.step import StepRunner
from tests.conftest import TINY_TEXT, make_model
from tests.conftest import nan_after as _nan_after

pytestmark = pytest.mark.usefixtures("one_thread")


def _runner(cell="lstm", fused=None, logs=None, skip=False):
    model = make_model(30, cell, 2, 16, 8, seed=0, dropout=0.0).train()
    opt = torch.optim.AdamW(model.parameters(), lr=1e-2, fused=fused)
    logs = [] if logs is None else logs
    return StepRunner(model, opt, torch.device("cpu"), contextlib.nullcontext, logs.append, skip), logs


def _batch(B=6, T=5):
    g = torch.Generator().manual_seed(1)
    return torch.randint(30, (B, T), generator=g), torch.randint(30, (B, T), generator=g)


def _grads(model):
    return [p.grad.clone() for p in model.parameters()]


@pytest.mark.numerics
@pytest.mark.parametrize("cell", ["lstm", "gru"])
@pytest.mark.parametrize("parts", [2, 3, 6])
def test_micro_batches_give_the_full_batch_loss_gradients_and_state(cell, parts):
    x, y = _batch()
    ref, _ = _runner(cell)
    h0 = torch.randn(2, 6, 16)
    state = (h0, torch.randn(2, 6, 16)) if cell == "lstm" else h0
    loss1, st1 = ref.forward_backward(x, y, state)
    split, _ = _runner(cell)
    split.parts = parts
    loss2, st2 = split.forward_backward(x, y, state)
    # micro-batches: the same per-token terms, summed per part then added (float32, eps 1.2e-7): the loss (~3
    # nats) and gradients (<= 1) differ by a few eps of their size, < 1e-6; a part weighted wrongly moves them
    # by >= 1e-2
    assert torch.allclose(loss1, loss2, atol=1e-6)
    for a, b in zip(_grads(ref.model), _grads(split.model)):
        assert torch.allclose(a, b, atol=1e-6)
    for a, b in zip(st1 if cell == "lstm" else [st1], st2 if cell == "lstm" else [st2]):
        assert torch.allclose(a, b, atol=1e-6)


def test_a_cuda_out_of_memory_halves_the_batch_keeps_the_tokens_and_says_so(monkeypatch):
    x, y = _batch(B=8)
    ref, _ = _runner()
    loss_ref, _ = ref.forward_backward(x, y, None)
    runner, logs = _runner()
    real, calls = runner.model.loss, []

    def loss(xb, yb, state=None):
        calls.append(xb.shape[0])
        if xb.shape[0] == 8:  # the full batch does not fit "on the GPU"; halves do
            raise torch.cuda.OutOfMemoryError("CUDA out of memory. Tried to allocate 2.00 GiB")
        return real(xb, yb, state)

    monkeypatch.setattr(runner.model, "loss", loss)
    got, _ = runner.forward_backward(x, y, None)
    assert calls == [8, 4, 4] and runner.parts == 2
    assert logs == ["out of GPU memory at batch 8 x 5: each step now runs as 2 micro-batches of ~4 streams "
                    "(same 40 tokens per step, gradients added up)"]
    # the halved batch: the same sums in two parts, float32, as in
    # test_micro_batches_give_the_full_batch_loss_gradients_and_state
    assert torch.allclose(got, loss_ref, atol=1e-6)
    for a, b in zip(_grads(ref.model), _grads(runner.model)):
        assert torch.allclose(a, b, atol=1e-6)
    runner.forward_backward(x, y, None)  # later steps go straight to the split
    assert calls[3:] == [4, 4] and len(logs) == 1


def test_out_of_memory_with_one_stream_is_a_one_line_error(monkeypatch):
    runner, logs = _runner()

    def loss(*a, **k):
        raise torch.cuda.OutOfMemoryError("CUDA out of memory")

    monkeypatch.setattr(runner.model, "loss", loss)
    x, y = _batch(B=2)
    with pytest.raises(CharrnnError, match=r"^out of GPU memory even one stream at a time \(1 x 5 tokens\); "
                                           r"lower --hidden or --seq-len"):
        runner.forward_backward(x, y, None)
    assert len(logs) == 1 and runner.parts == 2


def test_the_deferred_update_skips_a_nonfinite_step_on_the_device():
    runner, _ = _runner(fused=True, skip=True)
    x, y = _batch()
    loss, state = runner.forward_backward(x, y, None)
    before = [p.detach().clone() for p in runner.model.parameters()]
    gnorm = torch.nn.utils.clip_grad_norm_(list(runner.model.parameters()), 1.0)
    state = runner.update(loss * float("nan"), gnorm, state, step=7)
    assert all(torch.equal(a, b) for a, b in zip(before, runner.model.parameters()))
    assert all(float(s.detach().abs().sum()) == 0 for s in state)  # the streams restart from zero
    assert runner.take_nonfinite() == (1, 7, "loss")
    loss, state = runner.forward_backward(x, y, None)
    runner.update(loss, torch.nn.utils.clip_grad_norm_(list(runner.model.parameters()), 1.0), state, step=8)
    assert not all(torch.equal(a, b) for a, b in zip(before, runner.model.parameters()))
    assert runner.take_nonfinite() == (0, 0, "")
    assert {int(s["step"]) for s in runner.opt.state.values()} == {1}  # the skipped step was not counted


def test_update_needs_no_host_sync(monkeypatch):
    runner, _ = _runner(fused=True)
    x, y = _batch()
    loss, state = runner.forward_backward(x, y, None)
    gnorm = torch.nn.utils.clip_grad_norm_(list(runner.model.parameters()), 1.0)

    def no_sync(*a, **k):
        raise AssertionError("a host sync in the per-step path")

    monkeypatch.setattr(torch.Tensor, "item", no_sync)
    monkeypatch.setattr(torch.Tensor, "tolist", no_sync)
    monkeypatch.setattr(torch.Tensor, "__float__", no_sync)
    monkeypatch.setattr(torch.Tensor, "__bool__", no_sync)
    runner.update(loss, gnorm, state, step=1)


# -- the optimizer

@pytest.mark.numerics
def test_make_optimizer_decays_weight_matrices_only_and_steps_as_the_per_tensor_adamw():
    model = make_model(30, "lstm", 2, 16, 8, seed=0, dropout=0.0).train()
    ref_model = RNNLM(ModelConfig(30, "lstm", 2, 16, 8, 0.0))
    ref_model.load_state_dict(model.state_dict())
    start = model.embed.weight.detach().clone()
    opt = step_mod.make_optimizer(model, 1e-2, 0.1, torch.device("cpu"))
    names = {id(p): n for n, p in model.named_parameters()}
    decay, no_decay = opt.param_groups
    assert decay["weight_decay"] == 0.1 and no_decay["weight_decay"] == 0.0
    assert sorted(names[id(p)] for p in decay["params"]) == [
        "head.weight", "rnn.weight_hh_l0", "rnn.weight_hh_l1", "rnn.weight_ih_l0", "rnn.weight_ih_l1"]
    assert "embed.weight" in {names[id(p)] for p in no_decay["params"]}
    if tuple(int(v) for v in torch.__version__.split(".")[:2]) >= (2, 4):  # PyTorch's fused CPU AdamW
        assert opt.defaults["fused"] is True
    ref_ids = {id(q) for p, q in zip(model.parameters(), ref_model.parameters()) if id(p) in
               {id(d) for d in decay["params"]}}
    ref = torch.optim.AdamW([{"params": [q for q in ref_model.parameters() if id(q) in ref_ids], "weight_decay": 0.1},
                             {"params": [q for q in ref_model.parameters() if id(q) not in ref_ids],
                              "weight_decay": 0.0}], lr=1e-2, betas=(0.9, 0.99), foreach=False)
    x, y = _batch()
    for _ in range(5):
        for m, o in ((model, opt), (ref_model, ref)):
            o.zero_grad(set_to_none=True)
            m.loss(x, y)[0].backward()
            o.step()
    for a, b in zip(model.parameters(), ref_model.parameters()):
        # the same AdamW update by foreach and per-tensor kernels: float32 rounding of weights ~0.1 in size,
        # ~1e-8 per step, over 5 steps: < 1e-6; a wrongly decayed tensor moves by lr * 0.1 * w ~ 1e-4
        assert torch.allclose(a, b, atol=1e-6)
    assert not torch.allclose(model.embed.weight, start)  # the steps did move the weights


# -- the trainer with the CUDA path forced on the CPU: the same --skip-nonfinite semantics

MODEL = ["--layers", "1", "--hidden", "24", "--emb", "8", "--batch-size", "4", "--seq-len", "16",
         "--precision", "fp32", "--log-every", "5"]


@pytest.fixture
def deferred(monkeypatch):
    monkeypatch.setattr(step_mod, "DEFERRED_DEVICES", ("cpu", "cuda"))


@pytest.fixture
def corpus(tmp_path):
    p = tmp_path / "text.txt"
    p.write_text(TINY_TEXT * 2, encoding="utf-8")
    return p


def test_deferred_path_stops_at_the_first_nonfinite_step_before_writing(corpus, tmp_path, cli, monkeypatch,
                                                                         deferred):
    _nan_after(monkeypatch, 12)
    r = cli("train", corpus, "--checkpoint-dir", tmp_path, "--name", "n", "--max-steps", 50, "--save-every", 5,
            "--eval-every", 100, *MODEL)
    assert r.code == 2 and "non-finite loss at step 13" in r.err and "--lr" in r.err
    ckpt = load_checkpoint(str(tmp_path / "n" / "last.pt"))
    assert ckpt["train_state"]["step"] == 10
    assert all(torch.isfinite(v).all() for v in ckpt["model"].values() if v.is_floating_point())


def test_deferred_path_counts_skipped_steps(corpus, tmp_path, cli, monkeypatch, deferred):
    _nan_after(monkeypatch, 12)
    r = cli("train", corpus, "--checkpoint-dir", tmp_path, "--name", "s", "--max-steps", 20, "--save-every", 5,
            "--eval-every", 100, "--skip-nonfinite", *MODEL)
    assert r.code == 0, r.err
    assert "skipped 8 batches" in r.err
    ckpt = load_checkpoint(str(tmp_path / "s" / "last.pt"))
    assert ckpt["train_state"]["skipped"] == 8
    assert all(torch.isfinite(v).all() for v in ckpt["model"].values() if v.is_floating_point())
    import json
    train = [json.loads(line) for line in (tmp_path / "s" / "metrics.jsonl").read_text().splitlines()]
    train = [r for r in train if r["split"] == "train"]
    assert [r["step"] for r in train] == [5, 10, 15]  # steps 16-20 had no finite loss to report
