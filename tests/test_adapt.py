"""--adaptive-dropout (training/adapt.py, issue #24): when it rises, by how much, where it is on, and
that a resumed run raises it as the uninterrupted one does (bit-identical weights)."""

from __future__ import annotations

import json
import math
import os
import signal

import pytest
import torch

import charrnn
from charrnn.settings import ADAPTIVE_DROPOUT, adaptive_dropout, make_config
from charrnn.training import adapt
from charrnn.training.adapt import TrainLoss, raised
from tests.conftest import TINY_TEXT, weights_hash

pytestmark = pytest.mark.usefixtures("one_thread")
GAP, STEP, MAX, STALL = adapt.GAP, adapt.STEP, adapt.MAX, adapt.STALL


def test_dropout_rises_only_when_validation_stalls_well_above_the_training_loss():
    # memorising: no gain on best.pt (or one below STALL), validation GAP or more above training
    assert raised(0.1, 0.0, 1.6, 1.6 - 2 * GAP) == 0.2  # exact: rounded to 4 places, the double nearest 0.2
    assert raised(0.1, -0.02, 1.6, 1.2) == 0.2
    assert raised(0.1, STALL / 2, 1.6, 1.2) == 0.2
    # improving by STALL or more, or near the training loss, or no finite training loss: unchanged
    assert raised(0.1, STALL, 1.6, 1.2) is None
    assert raised(0.1, 0.0, 1.6, 1.6 - GAP / 2) is None
    assert raised(0.1, 0.0, 1.2, 1.6) is None  # validation below training (zh_poems' case)
    assert raised(0.1, 0.0, 1.6, None) is None and raised(0.1, 0.0, 1.6, math.nan) is None
    # never past MAX, and nothing at MAX
    assert raised(MAX - STEP / 2, 0.0, 1.6, 1.0) == MAX and raised(MAX, 0.0, 1.6, 1.0) is None
    assert (GAP, STEP, MAX) == (ADAPTIVE_DROPOUT["gap"], ADAPTIVE_DROPOUT["step"], ADAPTIVE_DROPOUT["max"])


def test_the_training_loss_is_the_mean_of_the_finite_steps_since_the_last_take():
    t = TrainLoss()
    for v in (1.0, 2.0, math.inf, 3.0, math.nan):
        t.add(v)
    assert t.state() == [6.0, 3] and t.take() == 2.0  # exact: small integers
    assert t.take() is None  # nothing since
    for v in (torch.tensor(1.5), torch.tensor(math.nan), torch.tensor(2.5)):  # CUDA's path: tensors
        t.add(v)
    assert t.take() == 2.0
    assert TrainLoss(*t.state()).state() == [0.0, 0]


def test_on_under_max_time_unless_dropout_is_given():
    assert adaptive_dropout(make_config(max_time=60), set()) is True
    assert adaptive_dropout(make_config(max_time=60, dropout=0.2), {"dropout"}) is False  # the user's choice
    assert adaptive_dropout(make_config(max_steps=60), set()) is False
    assert adaptive_dropout(make_config(max_steps=60, adaptive_dropout=True), set()) is True
    assert adaptive_dropout(make_config(max_time=60, adaptive_dropout=False), set()) is False


@pytest.fixture
def always_memorising(monkeypatch):
    """Every evaluation counts as stalled and memorising, so the raises come at known steps."""
    monkeypatch.setattr(adapt, "STALL", math.inf)
    monkeypatch.setattr(adapt, "GAP", -math.inf)


def _raises(err: str) -> list[str]:
    return [x for x in err.splitlines() if "(memorising): dropout" in x]


def test_raises_reach_the_model_and_its_checkpoints_and_a_resume_repeats_them(tmp_path, cli, always_memorising):
    """Raises at steps 10, 15, 20, 25 (0.1 -> 0.5; the first evaluation, at step 5, always improves on
    the empty best). A run interrupted at step 12 (SIGINT, as Ctrl-C: last.pt two steps into the
    stretch after the step-10 evaluation) and resumed to 30 ends with the uninterrupted run's
    weights, bit for bit, and prints the same lines: the step-15 gap's training-loss mean spans the
    interruption."""
    text = tmp_path / "t.txt"
    text.write_text(TINY_TEXT * 8, encoding="utf-8")
    model = dict(layers=1, hidden=16, emb=8, batch_size=2, seq_len=8, precision="fp32", eval_every=5,
                 save_every=5, log_every=6, adaptive_dropout=True, max_steps=30)
    args = ["train", text, "--checkpoint-dir", tmp_path / "ck"] + [
        x for k, v in model.items() for x in (f"--{k.replace('_', '-')}", *([] if v is True else [v]))]
    whole = cli(*args, "--name", "whole")
    assert whole.code == 0, whole.err
    lines = _raises(whole.err)
    assert [x.split(":")[0] for x in lines] == ["step 10", "step 15", "step 20", "step 25"]
    assert lines[-1].endswith("dropout 0.4 -> 0.5 (--no-adaptive-dropout: keep it)")
    run = tmp_path / "ck" / "whole"
    assert torch.load(run / "last.pt", weights_only=True)["model_config"]["dropout"] == 0.5
    assert json.loads((run / "config.json").read_text())["adaptive_dropout"] is True

    def interrupt(record):
        if record["step"] == 12:
            os.kill(os.getpid(), signal.SIGINT)

    with pytest.raises(charrnn.Interrupted):
        charrnn.train(str(text), checkpoint_dir=tmp_path / "ck", name="part", on_log=interrupt, **model)
    run = tmp_path / "ck" / "part"
    state = torch.load(run / "last.pt", weights_only=True)["train_state"]
    assert state["step"] == 12 and state["train_loss"][1] == 2  # steps 11 and 12 since the step-10 evaluation
    rest = cli("train", "--resume", run)
    assert rest.code == 0, rest.err
    assert _raises(rest.err) == lines[1:]
    assert weights_hash(run / "last.pt") == weights_hash(tmp_path / "ck" / "whole" / "last.pt")


def test_off_by_default_without_max_time(tmp_path, cli, always_memorising):
    text = tmp_path / "t.txt"
    text.write_text(TINY_TEXT * 8, encoding="utf-8")
    r = cli("train", text, "--checkpoint-dir", tmp_path / "ck", "--layers", 1, "--hidden", 16, "--emb", 8,
            "--batch-size", 2, "--seq-len", 8, "--precision", "fp32", "--eval-every", 5, "--max-steps", 10)
    assert r.code == 0, r.err
    assert _raises(r.err) == []
    assert json.loads((tmp_path / "ck" / "t" / "config.json").read_text())["adaptive_dropout"] is False
