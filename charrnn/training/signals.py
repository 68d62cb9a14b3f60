"""SIGINT/SIGTERM during training: the first asks the loop to finish its step and save, a second
one stops at once: through the handler in place before training (for SIGINT, Python's
KeyboardInterrupt: a notebook's kernel survives a double interrupt), else by the default action."""

from __future__ import annotations

import contextlib
import os
import signal
import threading


class StopRequest:
    """``signum`` is the first signal received while ``caught()`` is active, or None."""

    def __init__(self):
        self.signum = None
        self._old = {}

    @contextlib.contextmanager
    def caught(self):
        if threading.current_thread() is not threading.main_thread():
            yield self  # signals can only be handled on the main thread (e.g. the API in a worker thread)
            return
        self._old = {s: signal.signal(s, self._on_signal) for s in (signal.SIGINT, signal.SIGTERM)}
        try:
            yield self
        finally:
            for s, h in self._old.items():
                signal.signal(s, h)

    def _on_signal(self, signum, frame):
        if self.signum is not None:  # a second signal: stop now
            before = self._old.get(signum)
            if callable(before):
                before(signum, frame)  # e.g. signal.default_int_handler: raises KeyboardInterrupt
                return
            signal.signal(signum, signal.SIG_DFL)
            os.kill(os.getpid(), signum)
        self.signum = signum
