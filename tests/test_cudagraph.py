"""The CUDA-graph stepper's logic on the CPU: its static-buffer step, run eagerly, gives exactly the
tokens, texts and scores of the plain Stepper (fewer rows, more rows, beams); a graph is chosen on
CUDA only; a failed capture falls back to the eager step; a captured graph is replayed per step."""

from __future__ import annotations

import pytest
import torch

import charrnn.generation.cudagraph as cg
import charrnn.generation.kernels as kernels
import charrnn.generation.sample as sm
from charrnn.model.network import ModelConfig, RNNLM
from charrnn.generation.sample import Job, sample_options
from charrnn.generation.stepper import Stepper
from charrnn.data.tokenizers import fit_tokenizer
from tests.conftest import make_model

pytestmark = pytest.mark.usefixtures("one_thread")

TEXT = "the quick brown fox jumps over the lazy dog.\npack my box with five dozen liquor jugs!\n" * 5


def _model(cell="lstm", seed=0) -> RNNLM:
    m = make_model(40, cell, layers=2, hidden=32, emb=16, seed=seed, dropout=0.0)
    with torch.no_grad():
        m.head.weight.mul_(3.0)
    return m.eval()


def _zeros(m, rows):
    return tuple(tuple(torch.zeros(rows, 32) for _ in range(2)) for _ in range(2 if m.cfg.cell == "lstm" else 1))


@pytest.mark.numerics
@pytest.mark.parametrize("cell", ["lstm", "gru", "rnn"])
def test_static_buffer_steps_equal_the_plain_stepper(cell, monkeypatch):
    """The static buffers compute all the rows they hold (5 while 3 are live): a row's product in a
    batch of 5 may come from a BLAS kernel of another blocking than in a batch of 3, so the two agree
    to float32 rounding of the sums, not to the bit: within the 1e-5 to which a step agrees with the
    fused model (test_stepper.py). A wrong row or a stale state differs by orders more. One kernel
    for both (the fastest may differ between row counts)."""
    monkeypatch.setattr(kernels, "FORCE", "addmm")
    m = _model(cell)
    plain, static = Stepper(m), cg.GraphStepper(m, graph=False)
    a = b = _zeros(m, 5)
    ids = torch.randint(0, 40, (8, 30))
    rows = torch.arange(5)
    with torch.no_grad():
        for t in range(30):
            if t == 10:  # streams finish: fewer rows than the buffers hold
                rows = torch.tensor([4, 1, 0])
                a, b = plain.select(a, torch.tensor([4, 1, 0])), static.select(b, torch.tensor([4, 1, 0]))
            if t == 20:  # more rows than before (beam search widening): new buffers
                rows = torch.tensor([0, 1, 2, 3, 4, 5, 6, 7])
                grow = torch.tensor([0, 0, 1, 1, 2, 2, 0, 1])
                a, b = plain.select(a, grow), static.select(b, grow)
            la, a = plain(ids[rows, t], a)
            lb, b = static(ids[rows, t], b)
            torch.testing.assert_close(lb, la, atol=1e-5, rtol=1e-5)
            for p, q in zip(a, b):
                for x, y in zip(p, q):
                    torch.testing.assert_close(y, x, atol=1e-5, rtol=1e-5)
    assert static.rows == 8 and static.graph is None


@pytest.mark.parametrize("opts", [
    {"num_samples": 4, "temp": 1.0, "seed": 3},                                  # no rules: tensors per step
    {"num_samples": 5, "temp": 1.0, "seed": 4, "max_lines": 1},                  # streams finish early
    {"num_samples": 3, "temp": 0.7, "top_p": 0.9, "seed": 5, "stop": ("o",)},
    {"beam": 4, "num_samples": 2},                                               # rows grow from 2 to 5
])
def test_sampling_through_the_static_buffers_gives_the_same_samples(opts, monkeypatch):
    # As above, the two agree to float rounding; a token could differ only where a draw lands within
    # that rounding (~1e-6) of an edge of its interval (draw.py): for these few hundred draws, a chance
    # of ~1e-4 on a CPU, fixed per machine. One kernel for both.
    monkeypatch.setattr(kernels, "FORCE", "addmm")
    tok = fit_tokenizer("char", TEXT)
    m = RNNLM(ModelConfig(vocab_size=tok.vocab_size, cell="lstm", layers=2, hidden=32, emb=16, dropout=0.0)).eval()
    o = sample_options({"length": 60, "precision": "fp32", **opts})
    want = list(Job(m, tok, "the ", o).samples())
    made = []
    monkeypatch.setattr(sm, "make_stepper", lambda model, precision, device: made.append(
        cg.GraphStepper(model, precision, graph=False)) or made[-1])
    got = list(Job(m, tok, "the ", o).samples())
    assert len(made) == 1 and made[0].rows > 0
    assert [(s.index, s.text, s.tokens, s.end) for s in got] == [(s.index, s.text, s.tokens, s.end) for s in want]
    for g, w in zip(got, want):  # 60 log-probabilities, each within 1e-5 (above)
        assert g.logprob == pytest.approx(w.logprob, abs=60 * 1e-5)


def test_a_graph_is_chosen_on_cuda_only(monkeypatch):
    m = _model()
    assert type(cg.make_stepper(m, "fp32", "cpu")) is Stepper
    assert not cg.wants_graph("cpu") and not cg.wants_graph("mps")
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    assert cg.wants_graph("cuda") and not cg.wants_graph("cpu") and not cg.wants_graph("mps")
    assert cg.GraphStepper(m).want_graph is False  # its weights are on the CPU


def test_a_failed_capture_falls_back_to_the_eager_step():
    m = _model()
    plain, graphed = Stepper(m), cg.GraphStepper(m, graph=True)  # no CUDA here: the capture fails
    with torch.no_grad():
        la, _ = plain(torch.tensor([1, 2]), _zeros(m, 2))
        lb, _ = graphed(torch.tensor([1, 2]), _zeros(m, 2))
    assert graphed.graph is None and graphed.failed and torch.equal(la, lb)


def test_a_captured_graph_is_replayed_once_per_step_and_recaptured_only_to_grow(monkeypatch):
    monkeypatch.setattr(kernels, "FORCE", "addmm")
    m = _model()
    captures, replays, bodies = [], [], []
    real_body = cg.GraphStepper._body

    class FakeGraph:  # what a torch.cuda.CUDAGraph of this step does: replay() runs the captured step
        def __init__(self, stepper):
            self.stepper = stepper

        def replay(self):
            replays.append(self.stepper.rows)
            self.stepper._body()

    monkeypatch.setattr(cg.GraphStepper, "_capture", lambda self: captures.append(self.rows) or FakeGraph(self))
    monkeypatch.setattr(cg.GraphStepper, "_body", lambda self: bodies.append(1) or real_body(self))
    plain, graphed = Stepper(m), cg.GraphStepper(m, graph=True)
    a = b = _zeros(m, 3)
    with torch.no_grad():
        for t, n in enumerate((3, 3, 2, 2, 4, 4, 1)):
            if a[0][0].shape[0] != n:
                index = torch.arange(n) % a[0][0].shape[0]
                a, b = plain.select(a, index), graphed.select(b, index)
            la, a = plain(torch.arange(n) + t, a)
            lb, b = graphed(torch.arange(n) + t, b)
            torch.testing.assert_close(lb, la, atol=1e-5, rtol=1e-5)  # buffer rows vs live rows: see above
    assert captures == [3, 4] and replays == [3, 3, 3, 3, 4, 4, 4] and len(bodies) == 7  # never eager as well


def test_the_plain_stepper_is_prepared_once_per_weights():
    """Sampling again from the same model reuses its prepared products; changed weights prepare anew."""
    import torch

    from charrnn.generation.cudagraph import make_stepper
    from tests.conftest import make_model

    model = make_model(20, "lstm", 1, 32, 8, seed=0, dropout=0.0)
    a = make_stepper(model, "fp32", torch.device("cpu"))
    assert make_stepper(model, "fp32", torch.device("cpu")) is a
    assert make_stepper(model, "bf16", torch.device("cpu")) is not a
    x = torch.tensor([3])
    with torch.no_grad():
        model.rnn.weight_hh_l0.mul_(2)  # in place: same storage, a new version
    b = make_stepper(model, "fp32", torch.device("cpu"))
    assert b is not a
    after = b(x, b.from_module((torch.zeros(1, 1, 32), torch.zeros(1, 1, 32))))[0]
    model.load_state_dict({k: v * 1.5 for k, v in model.state_dict().items()})
    c = make_stepper(model, "fp32", torch.device("cpu"))
    assert c is not b
    assert not torch.equal(c(x, c.from_module((torch.zeros(1, 1, 32), torch.zeros(1, 1, 32))))[0], after)
