"""The one exception type users see: a one-line message naming the problem and the fix."""

import os


class CharrnnError(Exception):
    """A problem with the user's input or environment.

    The CLI prints ``error: <message>`` on one line and exits non-zero; no traceback.
    """

    exit_code = 2


class Interrupted(Exception):
    """Training stopped by SIGINT/SIGTERM after saving ``run_dir``/last.pt at ``step``; carries the exit
    code (130/143). Its message tells a Python caller how to resume (``charrnn.resume(...)``);
    ``shell_message`` is the same for the command line (``charrnn train --resume ...``)."""

    def __init__(self, signum: int, run_dir: str, step: int):
        self.signum, self.run_dir, self.step = signum, run_dir, step
        self.exit_code = 128 + signum
        super().__init__(self._message(f"charrnn.resume({str(run_dir)!r})"))

    @property
    def shell_message(self) -> str:
        return self._message(f"charrnn train --resume {self.run_dir}")

    def __reduce__(self):
        return Interrupted, (self.signum, self.run_dir, self.step)

    def _message(self, how: str) -> str:
        return f"interrupted; saved {os.path.join(self.run_dir, 'last.pt')} at step {self.step}. Resume with: {how}"
