"""--ema: the moving-average arithmetic, swapping the averaged weights in and out, best.pt holding the
averaged weights and eval scoring them, and last.pt holding the raw weights plus the average."""

from __future__ import annotations

import json

import pytest
import torch

from charrnn.model.checkpoint import load_checkpoint
from charrnn.training.ema import EMA
from tests.conftest import TINY_MODEL, TINY_TEXT, make_model

pytestmark = pytest.mark.usefixtures("one_thread")


def tiny():
    return make_model(11, layers=2, hidden=8, emb=4, seed=0, dropout=0.1).train()


@pytest.mark.numerics
def test_update_is_the_warmed_up_moving_average():
    m = tiny()
    ema = EMA(m, 0.9)
    want = {k: v.clone() for k, v in m.state_dict().items()}
    for n in range(30):
        with torch.no_grad():
            for p in m.parameters():
                p.add_(torch.randn_like(p))
        d = min(0.9, (1 + n) / (10 + n))
        want = {k: d * want[k] + (1 - d) * v for k, v in m.state_dict().items()}
        ema.update(m)
    got = ema.state()["weights"]
    assert set(got) == set(want) and ema.updates == 30
    for k in want:
        torch.testing.assert_close(got[k], want[k])


def test_applied_swaps_in_the_average_and_restores_the_weights_exactly():
    m = tiny()
    ema = EMA(m, 0.5)
    with torch.no_grad():
        for p in m.parameters():
            p.mul_(3.0)
    ema.update(m)
    raw = {k: v.clone() for k, v in m.state_dict().items()}
    with ema.applied(m):
        inside = m.state_dict()
        for k, v in ema.state()["weights"].items():
            assert torch.equal(inside[k], v)
        assert not torch.equal(inside["rnn.weight_hh_l0"], raw["rnn.weight_hh_l0"])
    for k, v in m.state_dict().items():
        assert torch.equal(v, raw[k])


def test_state_round_trip():
    m = tiny()
    a = EMA(m, 0.99)
    for _ in range(3):
        with torch.no_grad():
            m.embed.weight.add_(1.0)
        a.update(m)
    b = EMA(tiny(), 0.99)
    b.load(a.state())
    assert b.updates == 3
    for k, v in a.state()["weights"].items():
        assert torch.equal(b.state()["weights"][k], v)
    with pytest.raises(KeyError):
        b.load({"updates": 1, "weights": {"nope": torch.zeros(1)}})


@pytest.mark.numerics
def test_best_pt_holds_the_average_and_eval_scores_it(cli, tmp_path):
    corpus = tmp_path / "t.txt"
    corpus.write_text(TINY_TEXT, encoding="utf-8")
    r = cli("train", corpus, "--checkpoint-dir", tmp_path, "--name", "e", *TINY_MODEL, "--max-steps", 40,
            "--ema", 0.9, "--eval-every", 40, "--save-every", 40)
    assert r.code == 0, r.err
    best, last = load_checkpoint(str(tmp_path / "e" / "best.pt")), load_checkpoint(str(tmp_path / "e" / "last.pt"))
    assert best["train_state"]["step"] == last["train_state"]["step"] == 40
    averaged = last["train_state"]["ema"]["weights"]
    assert last["train_state"]["ema"]["updates"] == 40
    for k, v in averaged.items():
        assert torch.equal(best["model"][k], v)  # best.pt: the averaged weights
    assert not torch.equal(last["model"]["rnn.weight_hh_l0"], averaged["rnn.weight_hh_l0"])  # last.pt: raw ones
    val = [json.loads(line) for line in open(tmp_path / "e" / "metrics.jsonl") if '"val"' in line][-1]
    r = cli("eval", tmp_path / "e", "--json", "--checkpoint-dir", tmp_path)
    assert r.code == 0, r.err
    assert json.loads(r.out)["loss"] == pytest.approx(val["loss"], abs=1e-4)  # the trainer scored these weights
    r = cli("sample", tmp_path / "e", "--length", 20, "--seed", 1, "--checkpoint-dir", tmp_path)
    assert r.code == 0 and len(r.out) >= 10
