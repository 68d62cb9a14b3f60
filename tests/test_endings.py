"""Where a sample ends: stop strings (kept or stripped), line limits and line-start constraints,
checked against a direct reference on the whole text, for every way of cutting it into pieces."""

from __future__ import annotations

import pytest
from hypothesis import given, settings, strategies as st

from charrnn.generation.endings import Rules, Tracker, line_start_tokens
from charrnn.errors import CharrnnError
from charrnn.data.tokenizers import fit_tokenizer


class Pieces:
    """A stand-in stream decoder: token i decodes to pieces[i]."""

    def __init__(self, pieces):
        self.pieces = pieces

    def feed(self, i: int) -> str:
        return self.pieces[i]

    def flush(self) -> str:
        return ""


def _run(pieces, rules, at_line_start=False):
    """Feed every piece; returns (what was emitted, piece by piece), the tracker."""
    t = Tracker(rules, Pieces(pieces), at_line_start)
    emitted = []
    for i in range(len(pieces)):
        emitted.append(t.feed(i, -1.0))
        assert t.text() == "".join(emitted)  # emitted text is the sample's text so far, never more
        if t.done:
            break
    if not t.done:
        emitted.append(t.finish())
    return "".join(emitted), t


def _reference(text, stops, strip, max_lines):
    """The sample as one computation on the whole text: cut at the earliest completed end."""
    ends = []
    for s in stops:
        j = text.find(s)
        if j >= 0:
            ends.append((j + len(s), 0 if strip else 1, -len(s), j if strip else j + len(s), "stop"))
    if max_lines:
        pos = -1
        for _ in range(max_lines):
            pos = text.find("\n", pos + 1)
            if pos < 0:
                break
        if pos >= 0:
            ends.append((pos + 1, 2, 0, pos + 1, "max_lines"))
    if not ends:
        return text, "length"
    _, _, _, cut, why = min(ends)
    return text[:cut], why


pieces_st = st.lists(st.text(alphabet="ab\nc", min_size=0, max_size=4), min_size=1, max_size=30)
stops_st = st.lists(st.text(alphabet="ab\nc", min_size=1, max_size=4), min_size=0, max_size=3)


@pytest.mark.slow
@settings(max_examples=1000, deadline=None)
@given(pieces=pieces_st, stops=stops_st, strip=st.booleans(), max_lines=st.one_of(st.none(), st.integers(1, 4)))
def test_tracker_ends_where_the_whole_text_says(pieces, stops, strip, max_lines):
    text = "".join(pieces)
    got, t = _run(pieces, Rules(tuple(stops), strip, max_lines))
    assert (got, t.end) == _reference(text, stops, strip, max_lines)


def test_stop_spanning_pieces_is_stripped_and_never_shown():
    pieces = ["the e", "n", "d is ", "near"]
    got, t = _run(pieces, Rules(("end",), strip=True))
    assert (got, t.end, t.tokens) == ("the ", "stop", 3)
    got, t = _run(pieces, Rules(("end",), strip=False))
    assert (got, t.end) == ("the end", "stop")


def test_text_after_the_stop_inside_a_piece_is_cut():
    got, t = _run(["ab", "c.\nxyz", "q"], Rules(("\n",)))
    assert got == "abc.\n" and t.tokens == 2


def test_partial_stop_is_released_when_the_text_ends():
    got, t = _run(["ab", "c", "en"], Rules(("end",), strip=True))
    assert (got, t.end) == ("abcen", "length")


def test_line_starts_force_tokens_after_each_newline_and_end_after_the_last_line():
    rules = Rules(line_starts=((7,), (8, 9)))
    t = Tracker(rules, Pieces({0: "x", 1: "\n", 7: "A", 8: "B", 9: "b"}), at_line_start=False)
    assert t.forced == ()                     # the prime's line is not constrained
    t.feed(0, 0.0)
    t.feed(1, 0.0)
    assert t.forced == (7,)
    t.feed(7, 0.0)
    assert t.forced == ()
    t.feed(0, 0.0)
    t.feed(1, 0.0)
    assert t.forced == (8, 9)
    t.feed(8, 0.0)
    assert t.forced == (9,)
    t.feed(9, 0.0)
    assert not t.done
    t.feed(1, 0.0)
    assert t.done and t.end == "line_starts" and t.text() == "x\nAx\nBb\n"


def test_line_starts_at_the_start_force_the_first_line():
    t = Tracker(Rules(line_starts=((3,),)), Pieces({}), at_line_start=True)
    assert t.forced == (3,)


def test_clone_is_independent_including_pending_utf8_bytes():
    tok = fit_tokenizer("byte", "")
    t = Tracker(Rules(stops=("好",)), tok.stream_decoder(), False)
    data = "你好".encode()
    for b in data[:4]:  # 你 and the first byte of 好
        t.feed(b, -1.0)
    twin = t.clone()
    for b in data[4:]:
        t.feed(b, -1.0)
    assert t.done and t.text() == "你好"
    assert not twin.done and twin.text() == "你" and twin.tokens == 4
    for b in data[4:]:
        twin.feed(b, -1.0)
    assert twin.done and twin.text() == "你好" and twin.logprob == t.logprob == -6.0


def test_line_start_tokens_per_tokenizer():
    text = "春眠不觉晓，处处闻啼鸟。\n" * 20
    char = fit_tokenizer("char", text)
    assert line_start_tokens(char, "春处") == ((int(char.encode("春")[0]),), (int(char.encode("处")[0]),))
    byte = fit_tokenizer("byte", text)
    assert line_start_tokens(byte, "春") == (tuple("春".encode()),)
    with pytest.raises(CharrnnError, match="'夏' is not in the model's vocabulary"):
        line_start_tokens(char, "春夏")
    with pytest.raises(CharrnnError, match="must not contain a line break"):
        line_start_tokens(char, "春\n处")
