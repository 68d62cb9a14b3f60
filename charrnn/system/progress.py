"""Progress bars and where output goes: a tqdm bar on stderr on a terminal, tqdm's widget in a notebook,
nothing when output is piped; durations as a person reads them. Imports no torch (the named-corpus download uses it too)."""

from __future__ import annotations

import math
import sys


def in_notebook() -> bool:
    """True inside a Jupyter/Colab kernel, where tqdm draws a notebook widget instead of text."""
    shell = sys.modules.get("IPython")
    try:
        ip = shell.get_ipython() if shell is not None else None
    except Exception:  # noqa: BLE001 - any failure means "not a notebook"
        return False
    return (ip is not None and type(ip).__name__ == "ZMQInteractiveShell") or "google.colab" in sys.modules


def progress_bar(*, disable: bool, **kwargs):
    """A tqdm bar on stderr; inside a notebook (with ipywidgets installed) tqdm's notebook widget."""
    from tqdm import tqdm

    if not disable and in_notebook():
        try:
            import ipywidgets  # noqa: F401  - tqdm.notebook needs it, and fails without
            from tqdm.notebook import tqdm
        except ImportError:
            pass
    return tqdm(disable=disable, file=sys.stderr, **kwargs)


def show_progress(progress: bool | None = None) -> bool:
    """Whether to draw progress bars: True/False as asked, None (auto) on a terminal or in a notebook."""
    return bool(progress) if progress is not None else (stderr_is_terminal() or in_notebook())


def stderr_is_terminal() -> bool:
    """Progress bars only on a terminal (tqdm's own disable=None check is unreliable across versions)."""
    try:
        return sys.stderr.isatty()
    except (AttributeError, ValueError):
        return False


def human_duration(seconds: float | None) -> str:
    """A duration for a person: '45 s', '38 min', '2 h 10 min' ('-' when unknown)."""
    if seconds is None or not math.isfinite(seconds):
        return "-"
    s = int(round(seconds))
    if s < 90:
        return f"{max(s, 1)} s"
    if s < 90 * 60:
        return f"{round(s / 60)} min"
    return f"{s // 3600} h {round(s % 3600 / 60):02d} min"
