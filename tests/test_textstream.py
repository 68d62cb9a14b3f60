"""textstream: chunks never split a UTF-8 character, and decoding checks match data.decode_text."""

from __future__ import annotations

import random

import pytest

import charrnn.data.text as ts
from charrnn.data.text import decode_text
from charrnn.errors import CharrnnError
from charrnn.data.text import Source, utf8_cut


def _unicode_text(n: int, seed: int = 0) -> str:
    rng = random.Random(seed)
    alphabet = "ab \n" + "éß" + "你好世界" + "🎉🐍" + "\u2581"
    return "".join(rng.choice(alphabet) for _ in range(n))


@pytest.mark.parametrize("s", ["", "a", "é", "你", "🎉", "ab你", "a🎉b"])
def test_utf8_cut_never_splits_a_character(s):
    data = s.encode("utf-8")
    for end in range(len(data) + 1):
        n = utf8_cut(data[:end])
        data[:n].decode("utf-8")  # the kept part is whole characters
        assert end - n < 4  # and at most one partial character is held back
        if end == len(data):
            assert n == end


@pytest.mark.parametrize("size", [1, 2, 3, 5, 64])
def test_byte_chunks_rebuild_the_file_on_character_boundaries(tmp_path, size):
    text = _unicode_text(3000, seed=size)
    f = tmp_path / "t.txt"
    f.write_bytes(text.encode("utf-8"))
    src = Source(str(f))
    pieces = list(src.byte_chunks(size))
    assert b"".join(p for _, p in pieces) == text.encode("utf-8")
    offsets = [o for o, _ in pieces]
    assert offsets == sorted(offsets) and offsets[0] == 0
    for _, p in pieces:
        p.decode("utf-8")  # every chunk decodes on its own
    assert "".join(src.text_chunks(size)) == decode_text(f.read_bytes(), str(f))


def test_text_chunks_drop_the_byte_order_mark_once(tmp_path):
    f = tmp_path / "bom.txt"
    f.write_bytes(b"\xef\xbb\xbfhello \xef\xbb\xbf world")
    assert "".join(Source(str(f)).text_chunks(4)) == "hello \ufeff world" == decode_text(f.read_bytes(), str(f))


def test_invalid_utf8_names_the_offset_in_the_file(tmp_path, monkeypatch):
    f = tmp_path / "bad.txt"
    f.write_bytes(b"a" * 50 + b"\xff" + b"b" * 10)
    with pytest.raises(CharrnnError, match=r"bad byte 0xff at offset 50\)"):
        list(Source(str(f)).text_chunks(16))  # the bad byte is in the 4th chunk


def test_nul_in_the_first_mib_means_binary(tmp_path, monkeypatch):
    monkeypatch.setattr(ts, "NUL_SCAN", 40)
    f = tmp_path / "nul.txt"
    f.write_bytes(b"x" * 30 + b"\x00" + b"y" * 30)
    with pytest.raises(CharrnnError, match="looks binary .NUL byte at offset 30"):
        list(Source(str(f)).text_chunks(8))
    f.write_bytes(b"x" * 50 + b"\x00")  # past the scanned part: text (as decode_text decides)
    assert len("".join(Source(str(f)).text_chunks(8))) == 51


def test_scan_bytes(tmp_path):
    cases = {b"plain ascii": (True, True), "你好".encode(): (True, False), b"\xff\xfe": (False, False)}
    for i, (data, (utf8, ascii_only)) in enumerate(cases.items()):
        f = tmp_path / f"{i}.txt"
        f.write_bytes(data)
        assert Source(str(f)).scan_bytes() == {"utf8": utf8, "ascii": ascii_only}


@pytest.mark.parametrize("content,message", [(None, "does not exist"), (b"", "is empty")])
def test_check_file_errors(tmp_path, content, message):
    f = tmp_path / "x.txt"
    if content is not None:
        f.write_bytes(content)
    with pytest.raises(CharrnnError, match=message):
        Source(str(f))
    with pytest.raises(CharrnnError, match="is a directory"):
        Source(str(tmp_path))
