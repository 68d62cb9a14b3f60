"""Run directories: naming, checkpoint lookup and the metrics file."""

from __future__ import annotations

import json
import os
import time

import pytest

from charrnn.system import rundir
from charrnn.errors import CharrnnError


def test_unnamed_runs_get_numbered_and_named_runs_are_never_reused(tmp_path):
    a = rundir.new_run_dir(str(tmp_path), "/x/story.txt", None)
    assert a == str(tmp_path / "story")
    (tmp_path / "story" / rundir.LAST).write_bytes(b"x")
    assert rundir.new_run_dir(str(tmp_path), "/x/story.txt", None) == str(tmp_path / "story-2")
    rundir.new_run_dir(str(tmp_path), "c.txt", "mine")
    (tmp_path / "mine" / rundir.BEST).write_bytes(b"x")
    with pytest.raises(CharrnnError, match="already has checkpoints; continue it with --resume"):
        rundir.new_run_dir(str(tmp_path), "c.txt", "mine")


@pytest.mark.parametrize("path,name", [("a/b/story.txt", "story"), ("tiny shakespeare.txt", "tiny_shakespeare"),
                                       (".hidden", "_hidden"), ("pystdlib", "pystdlib")])
def test_corpus_names(path, name):
    assert rundir.corpus_name(path) == name


def test_checkpoint_lookup_prefers_as_asked_and_finds_the_latest_run(tmp_path):
    for run in ("old", "new"):
        (tmp_path / run).mkdir()
        for f in (rundir.BEST, rundir.LAST):
            (tmp_path / run / f).write_bytes(b"x")
        time.sleep(0.02)
    os.utime(tmp_path / "old" / rundir.LAST, (time.time() - 100, time.time() - 100))
    os.utime(tmp_path / "old" / rundir.BEST, (time.time() - 100, time.time() - 100))
    assert rundir.latest_run(str(tmp_path)) == str(tmp_path / "new")
    assert rundir.resolve_checkpoint(None, str(tmp_path)) == str(tmp_path / "new" / rundir.BEST)
    assert rundir.resolve_checkpoint(str(tmp_path / "old"), prefer=rundir.LAST) == str(tmp_path / "old" / rundir.LAST)
    with pytest.raises(CharrnnError, match="no trained model found"):
        rundir.resolve_checkpoint(None, str(tmp_path / "none"))


def test_metrics_skip_torn_lines_and_truncate_on_resume(tmp_path):
    for step in (5, 10, 15):
        rundir.append_metrics(str(tmp_path), {"step": step, "split": "train", "loss": 1.0})
    with open(tmp_path / rundir.METRICS, "a") as f:
        f.write('{"step": 20, "spl')  # a crash mid-line
    assert [r["step"] for r in rundir.read_metrics(str(tmp_path))] == [5, 10, 15]
    rundir.truncate_metrics(str(tmp_path), 10)
    lines = (tmp_path / rundir.METRICS).read_text().splitlines()
    assert [json.loads(x)["step"] for x in lines] == [5, 10]


def test_config_round_trip(tmp_path):
    rundir.write_config(str(tmp_path), {"hidden": 7})
    assert rundir.read_config(str(tmp_path)) == {"hidden": 7}
    assert rundir.read_config(str(tmp_path / "missing")) is None


def test_a_lock_is_alive_only_while_a_live_process_holds_it(tmp_path):
    d = str(tmp_path)
    assert not rundir.lock_alive(d)  # no lock file
    with rundir.RunLock(d):
        assert rundir.lock_alive(d)  # held by this process
    assert not rundir.lock_alive(d)  # released
    lock = tmp_path / rundir.LOCK
    lock.write_text("")  # empty: no owner (os.kill(-1, 0) would say "alive")
    assert not rundir.lock_alive(d)
    lock.write_text("not a pid\n")
    assert not rundir.lock_alive(d)
    import subprocess
    import sys

    child = subprocess.Popen([sys.executable, "-c", "pass"])
    child.wait()  # reaped: its PID is free
    lock.write_text(f"{child.pid}\n")
    assert not rundir.lock_alive(d)
    with rundir.RunLock(d):  # a stale lock is taken over
        assert rundir.lock_alive(d)
