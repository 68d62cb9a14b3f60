"""schedule: warmup then cosine learning rate, the fraction of a run done, why it stops."""

from __future__ import annotations

import math
from types import SimpleNamespace

import pytest

from charrnn.training.duration import DurationNote, human, remaining_seconds
from charrnn.training.schedule import estimate_total, lr_at, planned_steps, progress, stop_reason
from charrnn.settings import make_config


def test_lr_warms_up_linearly_then_decays_by_cosine_to_the_floor():
    cfg = make_config(lr=1e-3, warmup=10, min_lr_frac=0.1)
    assert lr_at(cfg, 0, 0.0) == pytest.approx(1e-4)           # step 1 of 10
    assert lr_at(cfg, 9, 0.0) == pytest.approx(1e-3)           # warm
    assert lr_at(cfg, 50, 0.5) == pytest.approx(1e-3 * (0.1 + 0.9 * 0.5))
    assert lr_at(cfg, 99, 1.0) == pytest.approx(1e-4)          # the floor
    assert lr_at(cfg, 99, 3.0) == lr_at(cfg, 99, 1.0)          # clamped past the end
    assert lr_at(make_config(lr=1e-3, warmup=0), 0, 0.0) == pytest.approx(1e-3)


def test_progress_is_the_largest_fraction_of_the_limits_given():
    cfg = make_config(max_steps=100, max_epochs=2.0, max_time=60.0)
    assert progress(cfg, 10, 1.0, 6.0) == pytest.approx(0.5)    # epochs lead
    assert progress(cfg, 90, 0.1, 6.0) == pytest.approx(0.9)    # steps lead
    assert progress(cfg, 1, 0.0, 59.0) == pytest.approx(59 / 60)
    assert progress(make_config(max_steps=None, max_epochs=None), 5, 0.5, 1.0) == 0.0


@pytest.mark.parametrize("step,epochs,elapsed,want", [
    (100, 0.0, 0.0, "reached --max-steps 100"), (5, 2.0 - 1e-12, 0.0, "reached --max-epochs 2"),
    (5, 0.5, 60.0, "reached --max-time 60s"), (99, 1.9, 59.9, None)])
def test_stop_reason(step, epochs, elapsed, want):
    assert stop_reason(make_config(max_steps=100, max_epochs=2.0, max_time=60.0), step, epochs, elapsed) == want


def test_estimate_total_extrapolates_the_fraction_done():
    cfg = make_config(max_steps=None, max_time=60.0)
    assert estimate_total(cfg, 0, 0.0) is None
    assert estimate_total(cfg, 30, 0.25) == 120
    assert estimate_total(cfg, 30, 2.0) == 30 and not math.isnan(estimate_total(cfg, 1, 1e-9))
    assert estimate_total(make_config(max_steps=77), 0, 0.0) == 77


def test_the_bar_total_is_the_planned_steps_from_the_first_step():
    epochs = make_config(max_steps=None, max_epochs=10.0)
    assert planned_steps(epochs, 65) == 650 and estimate_total(epochs, 0, 0.0, 65) == 650
    assert planned_steps(make_config(max_steps=100, max_epochs=10.0), 65) == 100  # the fewer
    assert planned_steps(make_config(max_steps=None, max_epochs=0.5), 65) == 33   # the step that reaches it
    assert planned_steps(make_config(max_steps=None, max_epochs=None, max_time=60.0), 65) is None
    assert estimate_total(make_config(max_steps=None, max_time=60.0), 0, 0.0, 65) is None


class _Bar:
    disable = True


def _note(lines, **settings):
    cfg = make_config(**{"max_steps": None, "batch_size": 4, "seq_len": 10, "eval_every": 100, "eval_tokens": 0,
                         **settings})
    mc = type("MC", (), {"cell": "lstm", "layers": 2, "hidden": 512})()
    return DurationNote(cfg, mc, lines.append, 1000, 501, 0)


def test_without_a_time_limit_the_expected_duration_is_said_once():
    lines = []
    note = _note(lines, max_epochs=10.0)
    for step in range(1, 30):  # the first step warms up; then 0.5 s per step
        note.after_step(step, 5.0 + 0.5 * (step - 1), _Bar())
    # said at step 5, measured over steps 2-5 (2 s): 0.5 s per step; 995 steps left, 10 evaluations of the
    # whole split (500 tokens) at a third of a training token's cost (0.5 s / 40 tokens / 3)
    want = 995 * 0.5 + 10 * 500 * 0.5 / 40 / 3
    assert remaining_seconds(5, 1000, 0.5, 100, 500, 0, 40) == pytest.approx(want)
    assert lines == [f"about {human(want)} for 10 epochs (1,000 steps) of lstm 2x512, batch 4 x 10 (0.5 s per step, "
                     "here); use --max-time SECONDS to bound it"]
    quiet = []
    note = _note(quiet, max_time=600.0)  # a time limit: the user knows how long
    for step in range(1, 30):
        note.after_step(step, 0.5 * step, _Bar())
    assert quiet == []


def test_durations_read_as_a_person_says_them():
    assert [human(s) for s in (0.2, 45, 89, 95, 38 * 60 + 10, 2 * 3600 + 10 * 60)] == [
        "1 s", "45 s", "89 s", "2 min", "38 min", "2 h 10 min"]


def test_the_duration_comes_at_once_from_the_budget_probe_when_it_timed_the_shape(tmp_path):
    import torch

    from charrnn.training import probe

    lines = []
    note = _note(lines, max_epochs=10.0)
    note.mc = SimpleNamespace(cell="lstm", layers=2, hidden=512, emb=64, vocab_size=65, head="full", cutoffs=(),
                              tie_weights=False)
    machine = probe.machine_key(torch.device("cpu"), "fp32")
    cache = probe.ProbeCache(str(tmp_path))
    cache.put(machine, probe.shape_key(note.mc, 4, 10, 1), {"step_s": 0.5, "eval_tok_s": 1000.0})
    cache.save()
    note.from_probe(torch.device("cpu"), "fp32", str(tmp_path))
    want = 1000 * 0.5 + 10 * 500 / 1000.0  # every step, and 10 whole-split evaluations at the probed speed
    assert lines == [f"about {human(want)} for 10 epochs (1,000 steps) of lstm 2x512, batch 4 x 10 (0.5 s per "
                     "step, this machine's probe); use --max-time SECONDS to bound it"]
    note.after_step(100, 50.0, _Bar())  # said once
    assert len(lines) == 1
