"""The product kernel is chosen by timing once per machine and shape (cached), a failing kernel falls
back to addmm, and a seed gives the same sample whichever fp32 kernel multiplies and whichever
instruction set the CPU code takes.

Why the samples agree, and the bound used: every fp32 kernel computes the same sums in another order,
so two kernels' probabilities differ by float32 rounding (~1e-7 relative per product, ~1e-6 after the
recurrence). A token is drawn as the first whose cumulative probability (float64) exceeds a uniform u
drawn from the seeded generator (draw.py); u is the same in every run (53 bits of mt19937, scalar
code), so a token can differ between two runs only where u lands within |cdf_A - cdf_B| of an edge of
its interval (``draw.margin``). The tests measure both per step and assert exactly that implication
until the first differing token (after it the streams go apart), and that the distributions agree
to 1e-5 in total variation: a rare unlucky draw cannot fail them, a real difference always does.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys

import numpy as np
import pytest
import torch

import charrnn.generation.kernels as kernels
import charrnn.generation.sample as sm
from charrnn.generation import draw
from charrnn.generation.stepper import Stepper
from charrnn.system.device import machine_id
from tests.conftest import make_model

TV_BOUND = 1e-5  # fp32 rounding of the products: ~1e-6 per probability (see the docstring), with room


@pytest.fixture
def fresh_cache(tmp_path, monkeypatch):
    monkeypatch.setattr(kernels, "cache_dir", str(tmp_path))
    monkeypatch.setattr(kernels, "_memory", {})
    return tmp_path / kernels.CACHE_FILE


def _product(N=256, K=96) -> kernels.Product:
    gen = torch.Generator().manual_seed(0)
    return kernels.Product(torch.randn(N, K, generator=gen) * 0.1, torch.randn(N, generator=gen), "sigmoid")


def _no_timing(*_args):
    raise AssertionError("timed again although the choice was cached")


def test_the_cached_winner_is_used_without_timing(fresh_cache, monkeypatch):
    p = _product()
    fresh_cache.write_text(json.dumps({"version": kernels.CACHE_VERSION,
                                       "machines": {machine_id(): {p.shape_key(4): "addmm_nt"}}}))
    monkeypatch.setattr(kernels, "time_candidates", _no_timing)
    assert p.kernel(3) == "addmm_nt"  # 3 rows share the choice made for 4
    x = torch.rand(3, p.K)
    torch.testing.assert_close(p(x), torch.sigmoid(x @ p.w.t() + p.b), atol=1e-6, rtol=1e-6)


def test_the_timed_winner_is_cached_on_disk_for_the_next_process(fresh_cache, monkeypatch):
    timed = []
    real = kernels.time_candidates

    def timing(p, names, rows):
        timed.append(rows)
        return real(p, names, rows)

    monkeypatch.setattr(kernels, "time_candidates", timing)
    won = _product().kernel(64)
    assert timed == [64] and won in _product().candidates()
    saved = json.loads(fresh_cache.read_text())["machines"][machine_id()]
    assert saved == {_product().shape_key(64): won}
    monkeypatch.setattr(kernels, "_memory", {})  # as a new process: only the file remembers
    monkeypatch.setattr(kernels, "time_candidates", _no_timing)
    assert _product().kernel(50) == won


def test_a_damaged_cache_is_timed_again(fresh_cache):
    fresh_cache.write_text("{not json")
    assert _product().kernel(1) in _product().candidates()
    assert json.loads(fresh_cache.read_text())["version"] == kernels.CACHE_VERSION


def test_kernels_that_fail_or_disagree_are_not_chosen(fresh_cache, monkeypatch):
    real = kernels.Product.run

    def run(self, name, x, out):
        if name in ("addmm_nt", "addmm_new", "addmv"):
            raise RuntimeError("not on this build")
        y = real(self, name, x, out)
        return y + 1 if name == "onednn" else y  # a kernel giving wrong numbers

    monkeypatch.setattr(kernels.Product, "run", run)
    p = _product()
    assert p.kernel(8) == "addmm" and {"addmm_nt", "addmm_new", "addmv"} <= p.failed
    assert p.candidates() == ["addmm"]  # (the one giving wrong numbers is out too, where this build has it)


def test_a_kernel_that_fails_later_falls_back_to_addmm(fresh_cache, monkeypatch):
    p = _product()
    fresh_cache.write_text(json.dumps({"version": kernels.CACHE_VERSION,
                                       "machines": {machine_id(): {p.shape_key(2): "addmm_nt"}}}))
    real = kernels.Product.run

    def run(self, name, x, out):
        if name == "addmm_nt":
            raise RuntimeError("gone")  # e.g. a kernel of this torch that fails on some input
        return real(self, name, x, out)

    monkeypatch.setattr(kernels.Product, "run", run)
    x = torch.rand(2, p.K)
    torch.testing.assert_close(p(x), torch.sigmoid(x @ p.w.t() + p.b), atol=1e-6, rtol=1e-6)
    assert p.kernel(2) == "addmm" and "addmm_nt" in p.failed


def test_a_stepper_can_be_told_a_kernel_only_where_it_runs():
    step = Stepper(make_model(30, "lstm", 1, 32, 8, seed=0, dropout=0.0))
    assert step.use_kernel("addmm_nt") and all(p.kernel(5) == "addmm_nt" for p in step.products())
    assert not step.use_kernel("no such kernel") and all(p.forced == "addmm_nt" for p in step.products())
    assert step.use_kernel(None) and all(p.forced is None for p in step.products())


# -- the same sample whichever kernel multiplies

class Recorder(draw.Chooser):
    """A Chooser that keeps each step's log-probabilities, uniforms and tokens."""

    steps: list = []

    def __call__(self, logp):
        before = self.gen.get_state()
        tok = super().__call__(logp)
        again = torch.Generator().manual_seed(0)
        again.set_state(before)
        u = torch.rand(logp.shape[0], 1, generator=again, dtype=torch.float64)
        Recorder.steps.append((logp.detach().double().clone(), u.view(-1), tok.clone()))
        return tok


def check_same_draws(a: list, b: list) -> int:
    """Steps of two runs agree: the same tokens wherever the first run's draw landed further from an
    edge than the two runs' cumulative probabilities differ; distributions within TV_BOUND. Returns
    the number of steps compared (up to and including the first differing token)."""
    for t, ((la, ua, ta), (lb, ub, tb)) in enumerate(zip(a, b)):
        assert torch.equal(ua, ub)  # the same uniforms: the seed, not the kernels, decides them
        pa, pb = la.exp(), lb.exp()
        pa, pb = pa / pa.sum(-1, keepdim=True), pb / pb.sum(-1, keepdim=True)
        assert (0.5 * (pa - pb).abs().sum(-1)).max().item() <= TV_BOUND
        differ = ta != tb
        if differ.any():
            gap = (pa.cumsum(-1) - pb.cumsum(-1)).abs().amax(-1)
            assert (draw.margin(la, 1.0, ua)[differ] <= gap[differ]).all()
            return t + 1
    return len(a)


def _record(model, tok, opts) -> tuple[list, list]:
    Recorder.steps = []
    out = [s.text for s in sm.Job(model, tok, "", sm.sample_options(opts)).samples()]
    return out, Recorder.steps


def test_every_fp32_kernel_gives_the_same_sample_for_a_seed(monkeypatch):
    from charrnn.data.tokenizers import CharTokenizer

    tok = CharTokenizer.fit("abcdefghijklmnopqrstuvwxyz .,\n")
    model = make_model(tok.vocab_size, "lstm", 2, 64, 16, seed=1, dropout=0.0)
    monkeypatch.setattr(sm, "Chooser", Recorder)
    opts = {"length": 300, "num_samples": 3, "seed": 11, "temp": 1.0, "precision": "fp32"}
    names = [n for n in Stepper(model).layers[0][0].candidates() if Stepper(model).use_kernel(n)]
    assert "addmm" in names and "addmm_nt" in names
    monkeypatch.setattr(kernels, "FORCE", "addmm")
    ref_text, ref = _record(model, tok, opts)
    for name in names[1:]:
        monkeypatch.setattr(kernels, "FORCE", name)
        model.__dict__.pop("_charrnn_steppers", None)
        text, steps = _record(model, tok, opts)
        compared = check_same_draws(ref, steps)
        print(f"{name}: {compared} of {len(ref)} steps compared, same text: {text == ref_text}")  # (-s shows it)
        if compared == len(ref):
            assert text == ref_text


SAMPLER = """
import os, sys, numpy as np, torch
import charrnn.generation.sample as sm
from charrnn.api import load
sys.path[:0] = [sys.argv[3], os.path.dirname(sys.argv[3])]  # the tests, and the repository (tests.conftest)
from test_kernels import Recorder
sm.Chooser = Recorder
m = load(sys.argv[1], device="cpu")
job = sm.Job(m.module, m.tokenizer, "", sm.sample_options({"length": 2000, "seed": 5, "temp": 1.0}))
text = [s.text for s in job.samples()][0]
logp, u, tok = (torch.stack([s[k] for s in Recorder.steps]).numpy() for k in range(3))
np.savez(sys.argv[2], logp=logp, u=u, tok=tok, text=np.array(text), isa=np.array(torch.backends.cpu.get_cpu_capability()))
"""


@pytest.mark.slow
@pytest.mark.integration
def test_a_seed_gives_the_same_text_under_another_cpu_code_path(trained_run, tmp_path):
    """2,000 characters from the tiny trained model with one seed, in a process on the default code path and
    one with torch's portable (non-SIMD) kernels and oneDNN held to AVX2: the same text, up to a token
    whose draw landed within the two paths' rounding of an edge (then checked as such; see the top)."""
    run_dir = trained_run[0]
    runs = {}
    for name, env in (("native", {}), ("portable", {"ATEN_CPU_CAPABILITY": "default", "ONEDNN_MAX_CPU_ISA": "AVX2"})):
        full = {**os.environ, "OMP_NUM_THREADS": "1", **env}
        for k in ("ATEN_CPU_CAPABILITY", "ONEDNN_MAX_CPU_ISA"):
            if k not in env:
                full.pop(k, None)
        out = tmp_path / f"{name}.npz"
        subprocess.run([sys.executable, "-c", SAMPLER, str(run_dir), str(out), os.path.dirname(__file__)],
                       env=full, cwd=tmp_path, check=True, timeout=600)
        runs[name] = np.load(out)
    a, b = runs["native"], runs["portable"]
    assert str(b["isa"]) == "DEFAULT"
    steps = [[(torch.from_numpy(r["logp"][t]), torch.from_numpy(r["u"][t]), torch.from_numpy(r["tok"][t]))
              for t in range(len(r["tok"]))] for r in (a, b)]
    compared = check_same_draws(*steps)
    print(f"{compared} of {len(steps[0])} draws compared; same text: {str(a['text']) == str(b['text'])}")  # (-s)
    if compared == len(steps[0]):
        assert str(a["text"]) == str(b["text"]) and len(str(a["text"])) >= 2000


def test_on_a_gpu_nothing_is_timed_cublas_is_the_kernel():
    """A host timer would measure kernel launches on a GPU: there the one candidate is the BLAS product
    (checked with a tensor on the meta device, which stands for any non-CPU device here)."""
    from charrnn.generation.kernels import FALLBACK, Product

    p = Product(torch.zeros(8, 4, device="meta"), torch.zeros(8, device="meta"))
    assert p.candidates() == [FALLBACK]
    assert Product(torch.zeros(8, 4, device="meta"), torch.zeros(8, device="meta"),
                   dtype=torch.bfloat16).candidates() == ["mm_bf16"]


# -- how an LSTM step takes tanh(c): timed like a kernel, both forms the same function

def test_the_cached_tanh_form_is_used_without_timing(fresh_cache, monkeypatch):
    fresh_cache.write_text(json.dumps({"version": kernels.CACHE_VERSION,
                                       "machines": {machine_id(): {"lstm tanh(c) 32 rows 8": "tanh"}}}))
    monkeypatch.setattr(kernels, "fastest", _no_timing)
    assert kernels.tanh_form(32, 5) == "tanh"  # 5 rows share the choice made for 8
    monkeypatch.undo()
    monkeypatch.setattr(kernels, "cache_dir", str(fresh_cache.parent))
    monkeypatch.setattr(kernels, "_memory", {})
    assert kernels.tanh_form(32, 100) in kernels.TANH_FORMS  # another row count: timed, then cached
    assert json.loads(fresh_cache.read_text())["machines"][machine_id()]["lstm tanh(c) 32 rows 128"] in kernels.TANH_FORMS


@pytest.mark.numerics
@pytest.mark.parametrize("form", kernels.TANH_FORMS)
def test_both_tanh_forms_step_like_the_fused_lstm_and_the_runner_like_the_stepper(form):
    from charrnn.generation.stepper import Runner

    m = make_model(40, "lstm", 2, 64, 16, seed=0, dropout=0.0)
    ids = torch.randint(0, 40, (3, 10), generator=torch.Generator().manual_seed(1))
    step = Stepper(m)
    step.forced_form = form
    with torch.no_grad():
        want, _ = m(ids)
        zeros = tuple(torch.zeros(3, 64) for _ in range(2))
        state = (zeros, zeros)
        runner = Runner(step, state)
        runner.form = form
        for t in range(ids.shape[1]):
            logp, state = step(ids[:, t], state)
            # 2 sigmoid(2c) - 1 and tanh(c) are the same function: they differ by float32 rounding (a few
            # eps of O(1) values per step), the fused kernel's sums by ~sqrt(hidden) eps more: ~1e-6
            # after 10 steps; a wrong form (e.g. a missing 2 o t - o) moves them by >= 1e-2
            torch.testing.assert_close(logp, torch.log_softmax(want[:, t], -1), atol=1e-5, rtol=1e-5)
            # the Runner runs the very same ops in place: equal to the bit
            assert torch.equal(runner(ids[:, t]), logp)


@pytest.mark.parametrize("second_cost, chosen", [(0.99, "plain"), (0.9, "other")])
def test_another_kernel_must_beat_the_plain_one_by_the_margin(monkeypatch, second_cost, chosen):
    """A candidate 1% faster than the first (the plain one) is within timing noise and is not chosen
    (its choice would be cached for good); 10% faster is (kernels.MARGIN = 3%). A fake clock: each call
    advances it by its cost, so the timings are exact."""
    clock = [0.0]
    monkeypatch.setattr(kernels.time, "perf_counter", lambda: clock[0])

    def cost(c):
        def call():
            clock[0] += c * 1e-4
        return call

    assert kernels.MARGIN == 0.03
    assert kernels.fastest({"plain": cost(1.0), "other": cost(second_cost)}) == chosen
