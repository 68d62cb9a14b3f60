"""schedule: warmup then cosine learning rate, the fraction of a run done, why it stops."""

from __future__ import annotations

import math
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest

from charrnn.system.progress import human_duration as human
from charrnn.training.duration import DurationNote, remaining_seconds
from charrnn.training.schedule import EndOfRun, estimate_total, lr_at, planned_steps, progress, stop_reason
from charrnn.settings import make_config
from tests.conftest import TINY_MODEL, TINY_TEXT

ROOT = Path(__file__).resolve().parents[1]


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
    # whole split (500 tokens) at 1 / EVAL_SPEEDUP of a training token's cost (0.5 s / 40 tokens / 2)
    want = 995 * 0.5 + 10 * 500 * 0.5 / 40 / EndOfRun.EVAL_SPEEDUP
    assert remaining_seconds(5, 1000, 0.5, 100, 500, 0, 40) == pytest.approx(want)
    assert lines == [f"about {human(want)} for 10 epochs (1,000 steps) of lstm 2x512, batch 4 x 10 (0.5 s per step, "
                     "here); use --max-time SECONDS to bound it"]
    quiet = []
    note = _note(quiet, max_time=600.0)  # a time limit: the user knows how long
    for step in range(1, 30):
        note.after_step(step, 0.5 * step, _Bar())
    assert quiet == []


def test_durations_read_as_a_person_says_them():
    assert [human(s) for s in (0.2, 45, 89, 95, 38 * 60 + 10, 2 * 3600 + 10 * 60, None, math.inf)] == [
        "1 s", "45 s", "89 s", "2 min", "38 min", "2 h 10 min", "-", "-"]


def test_the_duration_comes_at_once_from_the_budget_probe_when_it_timed_the_shape(tmp_path):
    import torch

    from charrnn.training import probe

    lines = []
    note = _note(lines, max_epochs=10.0)
    from charrnn.model.network import ModelConfig

    # a vocabulary of 256 is its own probe bucket: the cached figures apply unscaled (probe.timed_config)
    note.mc = ModelConfig(vocab_size=256, cell="lstm", layers=2, hidden=512, emb=64)
    machine = probe.machine_key(torch.device("cpu"), "fp32")
    cache = probe.ProbeCache(str(tmp_path))
    cache.put(machine, probe.shape_key(note.mc, 4, 10, 1), {"step_s": 0.5, "tok_s": 80.0, "eval_tok_s": 1000.0})
    cache.save()
    note.from_probe(torch.device("cpu"), "fp32", str(tmp_path))
    want = 1000 * 0.5 + 10 * 500 / 1000.0  # every step, and 10 whole-split evaluations at the probed speed
    assert lines == [f"about {human(want)} for 10 epochs (1,000 steps) of lstm 2x512, batch 4 x 10 (0.5 s per "
                     "step, this machine's probe); use --max-time SECONDS to bound it"]
    note.after_step(100, 50.0, _Bar())  # said once
    assert len(lines) == 1


# ----------------------------------------------------------------------------- the end of a --max-time run

def _end(**kw) -> EndOfRun:
    cfg = make_config(max_time=60.0, eval_every=10, save_every=5)
    return EndOfRun(cfg, **{"val_tokens": 1000, "full_tokens": 0, "tokens_per_step": 100, "state_bytes": 0, **kw})


def test_end_of_run_measures_steps_evaluations_and_saves_from_the_clock():
    end = _end()
    assert end.ahead(1) == 0.0                          # nothing measured yet
    end.step_done(1, 3.0, saved=False)                  # without start(), the first step is not measured
    end.step_done(2, 3.5, saved=False)
    assert end.step_s == pytest.approx(0.5)
    first = _end()
    first.start(0, 2.0)                                 # training starts at 2 s (start-up counted) ...
    first.step_done(1, 3.0, saved=False)                # ... and its first step (warm-up included) is measured,
    assert first.first_s == 1.0 and first.ahead(1) == 0.0  # but stops nothing: a warm-up is no step's time
    assert first.fit_tokens(50.0, 10**6) == 2000        # yet it bounds an evaluation out of time (200 tok/s)
    first.step_done(2, 3.5, saved=False)
    assert first.step_s == pytest.approx(0.5)           # forgotten once a second step is measured
    probed = _end(eval_tok_s=5000.0)                    # the probe's evaluation speed, until one is measured
    probed.step_done(1, 1.0, saved=False)
    probed.step_done(2, 1.5, saved=False)
    assert probed.eval_s() == pytest.approx(1000 / 5000)
    # before any evaluation, scoring is taken at EVAL_SPEEDUP x the training tokens per second (200 tok/s)
    assert end.eval_s() == pytest.approx(1000 / (EndOfRun.EVAL_SPEEDUP * 100 / 0.5))
    end.eval_done(1000, 2.0)                            # an evaluation: 500 tok/s ...
    end.step_done(3, 3.5 + 2.0 + 0.5 + 0.25, saved=True)  # ... then a step whose interval held it and a save
    assert end.eval_tok_s == 500 and end.step_s == pytest.approx(0.5) and end.save_s == pytest.approx(0.25)
    # kept for the end: the last evaluation and best.pt, then last.pt
    assert end.end() == pytest.approx(2.0 + 0.25 + 0.25)
    # before the next stop check: one more step and the end, plus this step's evaluation / save when due
    assert end.ahead(3) == pytest.approx(0.5 + end.end())
    assert end.ahead(5) == pytest.approx(0.25 + 0.5 + end.end())
    assert end.ahead(10) == pytest.approx(2.25 + 0.25 + 0.5 + end.end())


def test_end_of_run_keeps_time_for_the_full_score_of_best_and_a_save_before_one_is_measured():
    end = _end(full_tokens=12_000, state_bytes=int(EndOfRun.SAVE_BYTES_S))  # a save of one second, until measured
    end.step_done(1, 1.0, saved=False)
    end.step_done(2, 2.0, saved=False)
    end.eval_done(1000, 1.0)
    assert end.save_s == pytest.approx(1.0)
    assert end.end() == pytest.approx((1.0 + 1.0) + 1.0 + (12.0 + 1.0))  # eval + best.pt, last.pt, full + reading best
    # the trainer asks stop_reason about the clock plus what must still fit: it stops once that would not
    for elapsed, want in ((60.0 - end.ahead(2) - 0.01, None), (60.0 - end.ahead(2) + 0.01, "reached --max-time 60s")):
        assert stop_reason(end.cfg, 2, 0.0, elapsed + end.ahead(2)) == want
    assert progress(end.cfg, 2, 0.0, 30.0, reserve=end.end()) == pytest.approx(30.0 / (60.0 - end.end()))


def test_a_full_score_longer_than_a_quarter_of_the_budget_is_not_kept_for():
    """A 100 MB corpus's validation split can take longer to score than a short budget has: keeping
    time for it stopped a 60 s run after 2 steps. Past FULL_SHARE of the budget the run trains instead."""
    end = _end(full_tokens=16_000)
    end.step_done(1, 1.0, saved=False)
    end.step_done(2, 2.0, saved=False)
    end.eval_done(1000, 1.0)                            # 1000 tokens/s: the full score would take 16 s > 15 s
    assert end.end() == pytest.approx(1.0 + 0.0 + 0.0)  # the last evaluation only (saves take no time here)
    assert stop_reason(end.cfg, 2, 0.0, 20.0 + end.ahead(2)) is None
    end.eval_done(1000, 0.5)                            # faster than thought: 8 s fits in the quarter, kept again
    assert end.end() == pytest.approx(0.5 + 8.0)


def test_an_evaluation_out_of_time_is_bounded_rather_than_the_budget_overrun():
    end = _end()
    assert end.fit_tokens(0.0, 10**6) is None          # nothing measured: no bound
    end.step_done(1, 1.0, saved=False)
    end.step_done(2, 1.5, saved=False)
    end.eval_done(1000, 1.0)                            # 1000 tokens/s
    assert end.fit_tokens(10.0, 5000) is None           # 5 s of scoring, 50 s left
    assert end.fit_tokens(56.0, 5000) == 4000           # 4 s left: 4000 tokens
    assert end.fit_tokens(56.0, 5000, after=2.0) == 2000
    assert end.fit_tokens(70.0, 5000) == EndOfRun.MIN_EVAL_TOKENS  # past the budget: the least figure
    assert end.fit_tokens(70.0, 500) == 500


@pytest.mark.integration
def test_a_max_time_run_ends_within_its_budget_from_process_start(tmp_path):
    """`charrnn train --max-time 8` as a process of its own: start-up, training, evaluations and saves all
    fit in the 8 s. The bound: the run stops when one more step plus what follows it (the last evaluation
    and saves, measured as it went) would not fit, so its last file is written within 8 s up to the
    misestimate of those: a tiny model's step, evaluation and save take milliseconds (3% = 0.24 s covers
    them), but on a shared machine a process is taken off the CPU for up to a few hundred milliseconds
    at a time, which no estimate foresees (0.5 s more; measured here at load 10: 8.37 s). After the last
    file only the interpreter's exit remains (1 s allowed). A machine so busy that starting Python and
    importing charrnn alone takes half the budget cannot show this: the test is skipped there, naming
    the time."""
    corpus = tmp_path / "tiny.txt"
    corpus.write_text(TINY_TEXT, encoding="utf-8")
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(ROOT), os.environ.get("PYTHONPATH", "")])}
    t0 = time.time()
    subprocess.run([sys.executable, "-c", "import charrnn.api"], env=env, check=True, timeout=120)
    start_up = time.time() - t0
    if start_up > 4:
        pytest.skip(f"this machine took {start_up:.1f}s to start Python and import charrnn: too busy for 8 s")
    cmd = [sys.executable, "-m", "charrnn", "train", str(corpus), "--max-time", "8", "--checkpoint-dir",
           str(tmp_path / "ck"), *TINY_MODEL]
    t0 = time.time()
    r = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=120)
    wall = time.time() - t0
    assert r.returncode == 0, r.stderr
    run_dir = tmp_path / "ck" / "tiny"
    last_file = max(p.stat().st_mtime for p in run_dir.iterdir()) - t0
    assert (run_dir / "best.pt").exists() and "reached --max-time 8s" in r.stderr
    assert last_file <= 8 * 1.03 + 0.5
    assert wall <= 8 * 1.03 + 0.5 + 1.0
