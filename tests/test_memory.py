"""The memory estimate: closed-form parameters, parts that grow with what they should, and the
one-line refusal of a run that cannot fit, before any model is built."""

from __future__ import annotations

import dataclasses
import json

import numpy as np
import pytest
import torch

from charrnn.training import budget
from charrnn.training import memory
from charrnn.errors import CharrnnError
from charrnn.model.heads import resolve_head
from charrnn.model import sizes
from charrnn.model.network import RNNLM
from charrnn.settings import make_config
from tests.conftest import TINY_MODEL, snapshot, make_model

pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.mark.parametrize("cell,V,h,layers,tied", [("lstm", 65, 32, 2, False), ("gru", 100, 24, 1, False),
                                                  ("rnn", 7, 16, 3, False), ("lstm", 50, 16, 2, True),
                                                  ("lstm", 3000, 40, 2, False), ("gru", 9000, 64, 1, False)])
def test_parameter_count_in_closed_form_equals_the_model(cell, V, h, layers, tied):
    head, cutoffs = resolve_head("auto", V, tied)
    emb = h if tied else 8
    model = make_model(V, cell, layers, h, emb, dropout=0.0, tie_weights=tied, head=head, cutoffs=cutoffs)
    assert sizes.n_parameters(V, cell, layers, h, emb, head, cutoffs, tied) == model.num_parameters()


def _est(**kw):
    base = dict(vocab=65, cell="lstm", layers=2, hidden=256, emb=64, batch=16, window=64)
    return memory.estimate(**{**base, **kw})


def test_each_part_grows_with_what_it_holds():
    small = _est()
    assert _est(hidden=512)["parts"]["weights and optimizer state"] > 3 * small["parts"]["weights and optimizer state"]
    assert _est(batch=64)["parts"]["activations"] == 4 * small["parts"]["activations"]
    assert _est(window=128)["parts"]["output logits"] == 2 * small["parts"]["output logits"]
    assert _est(vocab=650)["parts"]["output logits"] > 9 * small["parts"]["output logits"]
    assert _est(val_tokens=10**6)["parts"]["evaluation"] > small["parts"]["evaluation"]
    assert _est(device_data_tokens=10**6)["total"] == small["total"] + 4 * 10**6
    assert small["total"] > small["parts"]["weights and optimizer state"] + small["parts"]["runtime"]


def test_refusal_names_the_estimate_the_memory_available_and_what_to_lower():
    cfg = make_config(hidden=2_000_000)
    est = _est(hidden=2_000_000)
    with pytest.raises(CharrnnError) as e:
        memory.check(est, 16 * 10**9, cfg, "cpu")
    msg = str(e.value)
    assert "\n" not in msg
    assert msg.startswith(f"this run needs about {memory.human(est['total'])} of memory")
    assert "the CPU has 16.0 GB available" in msg and "lower --hidden (now 2000000)" in msg
    cfg = make_config(batch_size=4096, seq_len=4096)
    with pytest.raises(CharrnnError, match=r"lower --batch-size \(now 4096\) or --seq-len \(now 4096\)"):
        memory.check(_est(batch=4096, window=4096), 8 * 10**9, cfg, "cpu")
    memory.check(_est(), 8 * 10**9, make_config(), "cpu")  # fits: nothing said
    memory.check(_est(hidden=2_000_000), None, cfg, "cpu")  # unknown memory: nothing refused


def test_available_memory_is_read_from_the_system():
    """The real figure, on this machine (psutil reads it on every OS): plausible, and psutil's."""
    import psutil

    avail = memory.available_bytes("cpu")
    assert isinstance(avail, int) and avail > 10**7
    # the two reads are moments apart: other processes may allocate or free in between (1 GB allowed)
    assert abs(avail - psutil.virtual_memory().available) < 10**9


@pytest.fixture
def no_model(monkeypatch):
    """Any model construction fails the test: refusals must come before allocation."""
    def boom(self, *a, **k):
        raise AssertionError("RNNLM was built before the memory check")
    monkeypatch.setattr(RNNLM, "__init__", boom)


def test_an_absurd_hidden_size_is_refused_before_any_allocation(cli, tmp_path, tiny_corpus, no_model):
    corpus = tiny_corpus
    before = snapshot(tmp_path)
    r = cli("train", corpus, "--checkpoint-dir", tmp_path / "ck", "--hidden", 2000000, "--max-steps", 5)
    assert r.code == 2, r.err
    lines = r.err.strip().splitlines()
    assert len(lines) == 1  # no batch halving first: the batch is not what is too big
    assert lines[-1].startswith("error: this run needs about ") and "TB of memory" in lines[-1]
    assert "available; lower --hidden (now 2000000)" in lines[-1] and "Traceback" not in r.err
    assert snapshot(tmp_path) == before  # no file written, no corpus cached
    assert not (tmp_path / "ck" / "tiny").exists()  # the empty run directory is removed again


def test_a_batch_that_cannot_fit_is_refused_naming_the_batch(cli, tmp_path, tiny_corpus, monkeypatch, no_model):
    monkeypatch.setattr(memory, "available_bytes", lambda device: int(memory.RUNTIME["cpu"]) + 3 * 10**6)
    corpus = tiny_corpus
    r = cli("train", corpus, "--checkpoint-dir", tmp_path / "ck", "--layers", 1, "--hidden", 32, "--emb", 16,
            "--batch-size", 64, "--seq-len", 50, "--max-steps", 5, "--precision", "fp32")
    assert r.code == 2 and len(r.err.strip().splitlines()) == 1
    assert r.err.strip().endswith("available; lower --batch-size (now 64) or --seq-len (now 50)")
    assert "of memory (activations " in r.err


def test_a_batch_not_given_is_halved_until_it_fits(tmp_path, tiny_corpus, monkeypatch):
    import charrnn

    want = memory.estimate(vocab=49, cell="lstm", layers=1, hidden=32, emb=16, batch=8, window=16,
                           val_tokens=500)["total"]
    monkeypatch.setattr(memory, "available_bytes", lambda device: int(want / memory.FIT_FRACTION) + 1)
    logs = []
    monkeypatch.setattr("charrnn.api._logger", lambda verbose: logs.append)
    run = charrnn.train(tiny_corpus, checkpoint_dir=tmp_path / "ck", layers=1, hidden=32, emb=16,
                        seq_len=16, max_steps=3, precision="fp32", eval_every=10)
    cfg = json.loads((tmp_path / "ck" / "tiny" / "config.json").read_text())
    assert cfg["batch_size"] <= 8 and run.steps == 3
    assert any(line.startswith(f"batch {cfg['batch_size']} x 16: batch 32 would not fit") for line in logs)
    assert cfg["budget_choice"]["memory_halved_batch_from"] == 32


def test_the_tiny_model_fits_and_trains(cli, tmp_path, tiny_corpus):
    r = cli("train", tiny_corpus, "--checkpoint-dir", tmp_path / "ck", *TINY_MODEL, "--max-steps", 2)
    assert r.code == 0, r.err
    assert "note: this run needs" not in r.err


def test_ema_and_variable_windows_are_counted():
    """--ema keeps one more fp32 copy of the weights; --variable-len windows reach 1.2x --seq-len."""
    kw = dict(vocab=65, cell="lstm", layers=2, hidden=128, emb=32, batch=8, window=64)
    base, ema = memory.estimate(**kw), memory.estimate(**kw, ema=True)
    assert ema["total"] - base["total"] == 4 * base["parameters"]
    cfg = make_config(hidden=32, emb=8, batch_size=4, seq_len=20)
    planner = budget.Planner(cfg, given=set(), log=lambda m: None, choose_settings=False)

    class _Corpus:
        class tokenizer:
            vocab_size = 65
        train = val = type("S", (), {"ids": np.zeros(1000, np.uint8)})

    planner.corpus, planner.precision, planner.device = _Corpus, "fp32", torch.device("cpu")
    fixed, varied = planner.estimate(cfg), planner.estimate(dataclasses.replace(cfg, variable_len=True, ema=0.99))
    assert varied["total"] > fixed["total"]
    assert varied["parts"]["activations"] == fixed["parts"]["activations"] * 24 // 20


def test_available_ram_comes_from_psutil_on_every_os(monkeypatch):
    """No /proc needed (macOS, Windows): the figure is psutil's, whatever the OS."""
    import types

    import psutil

    monkeypatch.setattr(psutil, "virtual_memory", lambda: types.SimpleNamespace(available=123_456_789))
    assert memory.available_bytes("cpu") == 123_456_789
    monkeypatch.setattr(psutil, "virtual_memory", lambda: (_ for _ in ()).throw(OSError("no memory info")))
    assert memory.available_bytes("cpu") is None  # unknown: the estimate is printed, nothing refused
