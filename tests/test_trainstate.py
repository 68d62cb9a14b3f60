"""trainstate: a trainer's position and history out to a checkpoint and back; refusals in one line."""

from __future__ import annotations

from types import SimpleNamespace

import pytest
import torch

from charrnn.training.distributed import OneProcess
from charrnn.errors import CharrnnError
from charrnn.settings import make_config
from charrnn.training.adapt import TrainLoss
from charrnn.training.state import TRAIN_STATE_VERSION, restore, train_state


def _trainer(**kw):
    model = torch.nn.Linear(3, 2)
    base = dict(cfg=make_config(), dist=OneProcess(), log=lambda m: None, device=torch.device("cpu"),
                precision="fp32", corpus=SimpleNamespace(digest="d"), ema=None, state=None, step=0, epoch=0, k=0,
                best_val=float("inf"), best={}, bad_evals=0, elapsed=0.0, tokens=0, skipped=0, last_val=None,
                opt=torch.optim.AdamW(model.parameters()), train_loss=TrainLoss())
    return SimpleNamespace(**{**base, **kw})


def test_round_trip_restores_position_history_and_hidden_state():
    h = (torch.randn(2, 4, 8), torch.randn(2, 4, 8))
    src = _trainer(state=h, step=17, epoch=2, k=5, best_val=1.5, best={"loss": 1.5, "step": 10}, bad_evals=1,
                   elapsed=12.5, tokens=4096, skipped=2, last_val={"loss": 1.6}, train_loss=TrainLoss(4.5, 3))
    ts = train_state(src)
    assert ts["version"] == TRAIN_STATE_VERSION and ts["corpus_digest"] == "d"
    dst = _trainer()
    restore(dst, {"train_state": ts, "optimizer": None})
    for name in ("step", "epoch", "k", "best_val", "best", "bad_evals", "elapsed", "tokens", "skipped", "last_val"):
        assert getattr(dst, name) == getattr(src, name), name
    assert dst.train_loss.state() == [4.5, 3]  # since the last evaluation: --adaptive-dropout's gap
    assert all(torch.equal(a, b) for a, b in zip(dst.state, h))


def test_newer_or_incomplete_states_are_refused_in_one_line():
    with pytest.raises(CharrnnError, match="newer than this charrnn") as e:
        restore(_trainer(), {"train_state": {"version": TRAIN_STATE_VERSION + 1}})
    assert "\n" not in str(e.value)
    with pytest.raises(CharrnnError, match="incomplete .KeyError"):
        restore(_trainer(), {"train_state": {"version": TRAIN_STATE_VERSION, "step": 3}})
