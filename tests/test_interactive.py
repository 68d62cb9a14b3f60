"""``charrnn sample --interactive``: the session keeps the model's state across turns, /reset and
/temp act, and the real command works on a pseudo-terminal (Ctrl-C stops a continuation, Ctrl-D quits)."""

from __future__ import annotations

import fcntl
import os
import pty
import re
import select
import subprocess
import sys
import termios
import time
from pathlib import Path

import pytest

import charrnn
from charrnn.errors import CharrnnError
from charrnn.generation.interactive import Session
from charrnn.settings import SAMPLE, defaults

ROOT = Path(__file__).resolve().parents[1]

pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.fixture(scope="module")
def model(trained_run):
    return charrnn.load(trained_run[0], device="cpu")


def _greedy(model, prime: str, length: int = 30) -> str:
    """What the model says after ``prime``, from a fresh state, greedily (the prime left out)."""
    return model.sample(prime, temp=0, length=length)[len(prime):]


def test_session_keeps_the_state_across_turns_until_reset(model):
    s = Session(model, {**defaults(SAMPLE), "temp": 0.0, "length": 30})
    a = "".join(s.reply("the "))
    assert a == _greedy(model, "the ")
    b = "".join(s.reply("the "))
    assert b == _greedy(model, "the " + a + "the ")          # the second turn continues the first
    c = "".join(s.reply(""))                                    # Enter alone: just continue
    assert c == _greedy(model, "the " + a + "the " + b)
    assert s.command("/reset") == "state cleared"
    assert "".join(s.reply("the ")) == a
    with pytest.raises(CharrnnError, match="never saw"):  # the prompt loop prints it and goes on
        "".join(s.reply("the Ω"))
    assert "".join(s.reply("the ")) == _greedy(model, "the " + a + "the ")  # the bad turn changed nothing


def test_session_commands_change_temperature_and_length(model):
    s = Session(model, {**defaults(SAMPLE), "temp": 0.0, "length": 30, "seed": 1})
    a = "".join(s.reply("the "))
    assert s.command("/temp 3") == "temperature 3" and s.command("/reset") == "state cleared"
    assert "".join(s.reply("the ")) != a
    assert s.command("/temp -1").startswith("error: --temp must be 0 (greedy) or positive")
    assert s.command("/temp x") == "error: /temp needs a number (e.g. /temp 0.5)"
    assert s.command("/temp 0") == "temperature 0" and s.command("/length 7") == "length 7"
    s.reset()
    assert "".join(s.reply("the ")) == a[:7]
    assert s.command("/nope").startswith("error: unknown command /nope")
    assert "/reset" in s.command("/help") and s.command("/quit") is None


# ----------------------------------------------------------------------------- the real terminal

ANSI = re.compile(r"\x1b\[[0-9;?]*[A-Za-z]")


def _controlling_terminal():
    """In the child: a session of its own whose controlling terminal is the pty (so ^C sends SIGINT)."""
    os.setsid()
    fcntl.ioctl(0, termios.TIOCSCTTY, 0)


class Terminal:
    """A child process on a pseudo-terminal: type lines, read what the screen shows."""

    def __init__(self, argv):
        self.master, slave = pty.openpty()
        env = {**os.environ, "PYTHONPATH": str(ROOT), "TERM": "dumb", "OMP_NUM_THREADS": "1"}
        self.proc = subprocess.Popen(argv, stdin=slave, stdout=slave, stderr=slave, cwd=ROOT, env=env,
                                     preexec_fn=_controlling_terminal)
        os.close(slave)
        self.screen = ""

    def read_until(self, pattern: str, timeout: float = 120) -> str:
        """Everything shown until ``pattern`` (a regex) matches the screen since the last read."""
        deadline = time.monotonic() + timeout
        while True:
            text = ANSI.sub("", self.screen).replace("\r\n", "\n")
            m = re.search(pattern, text)
            if m:
                self.screen = text[m.end():]
                return text[:m.end()]
            left = deadline - time.monotonic()
            if left <= 0:
                raise AssertionError(f"no {pattern!r} within {timeout}s; the screen shows {text!r}")
            ready, _, _ = select.select([self.master], [], [], left)
            if ready:
                try:
                    data = os.read(self.master, 4096)
                except OSError:  # the child closed the terminal
                    data = b""
                if not data:
                    raise AssertionError(f"the terminal closed before {pattern!r}; it showed {text!r}")
                self.screen += data.decode("utf-8", errors="replace")

    def send(self, keys: str) -> None:
        os.write(self.master, keys.encode())

    def turn(self, line: str) -> str:
        """Type a line; the continuation it gets (up to the next prompt)."""
        self.send(line + "\n")
        shown = self.read_until(r"\n> $")
        echoed = shown.index(line + "\n") + len(line) + 1  # the terminal echoes what was typed
        return shown[echoed:-len("\n> ")]

    def close(self):
        if self.proc.poll() is None:
            self.proc.kill()
        self.proc.wait()
        os.close(self.master)


@pytest.mark.integration
def test_interactive_on_a_pseudo_terminal(trained_run, model):
    term = Terminal([sys.executable, "-m", "charrnn", "sample", str(trained_run[0]), "--interactive", "--temp", "0",
                     "--length", "30", "--device", "cpu"])
    try:
        term.read_until(r"Ctrl-D: quit\)\n> $")
        a = term.turn("the ")
        assert a == _greedy(model, "the ")
        assert term.turn("the ") == _greedy(model, "the " + a + "the ")  # state kept
        assert term.turn("/reset") == "state cleared"
        assert term.turn("the ") == a
        assert term.turn("/temp 3") == "temperature 3"
        term.turn("/reset")
        assert term.turn("the ") != a
        term.turn("/temp 0")
        term.turn("/reset")
        assert term.turn("the ") == a
        # Ctrl-C while it generates stops that continuation only
        term.turn("/length 10000000")
        term.send("the \n")
        term.read_until(r"the \n.{20}")      # it is generating
        term.send("\x03")
        term.read_until(r"\[stopped\]\n> $", timeout=60)
        term.turn("/length 30")
        term.turn("/reset")
        assert term.turn("the ") == a      # the session still works
        term.send("\x04")                  # Ctrl-D quits
        assert term.proc.wait(timeout=60) == 0
    finally:
        term.close()
