"""The budget: the compute model's choice from a fake speed table (no timing), explicit settings
winning, resume never choosing again, the record in config.json, and the probe's cache."""

from __future__ import annotations

import json
import math
from types import SimpleNamespace

import numpy as np
import pytest
import torch

import charrnn
from charrnn.training import budget
from charrnn.training import probe
from charrnn.model.network import ModelConfig
from charrnn.settings import make_config
from tests.conftest import FAKE_COMPUTE_MODEL as K, TINY_TEXT, install_fake_probe

pytestmark = pytest.mark.usefixtures("one_thread")



def _opt(layers, hidden, batch, window, params=None, cap=float("inf")):
    return {"layers": layers, "hidden": hidden, "batch_size": batch, "seq_len": window,
            "params": params or 8 * hidden * hidden * layers, "step_cap": cap}


OPTIONS = [_opt(2, 128, 16, 64), _opt(2, 256, 16, 64), _opt(2, 512, 32, 128), _opt(2, 1024, 32, 128)]


def flops_speed(seconds_per_flop, eval_s=0.0, calls=None):
    """A fake machine: a step costs 6 x params x tokens floating-point operations."""
    def speed(o):
        if calls is not None:
            calls.append(o["hidden"])
        step_s = 6 * o["params"] * o["batch_size"] * o["seq_len"] * seconds_per_flop
        return {"step_s": step_s, "tok_s": o["batch_size"] * o["seq_len"] / step_s, "eval_s": eval_s}
    return speed


def test_predicted_loss_falls_with_parameters_steps_and_tokens_per_step():
    p = budget.predict_loss
    assert p(1e6, 1000, 1024, K) < p(1e5, 1000, 1024, K)
    assert p(1e6, 2000, 1024, K) < p(1e6, 1000, 1024, K)
    assert p(1e6, 1000, 4096, K) < p(1e6, 1000, 1024, K)
    assert p(1e6, 1000, 4096, K) > p(1e6, 4000, 1024, K)  # a step of 4x the tokens is worth less than 4 steps


def test_a_slow_machine_buys_a_small_model_and_a_fast_one_or_a_long_budget_a_larger_one():
    """With the calibrated compute model: 5 GFLOP/s for 300 s, 5 TFLOP/s for 300 s, 5 GFLOP/s for 30,000 s."""
    slow, rows = budget.choose(OPTIONS, flops_speed(1 / 5e9), 300)
    fast, _ = budget.choose(OPTIONS, flops_speed(1 / 5e12), 300)
    longer, _ = budget.choose(OPTIONS, flops_speed(1 / 5e9), 30000)
    assert slow["hidden"] < fast["hidden"] and slow["hidden"] < longer["hidden"]
    assert slow["predicted_loss"] == min(r["predicted_loss"] for r in rows)


def test_probing_stops_after_two_worse_shapes_once_the_reference_is_seen():
    calls = []
    ref = OPTIONS[2]
    best, rows = budget.choose(OPTIONS, flops_speed(1 / 5e8, calls=calls), 300, reference=ref, k=K)
    assert best["hidden"] == 128 and calls == [128, 256, 512]  # 1024 was never probed
    calls.clear()
    budget.choose(OPTIONS, flops_speed(1 / 5e8, calls=calls), 300, reference=OPTIONS[3], k=K)
    assert calls == [128, 256, 512, 1024]  # the reference is always measured, for the comparison


def test_evaluations_count_against_the_budget_and_their_interval_is_chosen():
    steps, every, evals = budget.plan_time(300, 0.1, eval_s=1.5)  # 5% of 300 s pays for 10 evaluations
    assert steps == int((300 - 15) / 0.1) and every == 300 and evals == 9  # 2850 / 11 rounded up to 50 steps
    steps, every, evals = budget.plan_time(300, 0.1, eval_s=3.0)  # or for 5
    assert steps == int((300 - 15) / 0.1) and every == 500 and evals == 5
    steps, every, evals = budget.plan_time(300, 0.1, eval_s=100.0)  # evaluating costs a third of the budget
    assert evals == 0 and steps == 3000 and every > steps  # only the final evaluation
    steps, every, evals = budget.plan_time(300, 0.1, eval_s=3.0, eval_every=200)  # given: kept, and paid for
    assert every == 200 and steps == int(300 / (0.1 + 3.0 / 200)) and evals == steps // 200
    assert budget.plan_time(300, 0.1, 3.0, step_cap=500)[0] == 500


# -- the Planner inside real (tiny) runs, with a fake probe



@pytest.fixture
def fake_probe(monkeypatch):
    """probe.measure answers from a speed table (no timing); every call is recorded."""
    return install_fake_probe(monkeypatch, 1e-9)


@pytest.fixture
def corpus(tmp_path):
    p = tmp_path / "tiny.txt"
    p.write_text(TINY_TEXT, encoding="utf-8")
    return p


def _config(ck, name="tiny"):
    return json.loads((ck / name / "config.json").read_text())


@pytest.mark.slow
@pytest.mark.parametrize("flag", [[], ["--budget"]], ids=["by-default", "asked-for"])
def test_a_budget_chooses_the_settings_not_given_and_says_why_in_one_line(corpus, tmp_path, fake_probe, cli, flag):
    r = cli("train", corpus, "--checkpoint-dir", tmp_path / "ck", "--max-time", 1, *flag, "--emb", 8,
            "--precision", "fp32")
    assert r.code == 0, r.err
    cfg = _config(tmp_path / "ck")
    choice = cfg["budget_choice"]
    rows = choice["candidates"]
    best = min(rows, key=lambda row: row["predicted_loss"])
    assert {k: cfg[k] for k in budget.SHAPE} == {k: best[k] for k in budget.SHAPE}
    assert cfg["eval_every"] == best["eval_every"] == choice["chosen"]["eval_every"]
    assert choice["rule"] == "budget" and choice["budget_s"] == 1 and choice["given"] == []
    assert choice["probe_cached"] is False
    assert choice["machine"] == probe.machine_key(torch.device("cpu"), "fp32")  # this machine, whatever its CPU
    lines = [line for line in r.err.splitlines() if line.startswith("budget: ")]
    assert len(lines) == 1
    assert lines[0].startswith(f"budget: lstm {cfg['layers']}x{cfg['hidden']}, batch {cfg['batch_size']} x "
                               f"{cfg['seq_len']}, lr {cfg['lr']:g}, eval every ")  # the rate: peak_lr.py
    assert "for 2x512, batch 32 x 128" not in lines[0]  # too big here
    # tiny.txt is not what the compute model was fitted on: no loss figure, and it says why
    assert "nats/char" not in lines[0] and "fitted on tinyshakespeare: no loss figure for this corpus" in lines[0]
    ckpt = torch.load(tmp_path / "ck" / "tiny" / "last.pt", weights_only=True)
    assert ckpt["run_config"]["hidden"] == cfg["hidden"] and "budget_choice" not in ckpt["run_config"]


def test_given_settings_always_win(corpus, tmp_path, fake_probe):
    charrnn.train(corpus, checkpoint_dir=tmp_path / "ck", max_time=1, budget=True, hidden=24, seq_len=16, emb=8, verbose=False)
    cfg = _config(tmp_path / "ck")
    assert cfg["hidden"] == 24 and cfg["seq_len"] == 16
    assert {(c[1], c[3]) for c in fake_probe} == {(24, 16)}  # every probed shape kept the given values
    assert sorted(cfg["budget_choice"]["given"]) == ["hidden", "seq_len"]


@pytest.mark.slow
def test_nothing_is_chosen_when_everything_is_given(corpus, tmp_path, fake_probe, monkeypatch):
    charrnn.train(corpus, checkpoint_dir=tmp_path / "ck", max_time=1, budget=True, layers=1, hidden=24, emb=8, batch_size=4,
                  seq_len=16, eval_every=7, lr=2e-3, verbose=False)
    assert fake_probe == [] and "budget_choice" not in _config(tmp_path / "ck")
    monkeypatch.setitem(budget.CANDIDATES, "cpu", [(2, 16, 4, 16), (2, 32, 8, 16)])
    charrnn.train(corpus, checkpoint_dir=tmp_path / "ck", max_time=1, budget=True, hidden=24, emb=8, batch_size=4,
                  seq_len=16, eval_every=7, lr=2e-3, verbose=False)  # layers not given, but every candidate has 2
    assert fake_probe == [] and _config(tmp_path / "ck", "tiny-2")["layers"] == 2
    charrnn.train(corpus, checkpoint_dir=tmp_path / "ck", max_time=1, budget=True, layers=1, hidden=24, emb=8, batch_size=4,
                  seq_len=16, eval_every=7, verbose=False)  # all but --lr: its steps set the rate (peak_lr.py)
    cfg = _config(tmp_path / "ck", "tiny-3")
    assert {(c[1], c[3]) for c in fake_probe} == {(24, 16)} and cfg["lr"] == cfg["budget_choice"]["chosen"]["lr"]


@pytest.mark.slow
def test_without_a_budget_or_with_no_budget_the_fixed_defaults_stay(corpus, tmp_path, fake_probe, cli):
    r = cli("train", corpus, "--checkpoint-dir", tmp_path / "ck", "--max-steps", 1, "--seq-len", 16)
    assert r.code == 0, r.err
    r = cli("train", corpus, "--checkpoint-dir", tmp_path / "ck", "--max-time", 1, "--no-budget", "--seq-len", 16,
            "--name", "nb", "--max-steps", 1)
    assert r.code == 0, r.err
    for name in ("tiny", "nb"):
        cfg = _config(tmp_path / "ck", name)
        assert (cfg["layers"], cfg["hidden"], cfg["batch_size"], cfg["eval_every"]) == (2, 512, 32, 200)
        assert "budget_choice" not in cfg
    assert fake_probe == [] and "budget: " not in r.err


@pytest.mark.slow
def test_resume_never_chooses_again(corpus, tmp_path, fake_probe, cli, monkeypatch):
    r = cli("train", corpus, "--checkpoint-dir", tmp_path / "ck", "--max-time", 0.5, "--budget", "--emb", 8)
    assert r.code == 0, r.err
    first = _config(tmp_path / "ck")
    monkeypatch.setattr(budget.Planner, "_choose_for_budget", lambda self: pytest.fail("chose again on resume"))
    r = cli("train", "--resume", tmp_path / "ck" / "tiny", "--max-time", 1.5)
    assert r.code == 0, r.err
    assert "budget: " not in r.err
    again = _config(tmp_path / "ck")
    assert {k: again[k] for k in budget.CHOSEN} == {k: first[k] for k in budget.CHOSEN}
    assert again["budget_choice"] == first["budget_choice"] and again["max_time"] == 1.5


@pytest.mark.slow
def test_the_probe_is_cached_per_machine_and_shape(corpus, tmp_path, fake_probe):
    charrnn.train(corpus, checkpoint_dir=tmp_path / "ck", max_time=0.5, budget=True, emb=8, verbose=False)
    n = len(fake_probe)
    assert n >= 2
    cache = json.loads((tmp_path / "ck" / ".cache" / probe.CACHE_FILE).read_text())
    (machine, shapes), = cache["machines"].items()
    assert len(shapes) == n and f"{torch.__version__}" in machine and "fp32" in machine
    run = charrnn.train(corpus, checkpoint_dir=tmp_path / "ck", max_time=0.5, budget=True, emb=8, verbose=False)
    assert len(fake_probe) == n  # nothing measured again
    assert _config(tmp_path / "ck", "tiny-2")["budget_choice"]["probe_cached"] is True and run.steps > 0


def test_a_real_probe_measures_a_tiny_shape_and_the_cache_reads_it_back(tmp_path):
    mc, cpu = ModelConfig(20, "lstm", 1, 16, 8, 0.0), torch.device("cpu")
    cache = probe.ProbeCache(str(tmp_path))
    fig, hit = probe.probe(mc, 4, 32, 1, cpu, "fp32", cache)
    assert not hit and fig["step_s"] > 0 and fig["eval_tok_s"] > 0
    assert np.isclose(fig["tok_s"], 4 * 32 / fig["step_s"])
    cache.save()
    again, hit = probe.probe(mc, 4, 32, 1, cpu, "fp32", probe.ProbeCache(str(tmp_path)))
    assert hit and again == fig
    (tmp_path / probe.CACHE_FILE).write_text("{not json")  # a damaged cache is measured again
    assert probe.ProbeCache(str(tmp_path)).get(probe.machine_key(cpu, "fp32"), probe.shape_key(mc, 4, 32, 1)) is None


def test_the_probe_key_holds_no_corpus_only_its_vocabularys_bucket(tmp_path, monkeypatch):
    """Every character or byte vocabulary is timed at 256 tokens, under one key; figures are scaled to V."""
    timed = []
    monkeypatch.setattr(probe, "measure", lambda mc, *a, **kw: timed.append(mc.vocab_size) or {
        "step_s": 1.0, "tok_s": 128.0, "eval_tok_s": 1000.0, "measured": "test"})
    cache, cpu = probe.ProbeCache(str(tmp_path)), torch.device("cpu")
    mc = {v: ModelConfig(v, "lstm", 2, 128, 64, 0.0) for v in (65, 100, 256, 3000)}
    assert len({probe.shape_key(mc[v], 4, 32, 1) for v in (65, 100, 256)}) == 1
    assert probe.shape_key(mc[3000], 4, 32, 1) != probe.shape_key(mc[65], 4, 32, 1)
    figs = {v: probe.probe(mc[v], 4, 32, 1, cpu, "fp32", cache) for v in (65, 100, 256, 3000)}
    assert timed == [256, 4096]                                     # one timing per bucket
    assert [figs[v][1] for v in (65, 100, 256, 3000)] == [False, True, True, False]
    # scaled by a token's multiply-adds: 2 layers of 4 gates, (64 + 128) x 128 then (128 + 128) x 128, + 128 V
    trunk = 4 * (64 + 128) * 128 + 4 * (128 + 128) * 128
    for v in (65, 100, 256):
        scale = (trunk + 128 * v) / (trunk + 128 * 256)
        assert figs[v][0]["step_s"] == pytest.approx(scale) and figs[v][0]["tok_s"] == pytest.approx(128 / scale)
        assert figs[v][0]["eval_tok_s"] == pytest.approx(1000 / scale)
    assert figs[65][0]["step_s"] > 1 - 128 * (256 - 65) / trunk   # the head is a small part of a char model's step


def test_a_probe_past_its_deadline_times_each_thing_once(monkeypatch):
    mc, cpu = ModelConfig(20, "lstm", 1, 16, 8, 0.0), torch.device("cpu")
    calls = []
    real = probe._timed
    monkeypatch.setattr(probe, "_timed", lambda fn, device, repeat, deadline=None: calls.append(deadline) or real(
        fn, device, repeat, deadline))
    fig = probe.measure(mc, 4, 128, 1, cpu, "fp32", deadline=0.0)  # long past
    assert len(calls) == 2 and fig["step_s"] > 0                  # the step at 64 tokens and the evaluation only


@pytest.mark.parametrize("corpus,tokenizer,vocab,want", [
    ("/data/tinyshakespeare.txt", "char", 65,
     "predicted 1.90 nats/char vs no better than uniform (ln 65 = 4.17 nats/char) for 2x512"),
    ("/cache/tinyshakespeare/input.txt", "char", 65, "predicted 1.90 nats/char vs no better than uniform"),
    ("/data/tinyshakespeare.txt", "bpe", 512, "no loss figure for this corpus"),     # nats per token, not per char
    ("/data/zh_poems.txt", "char", 7000, "no loss figure for this corpus"),
])
def test_the_budget_line_states_a_prediction_only_where_it_means_something(corpus, tokenizer, vocab, want):
    cfg = make_config(corpus=corpus, tokenizer=tokenizer, max_time=60)
    planner = budget.Planner(cfg, set(), log=lambda m: None)
    planner.corpus = SimpleNamespace(tokenizer=SimpleNamespace(vocab_size=vocab))
    best = {"layers": 2, "hidden": 128, "batch_size": 16, "seq_len": 64, "tok_s": 9000.0, "steps": 600,
            "predicted_loss": 1.9, "epochs": 3.04}
    ref = {"layers": 2, "hidden": 512, "batch_size": 32, "seq_len": 128, "predicted_loss": 8.58}  # > ln 65 = 4.17
    line = planner._line(best, ref, 2.0, False, 54.0)
    assert want in line and "8.58" not in line and "nats/char on tinyshakespeare" not in line
    assert "~600 steps, ~3.0 epochs, in the 54s left of 60s" in line
    if "no loss figure" in want:
        assert "1.90" not in line and "nats/char" not in line
    else:  # a prediction at or above uniform is never a figure
        worse = planner._line({**best, "predicted_loss": math.log(vocab) + 0.01}, None, 2.0, True, 54.0)
        assert worse.endswith(f"; predicted no better than uniform (ln {vocab} = {math.log(vocab):.2f} nats/char))")


def test_a_gpu_gets_a_larger_batch_when_none_is_given(monkeypatch):
    from charrnn.training import memory

    monkeypatch.setattr(memory, "available_bytes", lambda device: 80 * 10**9)
    corpus = SimpleNamespace(tokenizer=SimpleNamespace(vocab_size=65),
                             train=SimpleNamespace(ids=np.zeros(10**6, np.int32)),
                             val=SimpleNamespace(ids=np.zeros(10**5, np.int32)))
    for device, given, want in (("cuda", {}, budget.DEVICE_BATCH["cuda"]), ("cuda", {"batch_size": 8}, 8),
                                ("cpu", {}, 32), ("mps", {}, budget.DEVICE_BATCH["mps"])):
        cfg = make_config(**given)
        budget.Planner(cfg, set(given), log=lambda m: None)(corpus, torch.device(device), "fp32")
        assert cfg.batch_size == want, device
