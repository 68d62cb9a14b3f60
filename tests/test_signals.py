"""signals.StopRequest: the first SIGINT/SIGTERM is recorded, the handlers are restored afterwards."""

from __future__ import annotations

import os
import signal
import threading

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
