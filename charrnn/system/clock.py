"""The run's wall clock: ``--max-time`` counts from the start of the process when the command line
runs (interpreter start-up and imports included), from the call when the Python API does.

The process's start is read from /proc/self/stat (Linux); elsewhere the import of this module
stands in for it (charrnn imports it first thing, so only the interpreter's own start-up is missed).
"""

from __future__ import annotations

import os
import time

_IMPORTED = time.perf_counter()
_from_process_start = False
_start = None  # no run started (e.g. a Trainer built by hand): nothing before it is counted


def process_age() -> float | None:
    """Seconds since this process started (Linux), or None where that cannot be read."""
    try:
        with open("/proc/self/stat", encoding="ascii") as f:
            fields = f.read().rsplit(")", 1)[1].split()
        ticks = int(fields[19])  # field 22, starttime: clock ticks after boot (fields after the name start at 3)
        return max(0.0, time.clock_gettime(time.CLOCK_BOOTTIME) - ticks / os.sysconf("SC_CLK_TCK"))
    except (OSError, ValueError, IndexError, AttributeError):
        return None


def from_process_start() -> None:
    """The command line: the next run's clock starts when the process started."""
    global _from_process_start
    _from_process_start = True


def start_run() -> float:
    """A run starts (api.train / api.resume): the clock's zero, as a perf_counter() reading. The first
    run of a command-line process counts from the process's start; any other from now."""
    global _start, _from_process_start
    now = time.perf_counter()
    if _from_process_start:
        age = process_age()
        _start = now - age if age is not None else _IMPORTED
        _from_process_start = False
    else:
        _start = now
    return _start


def since_start() -> float:
    """Seconds since the current run's clock started (0 when none was)."""
    return 0.0 if _start is None else time.perf_counter() - _start
