"""Atomic writes and code-free loading: every file charrnn writes goes through ``atomic_file`` (or
``append_line`` for a log), and ``safe_load`` is the only torch.load. Imports no torch at import."""

from __future__ import annotations

import contextlib
import io
import os
import tempfile

from charrnn.errors import CharrnnError


def _current_umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


_UMASK = _current_umask()


CKPT_FIX = "choose another --checkpoint-dir"


@contextlib.contextmanager
def atomic_file(path: str, fix: str = CKPT_FIX, suffix: str = ".tmp"):
    """Yield a binary file open on a temp file beside ``path``; on success flush, fsync and rename it to
    ``path`` (and fsync the directory), on any failure or Ctrl-C delete it. A crash at any instant leaves
    either the old file or the new one, never a torn file. ``fix`` ends the one-line error on a full or
    read-only disk (where to write instead)."""
    directory = os.path.dirname(os.path.abspath(path))
    try:
        fd, tmp = tempfile.mkstemp(prefix="." + os.path.basename(path) + ".", suffix=suffix, dir=directory)
    except OSError as e:
        raise CharrnnError(f"cannot write in '{directory}': {e.strerror}; check permissions and free space, "
                           f"or {fix}") from None
    f = os.fdopen(fd, "wb")
    try:
        os.fchmod(f.fileno(), 0o666 & ~_UMASK)  # mkstemp makes files private; give the usual mode
        yield f  # an error of the caller's own passes through unchanged (the temp file is deleted)
        disk_op(lambda: (f.flush(), os.fsync(f.fileno()), f.close(), os.replace(tmp, path)), path, fix)
    except BaseException:  # errors and Ctrl-C alike: a partial file never stays behind
        f.close()
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        raise
    with contextlib.suppress(OSError):  # make the rename itself durable
        dfd = os.open(directory, os.O_RDONLY)
        try:
            os.fsync(dfd)
        finally:
            os.close(dfd)


def disk_op(op, path: str, fix: str):
    """``op()``, an OSError (a full disk) raised as one line naming ``path`` and ``fix``, not a traceback
    (and, for a download, not mistaken for a network error)."""
    try:
        return op()
    except OSError as e:
        raise CharrnnError(f"cannot write '{path}': {e.strerror}; free some disk space or {fix} "
                           "(existing files were left intact)") from None


def atomic_write_bytes(data: bytes, path: str, fix: str = CKPT_FIX) -> None:
    with atomic_file(path, fix) as f:
        disk_op(lambda: f.write(data), path, fix)


def atomic_save(obj, path: str) -> None:
    import torch

    buf = io.BytesIO()
    torch.save(obj, buf)
    atomic_write_bytes(buf.getvalue(), path)


def append_line(path: str, line: str) -> None:
    """Append one line and fsync (metrics.jsonl): a crash can at worst lose the line being written."""
    try:
        with open(path, "a", encoding="utf-8") as f:
            f.write(line.rstrip("\n") + "\n")
            f.flush()
            os.fsync(f.fileno())
    except OSError as e:
        raise CharrnnError(f"cannot write '{path}': {e.strerror}; check permissions and free space") from None


def safe_load(path: str):
    """torch.load with weights_only=True: tensors and plain containers only, never code."""
    import torch

    return torch.load(path, map_location="cpu", weights_only=True)
