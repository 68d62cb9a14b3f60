"""``charrnn.TrainResult``: what ``charrnn.train`` and ``charrnn.resume`` return."""

from __future__ import annotations

import os

from charrnn.system import rundir


class TrainResult:
    """What a training run left: its directory, why it stopped, the best and last validation metrics,
    every logged metric (``metrics``), and the best model (``model``, loaded on first use).

    ``best`` is the run's best validation figure: best.pt scored on the whole validation split (what
    ``charrnn eval``, ``runs`` and ``inspect`` report); ``last_val`` the last periodic evaluation
    (an estimate on --eval-tokens tokens when those bound it)."""

    def __init__(self, summary: dict):
        self.run_dir = summary["run_dir"]
        self.stop, self.steps, self.elapsed = summary["stop"], summary["step"], summary["elapsed"]
        self.last_val, self.skipped = summary["last_val"], summary["skipped"]
        self.best = rundir.full_best(self.run_dir, summary["best"])  # best.pt on the whole val split
        self._model = None

    @property
    def best_path(self) -> str:
        return os.path.join(self.run_dir, rundir.BEST)

    @property
    def metrics(self) -> list[dict]:
        """Every line of the run's metrics.jsonl: train records and val records (``split``)."""
        return rundir.read_metrics(self.run_dir)

    @property
    def model(self):
        """The best model (best.pt), loaded on first use."""
        if self._model is None:
            from charrnn.api import load

            self._model = load(self.run_dir)
        return self._model

    def plot(self, title: str | None = None):
        """The run's training curves as a matplotlib Figure (see ``charrnn.plot``, which overlays runs)."""
        from charrnn.reports.calls import plot

        return plot(self.run_dir, title=title)

    def __repr__(self) -> str:
        best = f", best val bpc {self.best['bpc']:.4f} at step {self.best['step']}" if self.best else ""
        return f"<charrnn.TrainResult {self.run_dir}: {self.steps} steps, {self.elapsed:.0f}s{best}>"
