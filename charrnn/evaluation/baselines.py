"""What a model's bits/char are worth: the same text compressed by gzip -9, bz2 -9 and xz (LZMA
preset 9), and its order-0 entropy (the bits/char of a model that knows only how often each
character occurs), reported by ``charrnn eval`` and ``Model.evaluate`` beside the model's figure.

A long text is measured on its first BOUND bytes (cut at a character boundary), and the result
says so (``"sampled": true`` with the characters and bytes measured): xz at preset 9 reads about
1-3 MB/s. The compressed sizes include each format's header and trailer, as the tools' files do.
"""

from __future__ import annotations

import bz2
import gzip
import lzma
from collections import Counter

import numpy as np

BOUND = 1 << 22  # bytes of UTF-8 measured (4 MiB)


def order0_bits(text: str) -> float:
    """Entropy of the character frequencies of text, in bits per character."""
    if not text:
        return 0.0
    counts = np.fromiter(Counter(text).values(), np.float64)
    p = counts / counts.sum()
    return float(-(p * np.log2(p)).sum())


def compression_baselines(text: str | bytes, bound: int = BOUND) -> dict:
    """bits/char of gzip, bz2, xz and order-0 on text (its first ``bound`` bytes if longer)."""
    data = text if isinstance(text, bytes) else text.encode("utf-8")
    sampled = len(data) > bound
    if sampled:
        data = data[:bound]
    sample = data.decode("utf-8", "ignore")  # a cut character at the end is dropped
    data = sample.encode("utf-8")
    chars = max(len(sample), 1)
    bits = {"gzip": len(gzip.compress(data, compresslevel=9, mtime=0)),
            "bz2": len(bz2.compress(data, compresslevel=9)),
            "xz": len(lzma.compress(data, format=lzma.FORMAT_XZ, preset=9))}
    return {**{k: 8 * v / chars for k, v in bits.items()}, "order0": order0_bits(sample),
            "chars": len(sample), "bytes": len(data), "sampled": sampled}


def text_of(tokenizer, ids, bound: int = BOUND) -> str:
    """The text of token ids, decoded only as far as ``bound`` bytes need (a token is at least one byte)."""
    return tokenizer.decode(np.asarray(ids[:bound]))  # a slice: ids may be a memory map or store.IdFile


def describe(b: dict) -> str:
    """Where the compressor figures come from, for the report."""
    return (f"the first {b['bytes']:,} bytes ({b['chars']:,} characters) of the text" if b["sampled"]
            else "the whole text")


def lines(b: dict, width: int = 12) -> list[str]:
    """The report's lines: one per baseline."""
    names = (("gzip", "gzip -9"), ("bz2", "bz2 -9"), ("xz", "xz -9"), ("order0", "order-0"))
    return [f"  {label:<{width}}{b[k]:.4f} bits/char" for k, label in names]


__all__ = ["BOUND", "compression_baselines", "describe", "lines", "order0_bits", "text_of"]
