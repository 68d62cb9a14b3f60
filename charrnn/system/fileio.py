"""Atomic writes and code-free loading: the only place files are written or torch-loaded."""

from __future__ import annotations

import io
import os
import tempfile

import torch

from charrnn.errors import CharrnnError


def _current_umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


_UMASK = _current_umask()


def atomic_write_bytes(data: bytes, path: str) -> None:
    """Write to a temp file in the same directory, flush + fsync, then rename over ``path``.

    A crash at any instant leaves either the old file or the new one, never a torn file.
    """
    directory = os.path.dirname(os.path.abspath(path))
    try:
        fd, tmp = tempfile.mkstemp(prefix="." + os.path.basename(path) + ".", suffix=".tmp", dir=directory)
    except OSError as e:
        raise CharrnnError(f"cannot write in '{directory}': {e.strerror}; check permissions and free space") from None
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
            f.flush()
            os.fchmod(f.fileno(), 0o666 & ~_UMASK)  # mkstemp makes files private; give the usual mode
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except OSError as e:
        try:
            os.unlink(tmp)
        except OSError:
            pass
        raise CharrnnError(f"cannot write '{path}': {e.strerror}; free some disk space or choose another "
                           "--checkpoint-dir (existing files were left intact)") from None
    try:  # make the rename itself durable
        dfd = os.open(directory, os.O_RDONLY)
        try:
            os.fsync(dfd)
        finally:
            os.close(dfd)
    except OSError:
        pass


def atomic_save(obj, path: str) -> None:
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
    return torch.load(path, map_location="cpu", weights_only=True)
