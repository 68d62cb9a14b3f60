"""The peak learning rate a --max-time plan picks from its length (peak_lr.py, issue #24): higher for a
short plan, never below the default or above MAX, never above a wider model's share; the chosen rate
is the run's (config.json, the budget line); a given --lr is never changed."""

from __future__ import annotations

import json

import pytest

from charrnn.settings import TRAIN, by_name
from charrnn.training import peak_lr
from tests.conftest import install_fake_probe

pytestmark = pytest.mark.usefixtures("one_thread")

DEFAULT = by_name(TRAIN)["lr"].default
K = peak_lr.RULE


def test_a_shorter_plan_gets_a_higher_peak_within_the_default_and_max():
    steps = [1, 100, 500, 1000, 2000, 4000, 8000, K["REF_STEPS"], 10 * K["REF_STEPS"]]
    rates = [peak_lr.peak_lr(s, 256, DEFAULT) for s in steps]
    assert rates == sorted(rates, reverse=True)            # never higher for a longer plan
    assert rates[0] == K["MAX"] and rates[-1] == DEFAULT   # the bounds are reached at both ends
    assert peak_lr.peak_lr(K["REF_STEPS"], 256, DEFAULT) == DEFAULT
    assert peak_lr.peak_lr(2000, 256, DEFAULT) > DEFAULT
    assert all(float(f"{r:.2g}") == r for r in rates)     # two significant digits, as the line shows them


def test_a_wider_model_never_gets_more_than_its_share():
    """A model 4x wider than REF_HIDDEN gets a quarter of the narrow model's rate at most; both are rounded
    to two significant digits, which moves a value by at most 5% (half of the second digit's unit over a
    first digit of at least 1), hence the 1.05."""
    for steps in (100, 300, 1000, 3000):
        narrow, wide = peak_lr.peak_lr(steps, 256, DEFAULT), peak_lr.peak_lr(steps, 1024, DEFAULT)
        assert DEFAULT <= wide <= narrow
        if narrow < K["MAX"]:  # (a capped narrow rate says nothing of the raise it was capped from)
            assert wide <= max(DEFAULT, narrow / 4 * 1.05)
    assert peak_lr.peak_lr(1000, 128, DEFAULT) == peak_lr.peak_lr(1000, 256, DEFAULT)  # narrower: no bonus


def test_cells_it_was_not_measured_on_keep_the_default():
    assert peak_lr.peak_lr(1000, 256, DEFAULT, "lstm") > DEFAULT
    others = [c for c in by_name(TRAIN)["cell"].choices if c not in peak_lr.CELLS]
    assert "indrnn" in others and "qrnn" in others
    assert [peak_lr.peak_lr(1000, 256, DEFAULT, c) for c in others] == [DEFAULT] * len(others)


def _budget(tmp_path, name):
    cfg = json.loads((tmp_path / "ck" / name / "config.json").read_text())
    return cfg, cfg["budget_choice"]


def test_the_plan_sets_the_rate_for_its_steps_and_says_it(tiny_corpus, tmp_path, monkeypatch, cli):
    install_fake_probe(monkeypatch, 1e-8)  # a slow fake machine: a plan of a few hundred steps
    r = cli("train", tiny_corpus, "--checkpoint-dir", tmp_path / "ck", "--max-time", 1, "--emb", 8,
            "--precision", "fp32")
    assert r.code == 0, r.err
    cfg, choice = _budget(tmp_path, "tiny")
    expected = peak_lr.peak_lr(choice["planned_steps"], cfg["hidden"], DEFAULT)
    assert expected > DEFAULT and cfg["lr"] == expected and choice["chosen"]["lr"] == expected
    line = next(x for x in r.err.splitlines() if x.startswith("budget: "))
    assert f", lr {expected:g}, eval every" in line
    r = cli("train", tiny_corpus, "--checkpoint-dir", tmp_path / "ck", "--max-time", 1, "--emb", 8,
            "--precision", "fp32", "--lr", 1e-3, "--name", "given")
    assert r.code == 0, r.err
    cfg, choice = _budget(tmp_path, "given")
    assert cfg["lr"] == 1e-3 and "lr" not in choice["chosen"]  # a given --lr is never changed
    assert ", lr " not in next(x for x in r.err.splitlines() if x.startswith("budget: "))


def test_an_attention_layer_keeps_the_default_rate(tiny_corpus, tmp_path, monkeypatch, cli):
    """The rule was measured without --attention: with it the plan does not touch the rate."""
    install_fake_probe(monkeypatch, 1e-8)
    r = cli("train", tiny_corpus, "--checkpoint-dir", tmp_path / "ck", "--max-time", 1, "--emb", 8,
            "--precision", "fp32", "--attention", 4)
    assert r.code == 0, r.err
    cfg, choice = _budget(tmp_path, "tiny")
    assert cfg["lr"] == DEFAULT and "lr" not in choice["chosen"]
    assert ", lr " not in next(x for x in r.err.splitlines() if x.startswith("budget: "))


def test_without_max_time_the_default_rate_stays(tiny_corpus, tmp_path, cli):
    r = cli("train", tiny_corpus, "--checkpoint-dir", tmp_path / "ck", "--max-steps", 2, "--layers", 1,
            "--hidden", 16, "--emb", 8, "--batch-size", 2, "--seq-len", 8, "--precision", "fp32")
    assert r.code == 0, r.err
    cfg = json.loads((tmp_path / "ck" / "tiny" / "config.json").read_text())
    assert cfg["lr"] == DEFAULT and "budget_choice" not in cfg
