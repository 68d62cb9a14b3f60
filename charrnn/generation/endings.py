"""How each generated sample ends and what it is forced to say: stop strings (``--stop``,
``--strip-stop``), a line limit (``--max-lines``) and line-start constraints (``--line-starts``).

One ``Tracker`` follows one stream: it is fed the stream's tokens, returns the text that is final
(text that may still turn out to start a stripped stop string is held back), names the tokens the
next steps must take (the encoding of a line's given first character) and says when and why the
sample ended. Beam search copies trackers (``clone``), so their fields are never mutated in place.
"""

from __future__ import annotations

import codecs
import copy
from dataclasses import dataclass

import numpy as np

from charrnn.errors import CharrnnError

ENDS = ("length", "stop", "max_lines", "line_starts")  # Sample.end: why a sample ended


@dataclass(frozen=True)
class Rules:
    stops: tuple = ()            # stop strings (non-empty)
    strip: bool = False          # leave the stop string out of the sample
    max_lines: int | None = None
    line_starts: tuple = ()      # per line, the token ids of its given first character

    @property
    def active(self) -> bool:
        return bool(self.stops or self.max_lines or self.line_starts)


def line_start_tokens(tokenizer, chars: str) -> tuple:
    """The token ids of each character of ``--line-starts`` (several for bytes or subword pieces)."""
    if "\n" in chars or "\r" in chars:
        raise CharrnnError("--line-starts must not contain a line break; give one character per line")
    out = []
    for ch in chars:  # a few characters, one per line of verse
        try:
            ids = tokenizer.encode(ch)
        except CharrnnError:
            ids = np.zeros(0, np.int32)
        if len(ids) == 0:
            raise CharrnnError(f"--line-starts character {ch!r} is not in the model's vocabulary; give characters "
                               "the model was trained on")
        out.append(tuple(int(i) for i in ids))
    return tuple(out)


def _clone_decoder(dec):
    """A copy of a tokenizer's stream decoder with its own pending UTF-8 bytes."""
    new = copy.copy(dec)
    for k, v in vars(dec).items():
        if isinstance(v, codecs.IncrementalDecoder):
            setattr(new, k, copy.copy(v))
    return new


class Tracker:
    """One stream's text after the prime, its token count and log-probability, and its end."""

    def __init__(self, rules: Rules, decoder, at_line_start: bool):
        self.rules, self.decoder = rules, decoder
        self.keep = max((len(s) for s in rules.stops), default=1) - 1  # tail kept to match stops across pieces
        self.tail = ""            # the last `keep` characters generated
        self.held = ""            # generated but not yet final (may start a stripped stop string)
        self.out = None           # emitted pieces as a linked list (prev, piece): cheap to share between beams
        self.tokens, self.logprob = 0, 0.0
        self.lines = 0            # line breaks generated
        self.next_line = 0        # index of the next --line-starts character
        self.forced = ()          # token ids the next steps must produce
        self.end = None           # one of ENDS once finished
        if at_line_start:
            self._start_line()

    def clone(self) -> "Tracker":
        new = copy.copy(self)
        new.decoder = _clone_decoder(self.decoder)
        return new

    @property
    def done(self) -> bool:
        return self.end is not None

    def text(self) -> str:
        parts, node = [], self.out
        while node is not None:
            node, piece = node
            parts.append(piece)
        return "".join(reversed(parts))

    def _start_line(self) -> None:
        if self.next_line < len(self.rules.line_starts):
            self.forced = self.rules.line_starts[self.next_line]
            self.next_line += 1

    def feed(self, token: int, logprob: float) -> str:
        """Account one generated token; returns the text that became final ("" if none)."""
        self.tokens += 1
        self.logprob += logprob
        if self.forced:
            self.forced = self.forced[1:]
        return self._add(self.decoder.feed(token))

    def feed_all(self, tokens: list, logprob: float) -> str:
        """Account many tokens at once (their log-probabilities summed); as ``feed`` of each in turn
        where no rule can end the sample (sampling without rules decodes at the end)."""
        assert not self.rules.active
        self.tokens += len(tokens)
        self.logprob += logprob
        return self._add("".join(map(self.decoder.feed, tokens)))

    def finish(self, end: str = "length") -> str:
        """The stream stops (its length is reached): flush the decoder and release held text."""
        text = self._add(self.decoder.flush())
        if self.done:
            return text
        text += self.held
        self._emit(self.held)
        self.held, self.end = "", end
        return text

    def _emit(self, piece: str) -> None:
        if piece:
            self.out = (self.out, piece)

    def _add(self, piece: str) -> str:
        if not piece or self.done:
            return ""
        r = self.rules
        if not r.active:  # nothing can end the sample early: all text is final at once
            self.out = (self.out, piece)
            return piece
        window = self.tail + piece  # a stop string may begin in earlier text
        base = len(self.tail) - len(self.held)  # where the text not yet emitted starts in window
        cut, end, cut_key = None, None, None  # where the sample ends (window coordinates) and why
        for s in r.stops:  # the first stop string to be completed wins (the longer one on a tie)
            j = window.find(s, max(0, len(self.tail) - len(s) + 1))
            if j >= 0 and (cut_key is None or (j + len(s), j) < cut_key):
                cut, end, cut_key = (j if r.strip else j + len(s)), "stop", (j + len(s), j)
        if r.max_lines or r.line_starts:
            pos = len(self.tail) - 1
            while (pos := window.find("\n", pos + 1)) >= 0 and (cut_key is None or pos + 1 < cut_key[0]):
                self.lines += 1
                if r.max_lines and self.lines >= r.max_lines:
                    cut, end = pos + 1, "max_lines"
                elif r.line_starts and self.next_line >= len(r.line_starts):
                    cut, end = pos + 1, "line_starts"
                else:
                    self._start_line()
                    continue
                break
        if cut is not None:
            final = window[base:max(cut, base)]
            self._emit(final)
            self.held, self.end = "", end
            return final
        pending = window[base:]
        hold = min(self._holdback(window), len(pending)) if r.strip and r.stops else 0
        final = pending[:len(pending) - hold]
        self._emit(final)
        self.held = pending[len(pending) - hold:]
        self.tail = window[-self.keep:] if self.keep else ""
        return final

    def _holdback(self, text: str) -> int:
        """Length of the longest end of text that a stop string starts with (it may still complete)."""
        best = 0
        for s in self.rules.stops:
            for k in range(min(len(s) - 1, len(text)), best, -1):
                if text.endswith(s[:k]):
                    best = k
                    break
        return best
