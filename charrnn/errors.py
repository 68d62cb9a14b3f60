"""The one exception type users see: a one-line message naming the problem and the fix."""


class CharrnnError(Exception):
    """A problem with the user's input or environment.

    The CLI prints ``error: <message>`` on one line and exits non-zero; no traceback.
    """

    exit_code = 2


class Interrupted(Exception):
    """Training stopped by SIGINT/SIGTERM after saving; carries the exit code (130/143)."""

    def __init__(self, signum: int, message: str):
        super().__init__(message)
        self.exit_code = 128 + signum
