"""How a bad invocation must fail, as test_bad_input.py's table and test_sample_cli.py check it: the
checks run_and_check applies (each its own exception class, so a failure names the broken promise),
the simplest hostile files, and case(), one row of a table of bad invocations."""

from __future__ import annotations

import os
import signal

import pytest

from tests.conftest import TINY_TEXT, snapshot

CASE_TIMEOUT_S = 60


# ----------------------------------------------------------------------------- the checks

class ExitCodeCheck(AssertionError):
    """The command exited 0."""


class MessageCheck(AssertionError):
    """The last line of stderr is not one 'error: ...' line naming the problem (or it says something wrong)."""


class StrayOutputCheck(AssertionError):
    """Something besides the one error line was printed (progress chatter on stderr, or anything on stdout)."""


class TracebackCheck(AssertionError):
    """A traceback leaked to the user."""


class SideEffectCheck(AssertionError):
    """A file under the checkpoint dir changed, appeared or disappeared."""


class PayloadCheck(AssertionError):
    """Code embedded in a pickle ran."""


class Hang(Exception):
    """The command did not finish within CASE_TIMEOUT_S."""


# ----------------------------------------------------------------------------- hostile files

class Payload:
    """Unpickling this runs ``os.system('touch MARKER')``: it must never happen."""

    def __init__(self, marker: str):
        self.marker = marker

    def __reduce__(self):
        return os.system, (f"touch '{self.marker}'",)


def _file(name: str, data: bytes):
    def setup(ctx):
        p = ctx["tmp"] / name
        p.write_bytes(data)
        return p
    return setup


def _dir(ctx):
    p = ctx["tmp"] / "a_directory"
    p.mkdir()
    (p / "inside.txt").write_text("text in a directory\n")
    return p


def _missing(ctx):
    return ctx["tmp"] / "no_such_file.txt"


def _make_unreadable(p):  # skipped when running as root
    p.chmod(0)
    if os.access(p, os.R_OK):
        p.chmod(0o644)
        pytest.skip("running as root (or with CAP_DAC_OVERRIDE): chmod 000 does not stop reading")
    return p


def _unreadable(ctx):
    p = ctx["tmp"] / "unreadable.txt"
    p.write_text(TINY_TEXT, encoding="utf-8")
    return _make_unreadable(p)


def case(id_, argv, needles, setup=None, marks=(), absent=()):
    if isinstance(needles, str):
        needles = [needles]
    return pytest.param(list(argv), list(needles), list(absent), setup, id=id_, marks=marks)


def _fill(s: str, ctx: dict) -> str:
    return s.format(**{k: str(v) for k, v in ctx.items()})


class _Alarm:
    """Turn a hang (e.g. blocking on a fifo) into a test failure instead of a stuck test run."""

    def __init__(self, seconds: int):
        self.seconds = seconds

    def _fire(self, signum, frame):
        raise Hang(f"the command did not finish in {self.seconds}s (hang)")

    def __enter__(self):
        self.old = signal.signal(signal.SIGALRM, self._fire)
        signal.alarm(self.seconds)

    def __exit__(self, *exc):
        signal.alarm(0)
        signal.signal(signal.SIGALRM, self.old)


def run_and_check(cli, args, needles, absent=(), watch=(), marker=None):
    """Run ``charrnn ARGS`` and check that it failed cleanly, saying the needles, changing no file under watch."""
    before = [snapshot(d) for d in watch]
    with _Alarm(CASE_TIMEOUT_S):
        r = cli(*args)

    if r.code == 0:
        raise ExitCodeCheck(f"exit code 0 for {args}; stderr={r.err!r}")
    for stream, text in (("stderr", r.err), ("stdout", r.out)):
        if "Traceback" in text:
            raise TracebackCheck(f"traceback on {stream}:\n{text}")
    lines = r.err.splitlines()
    last = lines[-1] if lines else ""
    if not last.startswith("error: ") or not last[len("error: "):].strip():
        raise MessageCheck(f"stderr does not end in one 'error: ...' line (a multi-line message?):\n{r.err}")
    if [ln for ln in lines if ln.startswith("error:")] != [last]:
        raise MessageCheck(f"more than one error line:\n{r.err}")
    for needle in needles:
        options = needle if isinstance(needle, tuple) else (needle,)
        if not any(o in last for o in options):
            raise MessageCheck(f"{' or '.join(map(repr, options))} not in message: {last}")
    for word in absent:
        if word in last:
            raise MessageCheck(f"{word!r} should not be in message (it misnames the problem): {last}")
    if marker is not None and os.path.exists(marker):
        raise PayloadCheck("code embedded in a pickle ran while loading it")
    for d, b in zip(watch, before):
        a = snapshot(d)
        if a != b:
            added = sorted(set(a) - set(b))
            removed = sorted(set(b) - set(a))
            changed = sorted(k for k in set(a) & set(b) if a[k] != b[k])
            raise SideEffectCheck(f"files under {d} changed: added {added}, removed {removed}, changed {changed}")
    if len(lines) != 1 or r.out:
        raise StrayOutputCheck(f"expected only the error line; stderr:\n{r.err}\nstdout:\n{r.out}")
    return r
