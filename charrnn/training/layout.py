"""The steps of the layout a run will really use, for the budget's plan: windows per epoch and the
window shapes a step is timed at. Plain text: B streams read T tokens at a time (batching.py), one
shape. --records: the window plan of records.py (short records packed one per row into windows of
about B*T cells, long ones in T-wide windows), so a step is (rows, width), not (B, T); the plan's
count of windows is an epoch, and a few windows at quantiles of its widths stand for its steps."""

from __future__ import annotations

import numpy as np

from charrnn.data.records import padding_fraction, plan_windows, record_lengths, separator_ids

SHAPES = 3  # windows timed for a records layout: at the 1/6, 1/2 and 5/6 quantiles of the widths


def stream_windows(n_train: int, batch: int, window: int) -> int:
    """Windows per epoch of batching.StreamBatcher (the same arithmetic)."""
    return max(1, ((n_train - window) // batch - 1) // window)


class Layout:
    """windows_per_epoch(batch, window) and shapes(batch, window): [(rows, width)] of equal weight."""

    def __init__(self, corpus, records: str | None):
        self.n_train, self.lengths = len(corpus.train.ids), None
        if records and getattr(corpus.train, "starts", None) is not None and len(corpus.train.starts):
            k = len(separator_ids(corpus.tokenizer, records))
            self.lengths = record_lengths(len(corpus.train.ids), np.asarray(corpus.train.starts, np.int64), k)
        self._plans = {}

    def _plan(self, batch: int, window: int):
        key = (batch, window)
        if key not in self._plans:
            self._plans[key] = plan_windows(self.lengths, batch, window)
        return self._plans[key]

    def windows_per_epoch(self, batch: int, window: int) -> int:
        if self.lengths is None:
            return stream_windows(self.n_train, batch, window)
        return max(1, len(self._plan(batch, window)))

    def shapes(self, batch: int, window: int) -> list[tuple[int, int]]:
        if self.lengths is None:
            return [(batch, window)]
        plan = sorted(self._plan(batch, window), key=lambda w: (w.width, len(w.rows)))
        n = len(plan)
        picks = [plan[min(n - 1, int(n * (2 * i + 1) / (2 * SHAPES)))] for i in range(SHAPES)]
        return [(len(w.rows), w.width) for w in picks]

    def padding(self, batch: int, window: int) -> float:
        return 0.0 if self.lengths is None else padding_fraction(self._plan(batch, window), self.lengths)
