"""Crash safety and exact resume, with real processes killed at random moments."""

from __future__ import annotations

import errno
import os
import random
import signal
import subprocess
import sys
import time

import pytest
import torch

from charrnn.model.checkpoint import load_checkpoint
from tests.conftest import nan_after as _nan_after, snapshot, wait_for, weights_hash  # and fixture corpus

MODEL = ["--layers", "2", "--hidden", "48", "--emb", "16", "--batch-size", "8", "--seq-len", "32",
         "--precision", "fp32", "--device", "cpu", "--eval-every", "25", "--log-every", "5", "--seed", "7"]
STEPS = 150


def charrnn(*args, **kw) -> subprocess.Popen:
    env = dict(os.environ, PYTHONUNBUFFERED="1", OMP_NUM_THREADS="1")
    return subprocess.Popen([sys.executable, "-m", "charrnn", *map(str, args)], stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True, env=env, **kw)


@pytest.fixture(scope="module")
def reference(corpus, tmp_path_factory):
    """An uninterrupted run: the hash of its final weights."""
    ck = tmp_path_factory.mktemp("ref")
    p = charrnn("train", corpus, "--checkpoint-dir", ck, "--name", "ref", "--max-steps", STEPS,
                "--save-every", 10, *MODEL)
    out, err = p.communicate(timeout=300)
    assert p.returncode == 0, err
    assert load_checkpoint(str(ck / "ref" / "last.pt"))["train_state"]["step"] == STEPS
    return weights_hash(ck / "ref" / "last.pt")


@pytest.mark.numerics
@pytest.mark.integration
def test_kill9_three_times_then_resume_is_bit_identical(corpus, reference, tmp_path):
    rng = random.Random(os.getpid())
    run = tmp_path / "run"
    args = ["--max-steps", STEPS, "--save-every", 10, *MODEL]
    p = charrnn("train", corpus, "--checkpoint-dir", tmp_path, "--name", "run", *args)
    kills = 0
    for attempt in range(8):
        if kills < 3 and wait_for(run / "last.pt", p):
            time.sleep(rng.uniform(0.0, 0.6))
            if p.poll() is None:
                p.send_signal(signal.SIGKILL)
                kills += 1
        p.communicate(timeout=300)
        if p.returncode == 0:
            break
        assert p.returncode == -signal.SIGKILL
        p = charrnn("train", "--resume", run, "--checkpoint-dir", tmp_path)
    assert p.returncode == 0
    assert kills >= 1, "the run finished before it could be killed; make it longer"
    ckpt = load_checkpoint(str(run / "last.pt"))
    assert ckpt["train_state"]["step"] == STEPS
    assert weights_hash(run / "last.pt") == reference


@pytest.mark.integration
def test_kill_during_frequent_saves_leaves_checkpoints_readable(corpus, tmp_path):
    rng = random.Random(1234 + os.getpid())
    run = tmp_path / "run"
    p = charrnn("train", corpus, "--checkpoint-dir", tmp_path, "--name", "run", "--max-steps", 2000,
                *MODEL, "--save-every", 1, "--eval-every", 3)
    for _ in range(3):
        # best.pt comes with the first evaluation (step 3), after last.pt (step 1): kill only once both exist,
        # else a slow machine's kill can land before there is an old best.pt to keep
        assert wait_for(run / "last.pt", p) and wait_for(run / "best.pt", p)
        time.sleep(rng.uniform(0.05, 0.5))
        p.send_signal(signal.SIGKILL)
        p.communicate(timeout=60)
        for name in ("last.pt", "best.pt"):
            ckpt = load_checkpoint(str(run / name))  # never torn: the old or the new file
            assert ckpt["train_state"]["step"] >= 1
        leftovers = [f for f in os.listdir(run) if f.endswith(".tmp")]
        # a kill mid-write may leave a temp file, but never a damaged checkpoint
        assert all(f.startswith(".") for f in leftovers)
        p = charrnn("train", "--resume", run, "--checkpoint-dir", tmp_path)
    p.send_signal(signal.SIGKILL)
    p.communicate(timeout=60)


@pytest.mark.integration
@pytest.mark.parametrize("sig,code", [(signal.SIGINT, 130), (signal.SIGTERM, 143)])
def test_signal_saves_and_prints_resume_command(corpus, tmp_path, sig, code):
    run = tmp_path / "run"
    p = charrnn("train", corpus, "--checkpoint-dir", tmp_path, "--name", "run", "--max-steps", 100000,
                "--save-every", 10, *MODEL)
    assert wait_for(run / "last.pt", p)
    time.sleep(0.3)
    p.send_signal(sig)
    out, err = p.communicate(timeout=60)
    assert p.returncode == code, err
    assert f"charrnn train --resume {run}" in err
    assert "Traceback" not in err
    step = load_checkpoint(str(run / "last.pt"))["train_state"]["step"]
    assert step >= 10 and f"at step {step}" in err  # the checkpoint holds the step it stopped at
    assert not (run / "lock").exists()


@pytest.mark.integration
def test_second_train_into_busy_run_is_refused_and_stale_lock_taken_over(corpus, tmp_path, cli):
    run = tmp_path / "run"
    p = charrnn("train", corpus, "--checkpoint-dir", tmp_path, "--name", "run", "--max-steps", 100000,
                "--save-every", 10, *MODEL)
    try:
        assert wait_for(run / "last.pt", p)
        assert (run / "lock").read_text().strip() == str(p.pid)
        r = cli("train", "--resume", run, "--checkpoint-dir", tmp_path)
        assert r.code != 0 and f"in use by another charrnn train (pid {p.pid})" in r.err
    finally:
        p.send_signal(signal.SIGKILL)
        p.communicate(timeout=60)
    assert (run / "lock").exists()  # killed -9: the lock stays behind, its owner is dead
    r = cli("train", "--resume", run, "--checkpoint-dir", tmp_path, "--max-steps",
            load_checkpoint(str(run / "last.pt"))["train_state"]["step"] + 2)
    assert r.code == 0, r.err
    assert not (run / "lock").exists()


@pytest.mark.slow
@pytest.mark.numerics
def test_resume_in_process_matches_and_allows_new_limits(corpus, tmp_path, cli):
    common = [corpus, "--checkpoint-dir", tmp_path, "--save-every", 5, "--max-steps", 30, *MODEL]
    assert cli("train", *common, "--name", "a").code == 0
    assert cli("train", *common, "--name", "b", "--max-steps", 30).code == 0
    # b again from its own step-30 checkpoint, extended: allowed, continues counting
    r = cli("train", "--resume", tmp_path / "b", "--checkpoint-dir", tmp_path, "--max-steps", 35)
    assert r.code == 0, r.err
    assert load_checkpoint(str(tmp_path / "b" / "last.pt"))["train_state"]["step"] == 35
    # bare --resume continues the latest run (b, written last)
    r = cli("train", "--resume", "--checkpoint-dir", tmp_path, "--max-steps", 37)
    assert r.code == 0, r.err
    assert load_checkpoint(str(tmp_path / "b" / "last.pt"))["train_state"]["step"] == 37
    # a finished run resumed without a larger limit does not take another step
    before = (tmp_path / "a" / "last.pt").read_bytes()
    r = cli("train", "--resume", tmp_path / "a", "--checkpoint-dir", tmp_path)
    assert r.code == 0 and "nothing to train: the run already reached --max-steps 30" in r.err
    assert (tmp_path / "a" / "last.pt").read_bytes() == before
    r = cli("train", "--resume", tmp_path / "a", "--checkpoint-dir", tmp_path, "--cell", "gru")
    assert r.code != 0 and "cannot change --cell" in r.err


@pytest.mark.slow
def test_nonfinite_loss_stops_without_writing_bad_weights(corpus, tmp_path, cli, monkeypatch):
    _nan_after(monkeypatch, 12)
    r = cli("train", corpus, "--checkpoint-dir", tmp_path, "--name", "n", "--max-steps", 50,
            "--save-every", 5, *MODEL)
    assert r.code != 0
    assert "non-finite loss at step 13" in r.err and "--lr" in r.err
    ckpt = load_checkpoint(str(tmp_path / "n" / "last.pt"))
    assert ckpt["train_state"]["step"] == 10
    assert all(torch.isfinite(v).all() for v in ckpt["model"].values() if v.is_floating_point())


@pytest.mark.slow
def test_skip_nonfinite_counts_and_continues(corpus, tmp_path, cli, monkeypatch):
    _nan_after(monkeypatch, 12)
    r = cli("train", corpus, "--checkpoint-dir", tmp_path, "--name", "s", "--max-steps", 20,
            "--save-every", 5, *MODEL, "--eval-every", 100, "--skip-nonfinite")
    assert r.code == 0, r.err
    assert "skipped 8 batches" in r.err
    ckpt = load_checkpoint(str(tmp_path / "s" / "last.pt"))
    assert ckpt["train_state"]["skipped"] == 8
    assert all(torch.isfinite(v).all() for v in ckpt["model"].values() if v.is_floating_point())


def test_disk_full_during_save_keeps_previous_checkpoints(trained_run, tmp_path, cli, monkeypatch):
    import shutil

    import charrnn.system.fileio as fio

    run_dir, corpus, _ = trained_run
    shutil.copytree(run_dir, tmp_path / "tiny")
    before = snapshot(tmp_path / "tiny")
    real = fio.os.replace

    def full(src, dst):
        if str(dst).endswith(".pt"):
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
        return real(src, dst)

    monkeypatch.setattr(fio.os, "replace", full)
    r = cli("train", "--resume", tmp_path / "tiny", "--checkpoint-dir", tmp_path, "--max-steps", 60)
    assert r.code != 0
    last = r.err.strip().splitlines()[-1]
    assert last.startswith("error: ") and "No space left on device" in last and "Traceback" not in r.err
    after = snapshot(tmp_path / "tiny")
    for name in ("best.pt", "last.pt"):
        assert after[name] == before[name]
    assert not [f for f in os.listdir(tmp_path / "tiny") if f.endswith(".tmp")]


@pytest.fixture
def immutable(tmp_path):
    """Make a directory unwritable even for root (chattr +i); skip where that is not possible."""
    made = []

    def make(path):
        r = subprocess.run(["chattr", "+i", str(path)], capture_output=True, text=True)
        if r.returncode != 0:
            pytest.skip(f"cannot make a directory unwritable here (chattr: {r.stderr.strip() or r.returncode})")
        made.append(path)

    yield make
    for path in made:
        subprocess.run(["chattr", "-i", str(path)], check=False)


def test_unwritable_run_directory_is_a_clear_error(trained_run, tmp_path, cli, immutable):
    import shutil

    run_dir, corpus, _ = trained_run
    shutil.copytree(run_dir, tmp_path / "tiny")
    before = snapshot(tmp_path / "tiny")
    immutable(tmp_path / "tiny")
    r = cli("train", "--resume", tmp_path / "tiny", "--checkpoint-dir", tmp_path, "--max-steps", 60)
    assert r.code != 0 and "Traceback" not in r.err
    assert r.err.count("\n") == 1 and "writable" in r.err and str(tmp_path / "tiny") in r.err
    assert snapshot(tmp_path / "tiny") == before
    # and a new run in an unwritable checkpoint directory
    (tmp_path / "ro").mkdir()
    immutable(tmp_path / "ro")
    r = cli("train", corpus, "--checkpoint-dir", tmp_path / "ro", "--max-steps", 1)
    assert r.code != 0 and r.err.count("\n") == 1 and "cannot create run directory" in r.err
