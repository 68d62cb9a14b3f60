"""Atomic writes and code-free loading."""

from __future__ import annotations

import os

import pytest
import torch

from charrnn.errors import CharrnnError
from charrnn.system.fileio import append_line, atomic_save, atomic_write_bytes, safe_load


def test_atomic_writes_replace_whole_files_with_the_usual_mode(tmp_path):
    mask = os.umask(0o022)
    os.umask(mask)
    atomic_write_bytes(b"old", str(tmp_path / "f"))
    atomic_write_bytes(b"new", str(tmp_path / "f"))
    assert (tmp_path / "f").read_bytes() == b"new"
    assert (tmp_path / "f").stat().st_mode & 0o777 == 0o666 & ~mask
    assert os.listdir(tmp_path) == ["f"]  # no temp file left behind


def test_a_failed_write_leaves_the_old_file_and_no_temp(tmp_path, monkeypatch):
    atomic_write_bytes(b"old", str(tmp_path / "f"))

    def broken(*a):
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(os, "replace", broken)
    with pytest.raises(CharrnnError, match="No space left on device"):
        atomic_write_bytes(b"new", str(tmp_path / "f"))
    assert (tmp_path / "f").read_bytes() == b"old" and os.listdir(tmp_path) == ["f"]


def test_save_and_safe_load_round_trip_plain_data(tmp_path):
    atomic_save({"w": torch.arange(3), "n": 1}, str(tmp_path / "x.pt"))
    got = safe_load(str(tmp_path / "x.pt"))
    assert torch.equal(got["w"], torch.arange(3)) and got["n"] == 1


def test_append_line_adds_exactly_one_newline(tmp_path):
    append_line(str(tmp_path / "m"), "a\n")
    append_line(str(tmp_path / "m"), "b")
    assert (tmp_path / "m").read_text() == "a\nb\n"
