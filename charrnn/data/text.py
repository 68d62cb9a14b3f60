"""Reading text, and its checks in one place: a file (or the built-in corpus) as byte chunks cut at
UTF-8 character boundaries, each decoded with the same checks as a whole text (binary, invalid UTF-8
with its offset, byte-order mark, whitespace only); its digest; code points without a Python loop.
"""

from __future__ import annotations

import os
import stat

import numpy as np

from charrnn.errors import CharrnnError

CHUNK_BYTES = 1 << 22  # 4 MiB: the largest piece of a corpus in memory at once (plus its ids)
NUL_SCAN = 1 << 20     # a NUL byte within the first MiB means a binary file
BOM = b"\xef\xbb\xbf"


def check_file(path: str, what: str = "file") -> int:
    """The size of a regular, non-empty, readable file; a one-line error for every way that can fail."""
    if not os.path.lexists(path):
        raise CharrnnError(f"{what} '{path}' does not exist; check the path")
    try:
        st = os.stat(path)
    except OSError as e:
        raise CharrnnError(f"cannot access {what} '{path}': {e.strerror}") from None
    if stat.S_ISDIR(st.st_mode):
        raise CharrnnError(f"{what} '{path}' is a directory; give a text file")
    if not stat.S_ISREG(st.st_mode):
        raise CharrnnError(f"{what} '{path}' is not a regular file (a fifo, socket or device); give a text file")
    try:
        with open(path, "rb") as f:
            first = f.read(1)
    except OSError as e:
        raise CharrnnError(f"cannot read {what} '{path}': {e.strerror}; check its permissions") from None
    if not first:
        raise CharrnnError(f"{what} '{path}' is empty; give a file with text in it")
    return st.st_size


def utf8_cut(data: bytes) -> int:
    """The largest n such that data[:n] ends on a UTF-8 character boundary (len(data) if it does)."""
    for back in range(1, min(4, len(data)) + 1):
        b = data[-back]
        if b < 0x80:
            return len(data)  # ASCII: complete
        if b >= 0xC0:  # a lead byte: complete if its sequence is all here
            need = 2 if b < 0xE0 else 3 if b < 0xF0 else 4
            return len(data) if back >= need else len(data) - back
    return len(data)  # no lead byte in reach: invalid anyway, the decoder will say where


class Source:
    """A corpus file, or the built-in corpus (corpus.BUILTIN_CORPORA) given as its bytes."""

    def __init__(self, path: str, what: str = "corpus", data: bytes | None = None):
        self.path, self.what, self.data = path, what, data
        self.size = len(data) if data is not None else check_file(path, what)

    def _open(self):
        import io

        if self.data is not None:
            return io.BytesIO(self.data)
        try:
            return open(self.path, "rb")
        except OSError as e:
            raise CharrnnError(f"cannot read {self.what} '{self.path}': {e.strerror}; check its permissions") from None

    def byte_chunks(self, size: int | None = None):
        """(offset, bytes) pieces of about ``size`` bytes; none splits a UTF-8 character."""
        size = size or CHUNK_BYTES
        with self._open() as f:
            carry, offset = b"", 0
            while True:
                block = f.read(size)
                data = carry + block
                if not block:
                    if data:
                        yield offset, data
                    return
                n = utf8_cut(data)
                if n:
                    yield offset, data[:n]
                carry, offset = data[n:], offset + n

    def read_prefix(self, n: int) -> bytes:
        with self._open() as f:
            return f.read(n)

    def update_hash(self, h) -> None:
        for _, chunk in self.byte_chunks(1 << 24):
            h.update(chunk)

    def read_all(self) -> bytes:
        if self.data is not None:
            return self.data
        with self._open() as f:
            return f.read()

    def text_chunks(self, size: int | None = None, with_bytes: bool = False):
        """The text as decoded pieces (the leading byte-order mark dropped), each checked by
        ``decode_chunk``. ``with_bytes``: (text, its UTF-8 size) pairs."""
        for offset, chunk in self.byte_chunks(size):
            text = decode_chunk(chunk, offset, self.path, self.what)
            n_bytes = len(chunk)
            if offset == 0 and text.startswith("\ufeff"):
                text, n_bytes = text[1:], n_bytes - 3
            yield (text, n_bytes) if with_bytes else text

    def scan_bytes(self) -> dict:
        """One pass over the raw bytes: whether they are UTF-8 (and ASCII), without decoding into memory."""
        utf8 = ascii_only = True
        for _, chunk in self.byte_chunks():
            arr = np.frombuffer(chunk, np.uint8)
            if ascii_only and arr.max(initial=0) >= 0x80:
                ascii_only = False
            if not ascii_only and utf8:
                try:
                    chunk.decode("utf-8")
                except UnicodeDecodeError:
                    utf8 = False
        return {"utf8": utf8, "ascii": ascii_only}


# ----------------------------------------------------------------------------- the checks of a text, once

def decode_chunk(chunk: bytes, offset: int, path: str, what: str = "file") -> str:
    """One piece of a file (starting at byte ``offset``) as text: a NUL byte within the first MiB means a
    binary file, and invalid UTF-8 is named with its file offset (one line each)."""
    if offset < NUL_SCAN:
        nul = chunk.find(b"\x00", 0, NUL_SCAN - offset)
        if nul >= 0:
            raise CharrnnError(f"{what} '{path}' looks binary (NUL byte at offset {offset + nul}); give a UTF-8 text file")
    try:
        return chunk.decode("utf-8")
    except UnicodeDecodeError as e:
        raise CharrnnError(f"{what} '{path}' is not valid UTF-8 (bad byte 0x{chunk[e.start]:02x} at offset "
                           f"{offset + e.start}); convert it to UTF-8 (e.g. iconv -t utf-8) or use --tokenizer byte") from None


def refuse_blank(path: str, what: str = "file") -> None:
    raise CharrnnError(f"{what} '{path}' contains only whitespace; give a file with text in it")


def decode_text(data: bytes, path: str, what: str = "file") -> str:
    """A whole file's bytes as text: the checks of ``decode_chunk``, the byte-order mark dropped, and a
    text of nothing but whitespace refused."""
    text = decode_chunk(data, 0, path, what)
    if text.startswith("\ufeff"):
        text = text[1:]
    if not text.strip():
        refuse_blank(path, what)
    return text


def read_bytes(path: str, what: str = "file") -> bytes:
    """Read a regular, non-empty file, with a one-line error for every way that can fail."""
    return Source(path, what).read_all()


def codepoints(text: str) -> np.ndarray:
    """The Unicode code points of a text as uint32, without a Python loop over its characters."""
    return np.frombuffer(text.encode("utf-32-le", errors="surrogatepass"), dtype="<u4")
