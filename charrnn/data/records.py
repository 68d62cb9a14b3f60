"""Records (``--records SEP``): a corpus of independent records, each modelled from a fresh state.

Text. The train/val/test split never cuts a record (it falls on the record boundary nearest each
fraction). A split is encoded as the ids of its records, each followed by the separator's ids (the
last record of the corpus may lack it), with the offset where each record starts (``starts``).

Layout. Record r is read as ``x = SEP + record`` without its last token and predicts
``y = record + SEP``: every token of a split is predicted exactly once, from a state that has seen
only the separator and the record so far, and the model learns to end a record. In the ids the
separator that ends record r-1 directly precedes record r, so with the separator prepended to the
split (``ext = SEP + ids``) a record's inputs are ``ext[start : start + L]`` and its targets the
same positions plus one: one gather per window, no copies of records.

Windows. The fused nn.LSTM/GRU kernels cannot reset the state inside a sequence, so a window row
never holds more than one record. Records of at most T (--seq-len) tokens are sorted by length
(ties broken at random each epoch) and packed one per row into windows of about B*T tokens
(``rows = B*T // width``, the width being the longest record of the window), so the rows of a window
have nearly equal lengths and little is padding. Longer records go in groups of B rows through
consecutive T-wide windows with the state carried (truncated BPTT inside the record); the state
is fresh at the first window of every group. Padding is input 0 with target -100. Windows are
shuffled per epoch (seeded); their number is the same every epoch.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

from charrnn.errors import CharrnnError


def records_separator(run_config) -> str | None:
    """The record separator of a run (its ``records`` setting: a config dict or object), or None."""
    sep = run_config.get("records") if isinstance(run_config, dict) else getattr(run_config, "records", None)
    return sep if isinstance(sep, str) and sep else None


# ----------------------------------------------------------------------------- text

def split_records(text, sep, val_frac: float, test_frac: float, path: str = "corpus"):
    """train, val, test parts of text (str or bytes) cut at the record boundaries nearest the fractions
    (as data.split_text cuts characters); a part that should hold text holds at least one record."""
    starts, n = record_starts([text], sep)
    a, b = record_cuts(starts, n, sep, val_frac, test_frac, path)
    return text[:a], text[a:b], text[b:]


def record_starts(chunks, sep) -> tuple[np.ndarray, int]:
    """Where each record starts and the length of the text, read from consecutive pieces of it (str or
    bytes) exactly as ``text.split(sep)`` would cut the whole (greedy, left to right): only the record
    being read is held, not the text. A loop over records, never over characters."""
    found, carry, pos = [np.zeros(1, np.int64)], None, 0
    for chunk in chunks:
        buf = chunk if carry is None else carry + chunk
        parts = buf.split(sep)
        if len(parts) > 1:
            found.append(pos + np.cumsum(np.fromiter(map(len, parts[:-1]), np.int64) + len(sep)))
        pos += len(buf) - len(parts[-1])
        carry = parts[-1]
    n = pos + (len(carry) if carry is not None else 0)
    return np.concatenate(found), n


def record_cuts(starts: np.ndarray, n: int, sep, val_frac: float, test_frac: float, path: str = "corpus"):
    """The offsets (a, b) where val and test begin: the record starts nearest the fractions."""
    if len(starts) < 2:
        shown = sep if isinstance(sep, str) else sep.decode("utf-8", "replace")
        raise CharrnnError(f"the corpus '{path}' never contains the --records separator {shown!r}; check the "
                           "separator (escapes: \\n newline, \\t tab, \\\\ backslash) or train without --records")
    cuts = np.unique(np.append(starts[starts < n], n))  # where each record starts, and the end

    def nearest(pos: float, lo: int, hi: int) -> int:
        i = int(np.clip(np.searchsorted(cuts, pos), lo, hi))
        if i > lo and abs(cuts[i - 1] - pos) <= abs(cuts[i] - pos):
            i -= 1
        return i

    last = len(cuts) - 1
    n_train = int(n * (1 - val_frac - test_frac) + 1e-6)
    n_test = int(round(n * test_frac))
    t = nearest(n - n_test, 1, last - (test_frac > 0 and last > 1))  # test starts at cuts[t]
    v = nearest(n_train, 1, t - (val_frac > 0 and t > 1))            # val starts at cuts[v]
    return int(cuts[v]), int(cuts[t])


def encode_records(tok, text, sep):
    """Token ids of a part (records each followed by the separator), and where each record starts.

    Characters and bytes encode the whole part at once (a record's token count is its length);
    sentencepiece encodes record by record (a loop over records, not characters), so that no piece
    spans a record boundary.
    """
    if not text:
        return np.zeros(0, np.int32), np.zeros(0, np.int64)
    if tok.kind == "byte":
        text, sep = (t if isinstance(t, bytes) else t.encode("utf-8") for t in (text, sep))
    parts = text.split(sep)
    if parts[-1] in ("", b""):  # the part ends with a separator: no record after it
        parts.pop()
    if tok.kind in ("char", "byte"):
        ids = tok.encode(text)
        lens = np.fromiter(map(len, parts), np.int64) + len(sep)
        lens[-1] = len(ids) - lens[:-1].sum()  # the last record has its separator only if the text does
    else:
        sep_ids = tok.encode(sep)
        pieces = [tok.encode(p) for p in parts]
        ends_with_sep = text.endswith(sep)
        chunks = [c for i, p in enumerate(pieces)
                  for c in ((p, sep_ids) if i < len(pieces) - 1 or ends_with_sep else (p,))]
        ids = np.concatenate(chunks).astype(np.int32)
        lens = np.array([len(p) + len(sep_ids) for p in pieces], np.int64)
        lens[-1] -= 0 if ends_with_sep else len(sep_ids)
    starts = np.concatenate([[0], np.cumsum(lens)[:-1]]).astype(np.int64)
    return ids, starts


def separator_ids(tok, sep: str) -> np.ndarray:
    return np.asarray(tok.encode(sep.encode("utf-8") if tok.kind == "byte" else sep), np.int64)


# ----------------------------------------------------------------------------- windows

@dataclass
class Window:
    rows: np.ndarray   # the record of each row
    offset: int        # position in those records where the window starts (a multiple of T)
    width: int
    fresh: bool        # the first window of its records: start from a zero state


def record_lengths(n_ids: int, starts: np.ndarray, k: int) -> np.ndarray:
    """Input length of each record: its tokens (separator included) plus k (the prefix SEP) minus one."""
    ends = np.append(starts[1:], n_ids)
    return (ends - starts) + k - 1


def plan_windows(lengths: np.ndarray, batch_size: int, seq_len: int, rng=None) -> list[Window]:
    """The windows of one pass over records of these input lengths (see the module docstring)."""
    budget, T = batch_size * seq_len, seq_len
    key = rng.random(len(lengths)) if rng is not None else np.zeros(len(lengths))
    order = np.lexsort((key, lengths))
    L = lengths[order]
    n_short = int(np.searchsorted(L, T, side="right"))
    units, i = [], 0
    while i < n_short:  # one iteration per window
        m = min(n_short - i, budget // max(int(L[i]), 1))
        fits = np.arange(1, m + 1) * L[i:i + m] <= budget  # c rows of the c-th length fit the budget
        c = m if fits.all() else max(1, int(np.argmin(fits)))
        units.append([Window(order[i:i + c], 0, int(L[i + c - 1]), True)])
        i += c
    for g in range(n_short, len(L), batch_size):
        rows, longest = order[g:g + batch_size], int(L[min(g + batch_size, len(L)) - 1])
        units.append([Window(rows, o, min(T, longest - o), o == 0) for o in range(0, longest, T)])
    if rng is not None:
        units = [units[j] for j in rng.permutation(len(units))]
    return [w for u in units for w in u]


def padding_fraction(plan: list[Window], lengths: np.ndarray) -> float:
    cells = sum(len(w.rows) * w.width for w in plan)
    return 1.0 - float(lengths.sum()) / max(cells, 1)


def gather(ext: torch.Tensor, starts: np.ndarray, lengths: np.ndarray, k: int, w: Window):
    """x, y (rows, width) of a window, and each target's position in the split's ids (-1: none)."""
    j = w.offset + torch.arange(w.width)
    valid = j[None, :] < torch.from_numpy(lengths[w.rows])[:, None]
    idx = torch.where(valid, torch.from_numpy(starts[w.rows])[:, None] + j[None, :], 0)
    x = torch.where(valid, ext[idx].long(), 0)
    scored = valid & (j[None, :] >= k - 1)  # a longer separator's own tokens are given, not predicted
    y = torch.where(scored, ext[idx + 1].long(), -100)
    return x, y, torch.where(scored, idx + 1 - k, -1)


class RecordBatcher:
    """Training windows over records: ``epoch_streams(e)`` is epoch e's plan, ``window(plan, k)`` its
    k-th (x, y), ``fresh(plan, k)`` whether the state starts at zero there (the interface of
    batching.StreamBatcher, which is never fresh within an epoch)."""

    def __init__(self, ids: np.ndarray, starts: np.ndarray, sep_ids: np.ndarray, batch_size: int, seq_len: int,
                 seed: int = 0):
        if len(starts) == 0:
            raise CharrnnError("the training split holds no record; lower --val-frac/--test-frac")
        self.k, self.starts = len(sep_ids), np.asarray(starts, np.int64)
        self.ext = torch.from_numpy(np.concatenate([sep_ids, ids]).astype(np.int32))
        self.lengths = record_lengths(len(ids), self.starts, self.k)
        self.B, self.T, self.seed = batch_size, seq_len, seed
        self._plan = (0, self._make_plan(0))
        self.windows_per_epoch = len(self._plan[1])
        self.padding = padding_fraction(self._plan[1], self.lengths)

    def _make_plan(self, epoch: int) -> list[Window]:
        return plan_windows(self.lengths, self.B, self.T, np.random.default_rng([self.seed, epoch]))

    def epoch_streams(self, epoch: int) -> list[Window]:
        if self._plan[0] != epoch:
            self._plan = (epoch, self._make_plan(epoch))
        return self._plan[1]

    def window(self, plan: list[Window], k: int) -> tuple[torch.Tensor, torch.Tensor]:
        x, y, _ = gather(self.ext, self.starts, self.lengths, self.k, plan[k])
        return x, y

    def fresh(self, plan: list[Window], k: int) -> bool:
        return plan[k].fresh

    def describe(self) -> str:
        n_long = int((self.lengths > self.T).sum())
        return (f"records: {len(self.starts):,} in the training split ({n_long:,} longer than --seq-len {self.T}); "
                f"windows of about {self.B * self.T:,} tokens, padding {100 * self.padding:.1f}%")
