"""signals.StopRequest: the first SIGINT/SIGTERM is recorded, the handlers are restored afterwards."""

from __future__ import annotations

import os
import signal
import threading

import pytest

from charrnn.training.signals import StopRequest


def test_first_signal_is_recorded_and_handlers_restored():
    before = signal.getsignal(signal.SIGTERM)
    req = StopRequest()
    with req.caught() as r:
        assert r.signum is None
        os.kill(os.getpid(), signal.SIGTERM)
        assert r.signum == signal.SIGTERM
    assert signal.getsignal(signal.SIGTERM) is before


def test_off_the_main_thread_nothing_is_installed():
    seen = {}

    def work():
        before = signal.getsignal(signal.SIGINT)
        with StopRequest().caught() as r:
            seen["same"] = signal.getsignal(signal.SIGINT) is before
            seen["signum"] = r.signum

    t = threading.Thread(target=work)
    t.start()
    t.join()
    assert seen == {"same": True, "signum": None}


def test_a_second_sigint_raises_keyboardinterrupt_through_the_handler_before():
    """A notebook's double interrupt stops at once without killing the kernel (Python's own SIGINT handler)."""
    before = signal.signal(signal.SIGINT, signal.default_int_handler)
    try:
        req = StopRequest()
        with pytest.raises(KeyboardInterrupt):
            with req.caught() as r:
                os.kill(os.getpid(), signal.SIGINT)
                assert r.signum == signal.SIGINT  # the first: recorded, training goes on to save
                os.kill(os.getpid(), signal.SIGINT)  # Python runs the handler before the next bytecode
                raise AssertionError("the second SIGINT did not stop the block")
        assert signal.getsignal(signal.SIGINT) is signal.default_int_handler
    finally:
        signal.signal(signal.SIGINT, before)
