"""Line by line: how surprising each line of a text is to a model (``charrnn score``, ``Model.score``).

Continuous (the default): the whole text is read in one stateful pass laid out exactly as
``charrnn eval`` reads it (evaluate.token_nlls), and each token's nll goes to the line that holds
it, so the lines' nll add up to eval's total. As in eval, the text's first token is context only
(nothing predicts it): line 1 does not count its characters. Independent: every line is read from
a fresh state after a newline (to rank candidate lines against each other), all its characters
scored; lines are batched by length, padded, one fused forward per batch and window.

A line is its characters plus the newline that ends it (the model predicts the line's end too);
``text`` is shown without that newline. Tokens never straddle lines (a newline is always a token
of its own), and each token is placed on characters through its UTF-8 bytes, vectorized.
"""

from __future__ import annotations

import math
import os
import tempfile

import numpy as np
import torch

from charrnn.data.store import IdFile
from charrnn.data.text import Source, codepoints, refuse_blank
from charrnn.errors import CharrnnError
from charrnn.evaluation.evaluate import EVAL_WINDOW, first_token_size, token_nlls
from charrnn.evaluation.pieces import Joiner, line_pieces, lines_ended
from charrnn.system.device import autocast
from charrnn.system.progress import progress_bar

LINE_BATCH = 64  # lines per batch in independent mode
LN2 = math.log(2)
SPACE_PIECE = "\u2581"  # how sentencepiece writes a space inside a piece


SCORE_PIECE = 1 << 20  # characters (bytes of a file) read at a time; pieces end after a newline


def score_lines(model, tok, text: str, device: torch.device, precision: str = "fp32", *,
                independent: bool = False, per_char: bool = False, skip_unknown: bool = False,
                progress: bool = False) -> list[dict]:
    """One record per line: {"line", "text", "chars", "nll", "bpc"} (+ "surprisal" bits per character
    with ``per_char``, + "skipped" unknown characters dropped with ``skip_unknown``)."""
    if not isinstance(text, str) or not text:
        raise CharrnnError("nothing to score: the text is empty")
    return list(LineScores(model, tok, device, precision, text=text, independent=independent, per_char=per_char,
                           skip_unknown=skip_unknown, progress=progress))


class LineScores:
    """The records of ``score_lines``, one line after another, for a text (``text=``) or a file (``path=``)
    of any size: memory holds a piece of SCORE_PIECE characters (with the line that crosses it, cut into
    parts where that changes nothing: pieces.py), never the whole text or its ids. Made in three passes: the text is encoded piece by piece (pieces end after a
    newline, and tokens never straddle lines, so this equals encoding it whole) into an unnamed id file
    (store.IdFile); in the continuous mode the model reads those ids as eval does (evaluate.token_nlls,
    its streams warmed before their cuts) and each token's nll goes to an unnamed float32 file; then,
    iterating, each piece is read again and its lines' records are made from its ids and nll, as the
    whole text's would be. Every check (unknown characters, too short a text) fails before the first
    record. ``lines``: how many records there are."""

    def __init__(self, model, tok, device, precision: str = "fp32", *, text: str | None = None,
                 path: str | None = None, what: str = "file", independent: bool = False, per_char: bool = False,
                 skip_unknown: bool = False, progress: bool = False):
        self.model, self.tok, self.device, self.precision, self.progress = model, tok, device, precision, progress
        self.text, self.path, self.what = text, path, what
        self.independent, self.per_char, self.skip_unknown = independent, per_char, skip_unknown
        self.ids, self.nll = IdFile(tok.vocab_size), None
        try:
            self._encode()
            if independent:
                _check_newline(tok)
            else:
                self._score()
        except BaseException:
            self.close()
            raise

    def __len__(self) -> int:
        return self.lines

    def _pieces(self):
        """(piece, continues): see pieces.py; a long line is cut where that changes nothing."""
        return line_pieces(self._chunks(), cut_lines=not self.independent and self.tok.kind in ("char", "byte"))

    def _chunks(self):
        if self.text is not None:
            return (self.text[i:i + SCORE_PIECE] for i in range(0, len(self.text), SCORE_PIECE))
        return _file_chunks(self.tok, self.path, self.what)

    def _encode(self) -> None:
        """First pass: every piece's ids into the id file, the tokens of each piece, the lines."""
        self.counts, self.lines, nonspace = [], 0, False
        for text, continues in self._pieces():
            try:
                _, line_of, _, scored, _ = _prep(self.tok, text, self.skip_unknown)
            except CharrnnError:  # name every unknown character of the text, as encoding it whole does
                self.tok.encode("".join(c for t, _ in self._pieces() for c in self.tok.unknown_chars(t)),
                                hint="pass --skip-unknown to drop them")
                raise
            ids = self.tok.encode(scored) if scored else np.zeros(0, np.int32)
            if len(ids) and self.tok.kind == "char" and len(ids) != len(scored):
                raise CharrnnError("the character tokenizer did not give one token per character; "
                                   "cannot place tokens on lines")
            self.ids.append(ids)
            self.counts.append(len(ids))
            self.lines += lines_ended(text, continues)
            nonspace = nonspace or not text.isspace()
        if self.path is not None and self.tok.kind != "byte" and not nonspace:
            refuse_blank(self.path, self.what)

    def _score(self) -> None:
        """Second pass (continuous): the nll of every token but the first (NaN), in text order, to a file."""
        if len(self.ids) < 2:
            raise CharrnnError("the text is too short to score: it needs at least two tokens "
                               "(or --independent, which scores every line from a newline)")
        self.nll = tempfile.TemporaryFile(prefix="charrnn-nll-")
        fd = self.nll.fileno()
        os.pwrite(fd, np.float32([np.nan]).tobytes(), 0)

        def sink(p, nll):  # targets p, p + 1, ... are tokens p + 1, p + 2, ...
            os.pwrite(fd, np.ascontiguousarray(nll, np.float32).tobytes(), 4 * (p + 1))
        token_nlls(self.model, self.ids, self.device, self.precision, self.progress, "score", sink=sink)

    def __iter__(self):
        """Third pass: the records, line by line, in text order (once: the files are gone afterwards)."""
        if self.ids is None:
            raise CharrnnError("these line scores were already read (they are read once); score the text again")
        bar = None
        if self.independent:
            bar = progress_bar(total=len(self.ids), desc="score", unit="tok", unit_scale=True, leave=False,
                               dynamic_ncols=True, disable=not (self.progress and len(self.ids) >= 4 * EVAL_WINDOW))
        try:
            line0, t0, held = 0, 0, None  # held: the parts of a line cut into pieces so far (Joiner)
            for (text, continues), k in zip(self._pieces(), self.counts):
                ids = self.ids.read(t0, t0 + k)
                nll = self._read_nll(t0, k)
                last = None
                carry = held.rec["nll"] if held is not None else None
                for r in _piece_records(self, text, ids, nll, line0, t0 == 0, bar, carry):
                    if held is not None:  # the first record of a piece continues the held line
                        held.add(r)
                        r, held = held, None
                    if last is not None:
                        yield Joiner.whole(last)
                    last = r
                if continues:
                    held = last if isinstance(last, Joiner) else Joiner(last)
                elif last is not None:
                    yield Joiner.whole(last)
                line0, t0 = line0 + lines_ended(text, continues), t0 + k
            if held is not None:
                yield held.record()
        finally:
            if bar is not None:
                bar.close()
            self.close()

    def _read_nll(self, a: int, k: int):
        if self.nll is None:
            return None
        data = os.pread(self.nll.fileno(), 4 * k, 4 * a)
        return np.frombuffer(data, np.float32).astype(np.float64)

    def close(self) -> None:
        if self.ids is not None:
            self.ids.close()
        if self.nll is not None:
            self.nll.close()
        self.ids = self.nll = None


def _file_chunks(tok, path: str, what: str):
    """A file's text, chunk by chunk, as eval reads it: a byte model reads the bytes as they are (a
    byte-order mark included); other models with the checks of text.decode_text."""
    src = Source(path, what)
    if tok.kind != "byte":
        yield from src.text_chunks(SCORE_PIECE)
        return
    for offset, raw in src.byte_chunks(SCORE_PIECE):
        try:
            yield raw.decode("utf-8")
        except UnicodeDecodeError as e:
            raise CharrnnError(f"{what} '{path}' is not valid UTF-8 (bad byte 0x{raw[e.start]:02x} at offset "
                               f"{offset + e.start}); scoring reads lines of text: convert it to UTF-8 "
                               "(e.g. iconv -t utf-8)") from None


def _prep(tok, text: str, skip_unknown: bool):
    """A piece's code points, the line of each, the mask of the characters scored (None: all), the
    scored text and the line of each of its characters."""
    cps = codepoints(text)
    nl = cps == 10
    line_of = np.cumsum(nl) - nl                     # line index of every character
    keep = _known(tok, text, cps, skip_unknown)
    scored = text if keep is None else _codepoints_text(cps[keep])
    return cps, line_of, keep, scored, line_of if keep is None else line_of[keep]


def _piece_records(job, text: str, ids, nll, line0: int, first: bool, bar, carry: float | None = None):
    """The records of a piece's lines (numbered from line0 + 1); ``first``: it holds the text's first
    token (if any), which nothing predicts; ``carry``: the nll of the line's parts in earlier pieces, summed
    before this piece's tokens (the same order as the line's tokens summed whole)."""
    tok = job.tok
    _, line_of, keep, scored, char_line = _prep(tok, text, job.skip_unknown)
    n_lines = int(line_of[-1]) + 1
    c_last, n_done = _token_chars(tok, ids, codepoints(scored))
    tok_line = char_line[c_last]
    if job.independent:
        nll = _independent_nlls(job.model, tok, ids, tok_line, job.device, job.precision, bar)
    chars = np.bincount(char_line, minlength=n_lines)
    if not job.independent and first and len(ids):
        chars[tok_line[0]] -= first_token_size(tok, ids)[0]
    bins, weights = tok_line, np.nan_to_num(nll)
    if carry is not None:
        bins, weights = np.concatenate([[0], tok_line]), np.concatenate([[carry], weights])
    line_nll = np.bincount(bins, weights=weights, minlength=n_lines)
    starts = np.searchsorted(char_line, np.arange(n_lines + 1))
    if job.per_char:  # JSON-ready: 3 decimals, None where nothing predicts the character
        bits = _char_bits(nll / LN2, n_done, len(scored))
        bits = np.where(np.isnan(bits), None, np.round(bits, 3).astype(object))
    skipped = np.bincount(line_of[~keep], minlength=n_lines) if keep is not None else None
    for i in range(n_lines):
        a, b = int(starts[i]), int(starts[i + 1])
        r = {"line": line0 + i + 1, "text": scored[a:b].removesuffix("\n"), "chars": int(chars[i]),
             "nll": float(line_nll[i]), "bpc": float(line_nll[i] / LN2 / chars[i]) if chars[i] > 0 else None}
        if job.per_char:
            r["surprisal"] = bits[a:b].tolist()
        if job.skip_unknown:
            r["skipped"] = int(skipped[i]) if skipped is not None else 0
        yield r


def _known(tok, text: str, cps: np.ndarray, skip_unknown: bool):
    """Mask of the characters the model knows (None: all of them); unknown ones fail unless skipped."""
    if tok.kind != "char":
        return None  # bytes and sentencepiece (byte fallback) know every character
    keep = np.isin(cps, tok.codepoints)
    if keep.all():
        return None
    if not skip_unknown:
        tok.encode(text, hint="pass --skip-unknown to drop them")  # raises, naming them
    return keep


def _codepoints_text(cps: np.ndarray) -> str:
    return cps.astype("<u4").tobytes().decode("utf-32-le", errors="surrogatepass")


def _utf8_len(cps: np.ndarray) -> np.ndarray:
    cps = np.asarray(cps, dtype=np.int64)
    return 1 + (cps >= 0x80) + (cps >= 0x800) + (cps >= 0x10000)


def token_byte_lengths(tok) -> np.ndarray:
    """UTF-8 bytes each token id stands for (a byte-fallback piece: one byte)."""
    if tok.kind == "char":
        return _utf8_len(tok.codepoints)
    if tok.kind == "byte":
        return np.ones(256, np.int64)
    sp = tok.sp
    return np.array([1 if sp.IsByte(i) else 0 if sp.IsControl(i) or sp.IsUnknown(i) else
                     len(sp.IdToPiece(i).replace(SPACE_PIECE, " ").encode("utf-8")) for i in range(sp.GetPieceSize())],
                    np.int64)


def _token_chars(tok, ids: np.ndarray, cps: np.ndarray):
    """For each token: the character holding its last byte, and how many characters are complete
    once it is read (so token t completes characters n_done[t-1] .. n_done[t]-1)."""
    if len(ids) == 0:
        return np.zeros(0, np.int64), np.zeros(0, np.int64)
    token_end = np.cumsum(token_byte_lengths(tok)[np.asarray(ids)])
    char_end = np.cumsum(_utf8_len(cps))
    if token_end[-1] != char_end[-1]:
        raise CharrnnError("the tokens do not spell the text back byte for byte; cannot place them on lines")
    return np.searchsorted(char_end, token_end - 1, side="right"), np.searchsorted(char_end, token_end, side="right")


def _char_bits(bits: np.ndarray, n_done: np.ndarray, n_chars: int) -> np.ndarray:
    """Per character: the bits of the tokens that complete it, a token's bits shared evenly among the
    characters it completes; a partial byte's bits go to the character it is part of; NaN where the
    (unpredicted) first token is."""
    out = np.zeros(n_chars)
    completes = np.diff(n_done, prepend=0)
    whole = completes > 0
    out[:] = np.repeat(bits[whole] / completes[whole], completes[whole])
    partial = ~whole
    np.add.at(out, n_done[partial], bits[partial])
    return out


@torch.no_grad()
def _independent_nlls(model, tok, ids, tok_line, device, precision, bar) -> np.ndarray:
    """Each line's tokens scored after a newline from a fresh state, lines batched by length."""
    _check_newline(tok)
    ctx = np.asarray(tok.encode("\n"), np.int64)
    starts = np.searchsorted(tok_line, np.arange(int(tok_line[-1]) + 2)) if len(ids) else np.zeros(1, np.int64)
    lens = np.diff(starts)
    order = [i for i in np.argsort(-lens, kind="stable") if lens[i] > 0]
    out = np.zeros(len(ids))
    ids_t, p = torch.as_tensor(np.asarray(ids), dtype=torch.long), len(ctx)
    was_training = model.training
    model.eval()
    for b in range(0, len(order), LINE_BATCH):
        rows = np.array(order[b:b + LINE_BATCH])
        n, st = torch.as_tensor(lens[rows]), torch.as_tensor(starts[rows])
        width = int(n.max())
        pos = torch.arange(width)
        valid = pos[None, :] < n[:, None]
        where = torch.where(valid, st[:, None] + pos[None, :], 0)
        toks = torch.where(valid, ids_t[where], -100)
        full = torch.cat([torch.as_tensor(ctx).expand(len(rows), p), toks], 1)
        x = torch.where(full[:, :-1] >= 0, full[:, :-1], int(ctx[-1])).to(device)  # padding reads a newline
        y = full[:, 1:].clone()
        y[:, :p - 1] = -100  # a context of several tokens: only the line's own tokens are targets
        y = y.to(device)
        state, parts = None, []
        for s in range(0, x.shape[1], EVAL_WINDOW):
            with autocast(device, precision):
                nll, state = model.token_nll(x[:, s:s + EVAL_WINDOW], y[:, s:s + EVAL_WINDOW], state)
            parts.append(nll.float().cpu())
        nll = torch.cat(parts, 1)[:, p - 1:]
        out[where[valid].numpy()] = nll[valid].double().numpy()
        bar.update(int(n.sum()))
    model.train(was_training)
    return out


def _check_newline(tok) -> None:
    if tok.kind == "char" and 10 not in tok.codepoints:
        raise CharrnnError("the model never saw a newline, so --independent has no line start to read "
                           "from; score the text as a whole (without --independent)")
