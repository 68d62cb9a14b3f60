"""Data-parallel training under torchrun: 2 CPU ranks with gloo on 127.0.0.1 against one process."""

from __future__ import annotations

import json
import os
import shutil
import signal
import socket
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from charrnn.model.checkpoint import load_checkpoint
from tests.conftest import TINY_TEXT, wait_for, weights_hash  # corpus: conftest's fixture

# every test here runs torchrun; the one-process comparisons are also numerics-sensitive
pytestmark = pytest.mark.integration

ROOT = Path(__file__).resolve().parents[1]
MODEL = ["--layers", "2", "--hidden", "64", "--emb", "16", "--batch-size", "8", "--seq-len", "32", "--lr", "0.003",
         "--dropout", "0", "--precision", "fp32", "--device", "cpu", "--eval-every", "50", "--log-every", "10",
         "--save-every", "10", "--seed", "5"]
STEPS = 200
# Tolerance of the one-process comparison. Two ranks compute the same gradient as one process, but
# as two half-batch sums averaged by the all-reduce instead of one sum over the batch (and the
# logged loss as a mean of two means): float32 rounding (~1e-7 relative) in another order. Measured
# on this test's runs the two curves agree to all 6 significant digits metrics.jsonl keeps, for all
# 200 steps; 1e-4 nats leaves room for other CPUs' kernels and still catches a wrong slice, a
# missing all-reduce or a sum instead of a mean (each moves the curve by 1e-2 or more). The run
# stays in a stable regime on purpose: at --lr 0.01 it turns chaotic after ~70 steps and any
# reordering of sums (one process against itself included) grows to differences of ~5e-3.
TOL = 1e-4


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def env(**extra) -> dict:
    return dict(os.environ, PYTHONPATH=str(ROOT), PYTHONUNBUFFERED="1", OMP_NUM_THREADS="1", **extra)


def torchrun(*args) -> subprocess.Popen:
    """``torchrun --nproc-per-node 2 -m charrnn train ARGS`` on 127.0.0.1."""
    cmd = [sys.executable, "-m", "torch.distributed.run", "--nproc-per-node", "2", "--master-addr", "127.0.0.1",
           "--master-port", str(free_port()), "-m", "charrnn", "train", *map(str, args)]
    return subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env())


def finish(p: subprocess.Popen, timeout: float = 240) -> tuple[int, str, str]:
    out, err = p.communicate(timeout=timeout)
    return p.returncode, out, err


def losses(run_dir: Path, split: str) -> dict:
    return {r["step"]: r["loss"] for r in map(json.loads, open(run_dir / "metrics.jsonl")) if r["split"] == split}


@pytest.fixture(scope="module")
def two_ranks(corpus, tmp_path_factory):
    """An uninterrupted 2-rank run: (checkpoint dir, its stderr)."""
    ck = tmp_path_factory.mktemp("two")
    code, out, err = finish(torchrun(corpus, "--checkpoint-dir", ck, "--name", "run", "--max-steps", STEPS, *MODEL))
    assert code == 0, err
    return ck, out, err


@pytest.mark.numerics
def test_two_ranks_follow_one_process(corpus, two_ranks, tmp_path, cli, one_thread):
    one = cli("train", corpus, "--checkpoint-dir", tmp_path, "--name", "one", "--max-steps", STEPS, *MODEL)
    assert one.code == 0, one.err
    ck, _, _ = two_ranks
    for split in ("train", "val"):
        a, b = losses(tmp_path / "one", split), losses(ck / "run", split)
        assert sorted(a) == sorted(b) and len(a) >= 4
        assert max(abs(a[s] - b[s]) for s in a) < TOL, (a, b)
    first, last = losses(tmp_path / "one", "train"), losses(ck / "run", "train")
    assert last[STEPS] < first[10] - 0.3  # the curve really moves: the comparison is not of two flat lines
    sa, sb = (load_checkpoint(str(d / "last.pt"))["train_state"] for d in (tmp_path / "one", ck / "run"))
    assert sb["tokens"] == sa["tokens"] == STEPS * 8 * 32  # both ranks' tokens counted
    for ha, hb in zip(sa["hidden"], sb["hidden"]):  # (h, c) of all 8 streams, rank rows in order
        assert ha.shape == hb.shape == (2, 8, 64)
        # Rows in order: each stream's state is nearest its own stream in the one-process run. Another
        # stream's state differs by about the state's scale (measured >= 1.9 for h, 6.9 for c).
        own = (ha - hb).abs().amax(dim=(0, 2))
        other = torch.stack([(ha - hb.roll(k, dims=1)).abs().amax(dim=(0, 2)) for k in range(1, 8)])
        assert (own < other.amin(0) / 10).all(), (own, other)
        # The values: the state carries the weights' float32 reordering differences (see TOL) through all
        # 200 windows. c is a running sum (|c| reaches ~13 here, h stays in (-1, 1)), so its difference
        # scales with its size: bounds are relative to max|state|. Averaged over its 1,024 values, like the
        # loss over its tokens, the difference stays within TOL of that scale (measured 1e-5 for h, 4e-6
        # for c); the largest single value within 10 x TOL (measured 3e-4 and 1.4e-4): a few values
        # out of 1,024 drift ~30x the mean. A wrong slice or a missing all-reduce moves the state by ~scale.
        scale = ha.abs().max().item()
        assert (ha - hb).abs().mean().item() <= TOL * scale
        torch.testing.assert_close(ha, hb, atol=10 * TOL * scale, rtol=0)


def test_only_rank_zero_prints_and_writes(two_ranks):
    ck, out, err = two_ranks
    assert out == ""
    assert err.count("model: lstm 2x64") == 1 and err.count("done (reached --max-steps") == 1
    assert err.count("step 50: val loss") == 1 and err.count("sample with:") == 1
    assert sorted(p.name for p in ck.iterdir()) == [".cache", "run"]  # one run directory, no run-2
    assert sorted(p.name for p in (ck / "run").iterdir()) == ["best.pt", "config.json", "last.pt", "metrics.jsonl"]
    steps = [(r["step"], r["split"]) for r in map(json.loads, open(ck / "run" / "metrics.jsonl"))]
    assert len(steps) == len(set(steps)) == STEPS // 10 + STEPS // 50  # each line once
    ts = load_checkpoint(str(ck / "run" / "last.pt"))["train_state"]
    assert ts["world_size"] == 2 and len(ts["rank_rng"]) == 2


@pytest.mark.numerics
def test_sigterm_stops_every_rank_and_resume_is_exact(corpus, two_ranks, tmp_path):
    ref_ck, _, _ = two_ranks
    run = tmp_path / "run"
    p = torchrun(corpus, "--checkpoint-dir", tmp_path, "--name", "run", "--max-steps", STEPS, *MODEL)
    assert wait_for(run / "last.pt", p, timeout=120), "the run ended before its first save"
    p.send_signal(signal.SIGTERM)  # torchrun passes it on to both ranks
    code, _, err = finish(p)
    stopped = load_checkpoint(str(run / "last.pt"))["train_state"]["step"]
    assert 0 < stopped < STEPS, "the signal came too late to interrupt the run"
    assert code != 0 and err.count("interrupted; saved") == 1, err
    assert not (run / "lock").exists()
    code, _, err = finish(torchrun("--resume", run, "--checkpoint-dir", tmp_path))
    assert code == 0, err
    assert f"resuming {run / 'last.pt'} at step {stopped}" in err
    assert weights_hash(run / "last.pt") == weights_hash(ref_ck / "run" / "last.pt")
    full = {s: v for s, v in losses(run, "train").items() if s - 10 >= stopped}  # windows wholly after the resume
    assert full and full == {s: v for s, v in losses(ref_ck / "run", "train").items() if s in full}
    assert losses(run, "val") == losses(ref_ck / "run", "val")


@pytest.mark.numerics
def test_resume_on_another_world_size_re_slices(two_ranks, tmp_path, cli, corpus, one_thread):
    src, _, _ = two_ranks
    shutil.copytree(src / "run", tmp_path / "run")
    r = cli("train", "--resume", tmp_path / "run", "--max-steps", STEPS + 20)
    assert r.code == 0, r.err
    assert "resuming a run trained by 2 process(es) on 1" in r.err and "no longer bit-exact" in r.err
    ts = load_checkpoint(str(tmp_path / "run" / "last.pt"))["train_state"]
    assert ts["step"] == STEPS + 20 and ts["hidden"][0].shape == (2, 8, 64)


def test_batch_not_dividing_is_one_line(cli, corpus, tmp_path, monkeypatch):
    monkeypatch.setenv("WORLD_SIZE", "2")
    monkeypatch.setenv("LOCAL_RANK", "0")
    for rank, expect in (("0", 1), ("1", 0)):  # rank 0 says it once; the others stay quiet
        monkeypatch.setenv("RANK", rank)
        r = cli("train", corpus, "--checkpoint-dir", tmp_path, *MODEL, "--batch-size", "5", "--max-steps", "1")
        assert r.code == 2 and r.out == ""
        assert len(r.err.splitlines()) == expect
    monkeypatch.setenv("RANK", "0")
    r = cli("train", corpus, "--checkpoint-dir", tmp_path, *MODEL, "--batch-size", "5", "--max-steps", "1")
    assert r.err.startswith("error: --batch-size 5 does not divide among 2 processes") and r.err.count("\n") == 1
    r = cli("train", corpus, "--checkpoint-dir", tmp_path, *MODEL, "--budget", "--max-time", "10")
    assert r.code == 2 and r.err.startswith("error: --budget plans for one process") and r.err.count("\n") == 1
    assert not any(tmp_path.iterdir())  # nothing was written


def rank_pid(launcher: subprocess.Popen, rank: int) -> int | None:
    """The pid of torchrun's worker with RANK=rank (from /proc)."""
    for status in Path("/proc").glob("[0-9]*/status"):
        try:
            if f"PPid:\t{launcher.pid}\n" in status.read_text():
                if f"RANK={rank}".encode() in (status.parent / "environ").read_bytes().split(b"\0"):
                    return int(status.parent.name)
        except OSError:
            continue
    return None


@pytest.mark.skipif(not Path("/proc/self/environ").exists(), reason="finds torchrun's workers through /proc")
def test_a_rank_that_dies_stops_the_others_with_one_line(corpus, tmp_path):
    run = tmp_path / "run"
    p = torchrun(corpus, "--checkpoint-dir", tmp_path, "--name", "run", "--max-steps", 50 * STEPS, *MODEL)
    assert wait_for(run / "last.pt", p, timeout=120)
    os.kill(rank_pid(p, 1), signal.SIGKILL)
    code, _, err = finish(p)
    assert code != 0
    ours = [line for line in err.splitlines() if line.startswith("error:")]
    assert len(ours) == 1 and ours[0].startswith("error: lost contact with another rank of this run"), err
    assert ours[0].endswith(f"--resume {run}")
    assert "charrnn/" not in err  # torchrun reports the failed workers itself, but no traceback of ours
    assert load_checkpoint(str(run / "last.pt"))["train_state"]["step"] >= 10  # the last save is intact


def _eval_worker(rank: int, port: int, ckpt: str, texts: list, out: str) -> None:
    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port), WORLD_SIZE="2", RANK=str(rank),
                      LOCAL_RANK=str(rank))
    torch.set_num_threads(1)
    from types import SimpleNamespace

    from charrnn.training import distributed
    from charrnn.api import load
    from charrnn.evaluation.evaluate import evaluate_split, text_ids
    model = load(ckpt, device="cpu")
    cfg = SimpleNamespace(batch_size=2, budget=False, records=None)
    with distributed.session(cfg, torch.device("cpu")) as dist:
        results = [evaluate_split(model.module, model.tokenizer, *text_ids(model.tokenizer, t), torch.device("cpu"),
                                  "fp32", part=dist) for t in texts]
    if rank == 0:
        Path(out).write_text(json.dumps(results))


@pytest.mark.numerics
def test_split_evaluation_equals_one_process(two_ranks, tmp_path):
    from charrnn.api import load
    from charrnn.evaluation.evaluate import evaluate_split, text_ids
    ckpt = str(two_ranks[0] / "run" / "best.pt")
    texts = [TINY_TEXT * 3, TINY_TEXT[:500]]  # 3 evaluation streams (split 1 + 2), and 1 (rank 1 has none)
    out = tmp_path / "ranks.json"
    torch.multiprocessing.spawn(_eval_worker, args=(free_port(), ckpt, texts, str(out)), nprocs=2)
    model = load(ckpt, device="cpu")
    for text, two in zip(texts, json.loads(out.read_text())):
        one = evaluate_split(model.module, model.tokenizer, *text_ids(model.tokenizer, text), torch.device("cpu"),
                             "fp32")
        assert two["tokens"] == one["tokens"] and two["chars"] == one["chars"]
        assert two["loss"] == pytest.approx(one["loss"], rel=1e-6)  # the same streams; sums in another order



def test_the_default_budget_is_off_under_torchrun_and_an_explicit_one_refused(corpus):
    from charrnn.system.launch import check_settings
    from charrnn.errors import CharrnnError
    from charrnn.settings import make_config
    cfg = make_config(corpus=str(corpus), max_time=60.0)
    assert cfg.budget  # on by default with --max-time ...
    note = check_settings(cfg, 2, given={"max_time"})
    assert not cfg.budget and "off under torchrun" in note  # ... off under torchrun, and said so
    assert check_settings(make_config(corpus=str(corpus), max_time=60.0), 2, resuming=True) is None
    with pytest.raises(CharrnnError, match="--budget plans for one process"):
        check_settings(make_config(corpus=str(corpus), max_time=60.0, budget=True), 2, given={"budget", "max_time"})
