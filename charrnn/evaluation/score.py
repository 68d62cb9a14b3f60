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

import numpy as np
import torch

from charrnn.data.text import codepoints, decode_text, read_bytes
from charrnn.errors import CharrnnError
from charrnn.evaluation.evaluate import EVAL_WINDOW, first_token_size, token_nlls
from charrnn.system.device import autocast
from charrnn.system.progress import progress_bar

LINE_BATCH = 64  # lines per batch in independent mode
LN2 = math.log(2)
SPACE_PIECE = "\u2581"  # how sentencepiece writes a space inside a piece


def scoring_text(tok, path: str) -> str:
    """A file's text: as eval reads it (a byte model reads the bytes as they are, BOM included)."""
    raw = read_bytes(path, "file")
    if tok.kind != "byte":
        return decode_text(raw, path, "file")
    try:
        return raw.decode("utf-8")
    except UnicodeDecodeError as e:
        raise CharrnnError(f"file '{path}' is not valid UTF-8 (bad byte 0x{raw[e.start]:02x} at offset {e.start}); "
                           "scoring reads lines of text: convert it to UTF-8 (e.g. iconv -t utf-8)") from None


def score_lines(model, tok, text: str, device: torch.device, precision: str = "fp32", *,
                independent: bool = False, per_char: bool = False, skip_unknown: bool = False,
                progress: bool = False) -> list[dict]:
    """One record per line: {"line", "text", "chars", "nll", "bpc"} (+ "surprisal" bits per character
    with ``per_char``, + "skipped" unknown characters dropped with ``skip_unknown``)."""
    if not isinstance(text, str) or not text:
        raise CharrnnError("nothing to score: the text is empty")
    cps = codepoints(text)
    nl = cps == 10
    line_of = np.cumsum(nl) - nl                     # line index of every character
    n_lines = int(line_of[-1]) + 1
    keep = _known(tok, text, cps, skip_unknown)
    scored = text if keep is None else _codepoints_text(cps[keep])
    char_line = line_of if keep is None else line_of[keep]
    ids = tok.encode(scored) if scored else np.zeros(0, np.int32)
    if len(ids) and tok.kind == "char" and len(ids) != len(scored):
        raise CharrnnError("the character tokenizer did not give one token per character; cannot place tokens on lines")
    c_last, n_done = _token_chars(tok, ids, codepoints(scored))
    tok_line = char_line[c_last]
    if independent:
        nll = _independent_nlls(model, tok, ids, tok_line, device, precision, progress)
    else:
        if len(ids) < 2:
            raise CharrnnError("the text is too short to score: it needs at least two tokens "
                               "(or --independent, which scores every line from a newline)")
        nll = np.concatenate([[np.nan], token_nlls(model, ids, device, precision, progress, "score")])
    chars = np.bincount(char_line, minlength=n_lines)
    if not independent:
        chars[tok_line[0]] -= first_token_size(tok, ids)[0]
    line_nll = np.bincount(tok_line, weights=np.nan_to_num(nll), minlength=n_lines)
    starts = np.searchsorted(char_line, np.arange(n_lines + 1))
    if per_char:  # JSON-ready: 3 decimals, None where nothing predicts the character
        bits = _char_bits(nll / LN2, n_done, len(scored))
        bits = np.where(np.isnan(bits), None, np.round(bits, 3).astype(object))
    skipped = np.bincount(line_of[~keep], minlength=n_lines) if keep is not None else None
    records = []
    for i in range(n_lines):
        a, b = int(starts[i]), int(starts[i + 1])
        r = {"line": i + 1, "text": scored[a:b].removesuffix("\n"), "chars": int(chars[i]), "nll": float(line_nll[i]),
             "bpc": float(line_nll[i] / LN2 / chars[i]) if chars[i] > 0 else None}
        if per_char:
            r["surprisal"] = bits[a:b].tolist()
        if skip_unknown:
            r["skipped"] = int(skipped[i]) if skipped is not None else 0
        records.append(r)
    return records


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
def _independent_nlls(model, tok, ids, tok_line, device, precision, progress) -> np.ndarray:
    """Each line's tokens scored after a newline from a fresh state, lines batched by length."""
    if tok.kind == "char" and 10 not in tok.codepoints:
        raise CharrnnError("the model never saw a newline, so --independent has no line start to read "
                           "from; score the text as a whole (without --independent)")
    ctx = np.asarray(tok.encode("\n"), np.int64)
    starts = np.searchsorted(tok_line, np.arange(int(tok_line[-1]) + 2)) if len(ids) else np.zeros(1, np.int64)
    lens = np.diff(starts)
    order = [i for i in np.argsort(-lens, kind="stable") if lens[i] > 0]
    out = np.zeros(len(ids))
    ids_t, p = torch.as_tensor(np.asarray(ids), dtype=torch.long), len(ctx)
    was_training = model.training
    model.eval()
    bar = progress_bar(total=len(ids), desc="score", unit="tok", unit_scale=True, leave=False, dynamic_ncols=True,
                       disable=not (progress and len(ids) >= 4 * EVAL_WINDOW))
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
    bar.close()
    model.train(was_training)
    return out
