"""schedule: warmup then cosine learning rate, the fraction of a run done, why it stops."""

from __future__ import annotations

import math

import pytest

from charrnn.training.schedule import estimate_total, lr_at, progress, stop_reason
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
