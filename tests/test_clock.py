"""system/clock.py: --max-time's clock starts at the process's start on the command line, at the call
from Python."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path

import pytest

from charrnn.system import clock

ROOT = Path(__file__).resolve().parents[1]


def test_a_run_from_python_counts_from_the_call():
    clock.start_run()
    assert 0.0 <= clock.since_start() < 1.0  # this test process is older than that


@pytest.mark.integration
def test_the_command_line_counts_from_the_process_start():
    """A fresh process sleeps 1 s before it marks the command line's start: the clock still reads >= 1 s."""
    code = ("import time; time.sleep(1.0); from charrnn.system import clock; clock.from_process_start(); "
            "clock.start_run(); print(clock.since_start())")
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(ROOT), os.environ.get("PYTHONPATH", "")])}
    t0 = time.time()
    out = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, check=True).stdout
    outside = time.time() - t0
    age = float(out)
    if clock.process_age() is None:  # not Linux: the clock's import stands in for the process's start
        assert 0.0 <= age < outside
    else:  # the process's age: at least its 1 s sleep, at most what the parent saw plus one clock tick (the
        # start is read in whole ticks after boot, rounded down, so the age reads up to a tick (10 ms) long:
        # once 52 us over what the parent saw, in CI's suite)
        assert 1.0 <= age <= outside + 1 / os.sysconf("SC_CLK_TCK")
