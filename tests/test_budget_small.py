"""The budget on small corpora (issue #24): steps planned for the layout the run really uses (records
windows included) and not capped at the compute model's epochs, the regularisation a many-epoch plan
adds and says, and the early stop (on under --max-time): its bookkeeping across a resume."""

from __future__ import annotations

import json
import math
import random

import pytest
import torch

from charrnn.data.batching import StreamBatcher
from charrnn.data.corpus import load_corpus
from charrnn.data.records import RecordBatcher, separator_ids
from charrnn.settings import AUTO_PATIENCE, make_config, patience
from charrnn.training import budget, generalise
from charrnn.training.layout import Layout
from tests.conftest import FAKE_COMPUTE_MODEL as K, TINY_TEXT, install_fake_probe, weights_hash

pytestmark = pytest.mark.usefixtures("one_thread")



def _words(n: int, seed: int = 0) -> str:
    """n made-up words of 2 to 12 letters, one per line (a word list read as records)."""
    rng = random.Random(seed)
    return "".join("".join(rng.choice("abcdefghij") for _ in range(rng.randint(2, 12))) + "\n" for _ in range(n))


@pytest.fixture
def words(tmp_path):
    p = tmp_path / "words.txt"
    p.write_text(_words(3000), encoding="utf-8")
    return p


@pytest.fixture
def fake_probe(monkeypatch):
    """probe.measure answers from a speed table (no timing), very fast: the plan reads the text many times."""
    return install_fake_probe(monkeypatch, 1e-11)


def _load(path, records=None, tmp=None):
    return load_corpus(str(path), "char", None, 0.1, 0.0, None, str(tmp), records=records)


def test_the_layout_counts_the_windows_the_batchers_make(words, tiny_corpus, tmp_path):
    c = _load(words, "\n", tmp_path / "c1")
    for batch, window in ((4, 16), (8, 8), (16, 64)):
        rb = RecordBatcher(c.train.ids, c.train.starts, separator_ids(c.tokenizer, "\n"), batch, window)
        lay = Layout(c, "\n")
        assert lay.windows_per_epoch(batch, window) == rb.windows_per_epoch
        assert lay.padding(batch, window) == pytest.approx(rb.padding)
        plan = rb.epoch_streams(0)
        shapes = {(len(w.rows), w.width) for w in plan}
        got = lay.shapes(batch, window)
        assert len(got) == 3 and set(got) <= shapes  # real windows of the plan: rows x width, not batch x window
        assert all(w <= min(window, 13) for _, w in got)  # a word of <= 12 letters and its separator: 13 inputs
    t = _load(tiny_corpus, None, tmp_path / "c2")
    sb = StreamBatcher(t.train.ids, 4, 16)
    assert Layout(t, None).windows_per_epoch(4, 16) == sb.windows_per_epoch
    assert Layout(t, None).shapes(4, 16) == [(4, 16)]


def test_planned_steps_are_not_capped_at_the_compute_models_epochs():
    """EPOCH_CAP bounds the steps the prediction counts, not the steps the run makes (the 3.4x of #24)."""
    opt = {"layers": 2, "hidden": 128, "batch_size": 16, "seq_len": 64, "params": 2e5, "step_cap": math.inf,
           "epoch_cap": 875, "per_epoch": 175}
    speed = lambda o: {"step_s": 0.04, "tok_s": 1024 / 0.04, "eval_s": 0.0}  # noqa: E731
    best, _ = budget.choose([opt], speed, 120, k=K)
    assert best["steps"] == 3000                                             # 120 s / 0.04 s
    assert best["predicted_loss"] == pytest.approx(budget.predict_loss(2e5, 875, 1024, K))
    best, _ = budget.choose([{**opt, "step_cap": 500}], speed, 120, k=K)  # --max-steps does end the run
    assert best["steps"] == 500


def test_a_records_plan_times_the_record_windows_and_states_its_epochs(words, tmp_path, fake_probe, cli):
    r = cli("train", words, "--records", "\\n", "--checkpoint-dir", tmp_path / "ck", "--max-time", 1, "--emb", 8,
            "--precision", "fp32")
    assert r.code == 0, r.err
    cfg = json.loads((tmp_path / "ck" / "words" / "config.json").read_text())
    choice = cfg["budget_choice"]
    c = _load(words, "\n", tmp_path / "c")
    lay = Layout(c, "\n")
    for row in choice["candidates"]:
        assert row["per_epoch"] == lay.windows_per_epoch(row["batch_size"], row["seq_len"])
    assert all(w < 16 for *_, w in fake_probe)  # timed at the word windows' widths, never at batch x 16
    chosen = next(row for row in choice["candidates"] if all(row[k] == cfg[k] for k in budget.SHAPE))
    assert choice["planned_epochs"] == pytest.approx(choice["planned_steps"] / chosen["per_epoch"], abs=0.01)
    line = next(x for x in r.err.splitlines() if x.startswith("budget: "))
    # the line's epochs are the plan's steps over the windows per epoch (planned_epochs is that rounded to
    # 2 places: rounded again to 1 it can differ, e.g. 3430.4537 -> 3430.45 -> "3430.4" against "3430.5")
    assert f"~{choice['planned_steps'] / chosen['per_epoch']:.1f} epochs" in line


def test_many_epochs_start_from_the_default_regularisers_and_the_line_names_the_adaptive_dropout(
        tiny_corpus, tmp_path, fake_probe, cli):
    """generalise.GENERALISE is off: a plan of hundreds of epochs keeps the default regularisers; the
    dropout may rise during the run (adapt.py), and the budget line says so, unless --dropout is given."""
    r = cli("train", tiny_corpus, "--checkpoint-dir", tmp_path / "ck", "--max-time", 1, "--emb", 8,
            "--precision", "fp32")
    assert r.code == 0, r.err
    cfg = json.loads((tmp_path / "ck" / "tiny" / "config.json").read_text())
    assert cfg["budget_choice"]["planned_epochs"] > 100 and generalise.FITTED["on"] is True
    assert cfg["weight_drop"] == 0 and cfg["dropout"] == 0.1 and cfg["adaptive_dropout"] is True
    line = next(x for x in r.err.splitlines() if x.startswith("budget: "))
    assert "against overfitting" not in line
    assert "epochs, in the" in line and "; dropout rises if the run memorises its text (--adaptive-dropout)" in line
    r = cli("train", tiny_corpus, "--checkpoint-dir", tmp_path / "ck", "--max-time", 1, "--emb", 8,
            "--precision", "fp32", "--dropout", 0.2, "--name", "given")
    assert r.code == 0, r.err
    cfg = json.loads((tmp_path / "ck" / "given" / "config.json").read_text())
    assert cfg["dropout"] == 0.2 and cfg["adaptive_dropout"] is False  # a given regulariser is never changed
    assert "--adaptive-dropout" not in next(x for x in r.err.splitlines() if x.startswith("budget: "))


def test_many_epochs_add_regularisation_and_the_line_says_why(tiny_corpus, tmp_path, fake_probe, cli, monkeypatch):
    """With the fitted rule switched on, the plan sets its strength and the budget line says why."""
    monkeypatch.setitem(generalise.GENERALISE, "on", True)
    r = cli("train", tiny_corpus, "--checkpoint-dir", tmp_path / "ck", "--max-time", 1, "--emb", 8,
            "--precision", "fp32")
    assert r.code == 0, r.err
    cfg = json.loads((tmp_path / "ck" / "tiny" / "config.json").read_text())
    choice = cfg["budget_choice"]
    chosen = next(row for row in choice["candidates"] if all(row[k] == cfg[k] for k in budget.SHAPE))
    epochs = choice["planned_steps"] / chosen["per_epoch"]  # the plan's own (planned_epochs is rounded)
    s = generalise.strength(epochs)
    assert epochs > 100 and s > 0   # a fast fake machine on a few hundred characters
    assert cfg["weight_drop"] == s and cfg["dropout"] == max(s, 0.1)
    line = next(x for x in r.err.splitlines() if x.startswith("budget: "))
    assert f"weight drop {s:g}" in line and "against overfitting" in line
    r = cli("train", tiny_corpus, "--checkpoint-dir", tmp_path / "ck", "--max-time", 1, "--emb", 8,
            "--precision", "fp32", "--dropout", 0.05, "--name", "given")
    cfg = json.loads((tmp_path / "ck" / "given" / "config.json").read_text())
    assert cfg["dropout"] == 0.05 and cfg["weight_drop"] == s  # a given regulariser is never changed


def test_the_strength_grows_with_epochs_and_is_zero_for_a_large_corpus():
    k = generalise.FITTED
    assert generalise.strength(0.5, k) == 0 and generalise.strength(k["E0"], k) == 0
    assert 0 < generalise.strength(2 * k["E0"], k) < generalise.strength(4 * k["E0"], k) <= k["S_MAX"]
    assert generalise.strength(1e9, k) == k["S_MAX"]
    assert generalise.strength(1e9) == 0  # what plans use: off
    assert generalise.regularisers(0.5, set(), 0.1, k) == ({}, "")
    chosen, why = generalise.regularisers(1e9, {"dropout", "weight_drop"}, 0.1, k)
    assert chosen == {} and why == ""


def test_the_early_stop_is_on_under_max_time_only_unless_given():
    assert patience(make_config(max_time=60)) == AUTO_PATIENCE
    assert patience(make_config(max_steps=60)) == 0
    assert patience(make_config(max_time=60, patience=0)) == 0
    assert patience(make_config(max_steps=60, patience=3)) == 3


def test_an_early_stop_keeps_best_pt_and_a_resume_continues_only_when_asked(tmp_path, cli):
    """A learning rate of 1e-30 leaves every fp32 weight as it was (an update of 1e-30 is below half an ulp of
    any weight of the initialisation), so every evaluation scores exactly what the first did: none improves,
    and the stop comes after --patience evaluations, deterministically."""
    text = tmp_path / "t.txt"
    text.write_text(TINY_TEXT * 4, encoding="utf-8")
    args = ["train", text, "--checkpoint-dir", tmp_path / "ck", "--layers", 1, "--hidden", 16, "--emb", 8,
            "--batch-size", 2, "--seq-len", 8, "--precision", "fp32", "--lr", 1e-30, "--max-steps", 30,
            "--eval-every", 3, "--save-every", 3, "--patience", 2]
    r = cli(*args)
    assert r.code == 0, r.err
    run = tmp_path / "ck" / "t"
    assert "early stop: no val improvement in 2 evaluations (best" in r.err and "at step 3)" in r.err
    assert "stopped early: no val improvement in 2 evaluations" in r.err
    vals = [json.loads(x) for x in (run / "metrics.jsonl").read_text().splitlines()]
    steps = [v["step"] for v in vals if v["split"] == "val"]
    assert steps == [3, 6, 9]
    best = (run / "best.pt").read_bytes()
    assert torch.load(run / "last.pt", weights_only=True)["train_state"]["step"] == 9
    r = cli("train", "--resume", run)  # stopped early: nothing to train, nothing written
    assert r.code == 0, r.err
    assert "nothing to train: the run stopped early" in r.err and "--patience" in r.err
    assert (run / "best.pt").read_bytes() == best
    h = weights_hash(run / "best.pt")
    r = cli("train", "--resume", run, "--patience", 0)  # asked to go on: it trains to --max-steps
    assert r.code == 0, r.err
    last = torch.load(run / "last.pt", weights_only=True)
    assert last["train_state"]["step"] == 30
    assert weights_hash(run / "best.pt") == h  # no evaluation improved: best.pt is still step 3's
    assert torch.load(run / "best.pt", weights_only=True)["train_state"]["step"] == 3


def test_a_regulariser_the_run_refuses_is_left_out(monkeypatch):
    """A cell without weight drop (a check_combination refusal): the plan keeps the dropout it can set."""
    from charrnn.errors import CharrnnError

    def check(cfg):
        if cfg.weight_drop > 0:
            raise CharrnnError("this cell has no weight drop")

    monkeypatch.setattr(budget, "check_combination", check)
    monkeypatch.setitem(generalise.GENERALISE, "on", True)
    cfg = make_config(max_time=60)
    planner = budget.Planner(cfg, set(), log=lambda m: None)
    chosen, why = planner._regularise(1e6)
    assert chosen == {"dropout": generalise.GENERALISE["S_MAX"]} and cfg.weight_drop == 0 and "weight drop" not in why
    assert cfg.dropout == generalise.GENERALISE["S_MAX"]
