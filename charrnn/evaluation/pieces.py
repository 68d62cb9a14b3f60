"""``charrnn score``'s text in pieces of bounded size: each piece ends after a newline, so no line is
cut, except a line longer than a piece where that changes nothing (character and byte models in the
continuous mode: a cut between two characters cuts no token, and the state is carried over it; not
sentencepiece, whose tokens could span the cut, nor --independent, which reads each line from a fresh
state). Such a line goes in piece-sized parts, and its parts' records are joined into one (``Joiner``)."""

from __future__ import annotations

import math

LN2 = math.log(2)


def line_pieces(chunks, cut_lines: bool = False):
    """(piece, continues) for the text given in chunks: pieces end after a newline (the last one where
    the text ends). A line longer than a chunk is one piece, or with ``cut_lines`` a piece per chunk
    (``continues``: the line goes on in the next piece), so no piece is longer than two chunks."""
    held = []
    for chunk in chunks:
        cut = chunk.rfind("\n") + 1
        if not cut:
            if cut_lines:
                yield "".join(held) + chunk, True
                held = []
            else:
                held.append(chunk)
            continue
        yield "".join(held) + chunk[:cut], False
        held = [chunk[cut:]] if cut < len(chunk) else []
    if held and (rest := "".join(held)):
        yield rest, False


def lines_ended(piece: str, continues: bool) -> int:
    """How many lines end in a piece (the text's last line ends with the text, newline or not)."""
    return piece.count("\n") + (not piece.endswith("\n") and not continues)


class Joiner:
    """The records of a line cut into parts, joined: the texts, characters, skipped counts and the
    per-character figures add up; the nll is the last part's (each part's sum starts from the sum before
    it); bpc from the whole. ``add`` takes the next part's record, ``record()`` gives the whole line's."""

    def __init__(self, first: dict):
        self.rec, self.parts = dict(first), [first["text"]]
        if "surprisal" in first:
            self.rec["surprisal"] = list(first["surprisal"])

    def add(self, part: dict) -> None:
        self.parts.append(part["text"])
        self.rec["nll"] = part["nll"]  # summed on from the parts before (score.py's carry)
        for key in ("chars", "skipped"):
            if key in part:
                self.rec[key] += part[key]
        if "surprisal" in part:
            self.rec["surprisal"].extend(part["surprisal"])

    @staticmethod
    def whole(r) -> dict:
        """A record, or a Joiner's joined record."""
        return r.record() if isinstance(r, Joiner) else r

    def record(self) -> dict:
        r = self.rec
        r["text"] = "".join(self.parts)
        r["bpc"] = r["nll"] / LN2 / r["chars"] if r["chars"] > 0 else None
        return r
