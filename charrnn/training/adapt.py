"""Dropout that answers the run's own curves (issue #24): at an evaluation where validation did not
improve on best.pt (by STALL) while it stood GAP nats/token or more above the training loss of the
same stretch, the model is memorising the text, and --dropout rises by STEP (up to MAX). The early
stop's count starts again, so the new strength has --patience evaluations to act.

Why the curves and not the plan: the number of passes over the text does not say whether a run will
overfit (docs/BENCHMARKS.md, "Small corpora under --max-time"): at 250 s on this machine's 2x256,
the first 200 kB of tinyshakespeare stopped improving after 8 passes with its training loss 0.25
below validation, while zh_poems was still improving after 39 with validation below training. A run
whose validation keeps improving, or stays near its training loss, is never changed. GAP is 0.15,
not 0.1: at 0.1 a one-evaluation bump (full tinyshakespeare at 2.4 epochs, gap 0.11) raised it.

On by default under --max-time (settings.adaptive_dropout), unless --dropout is given: a regulariser
the user chose is never changed. The training loss counted is the mean of the steps since the last
evaluation (with dropout on, as trained); its sum and count are part of the training state, so a
resumed run decides as the uninterrupted one would."""

from __future__ import annotations

import math

import torch

from charrnn.settings import ADAPTIVE_DROPOUT

GAP = ADAPTIVE_DROPOUT["gap"]    # nats/token: validation this far above the training loss, not improving
STEP = ADAPTIVE_DROPOUT["step"]  # dropout added at each such evaluation
MAX = ADAPTIVE_DROPOUT["max"]    # and no further
STALL = 0.005  # nats/token: an evaluation that improves on best.pt by less has stopped improving (here)
ANNOUNCE_EPOCHS = 2.0  # the budget line names the rule for a plan of this many passes over the text or more


def raised(dropout: float, gain: float, val_loss: float, train_loss: float | None) -> float | None:
    """The new dropout after an evaluation that improved on best.pt by ``gain`` (negative: worse), or
    None to keep it."""
    if gain >= STALL or train_loss is None or not math.isfinite(train_loss) or dropout >= MAX:
        return None
    if val_loss - train_loss < GAP:
        return None
    return round(min(MAX, dropout + STEP), 4)


class TrainLoss:
    """The mean training loss since the last evaluation. A CUDA step's loss stays a tensor, kept until
    the evaluation reads them all at once (no work per step); a non-finite (skipped) step does not count."""

    def __init__(self, total: float = 0.0, n: int = 0):
        self.total, self.n, self.pending = total, n, []

    def add(self, loss) -> None:
        if isinstance(loss, torch.Tensor):
            self.pending.append(loss)
        elif math.isfinite(loss):
            self.total, self.n = self.total + loss, self.n + 1

    def _settle(self) -> None:
        if self.pending:
            v = torch.stack([x.float() for x in self.pending])
            ok = torch.isfinite(v)
            self.total, self.n = self.total + float(v[ok].sum()), self.n + int(ok.sum())
            self.pending = []

    def take(self) -> float | None:
        """The mean since the last take (None when no finite step), and start again."""
        self._settle()
        total, n = self.total, self.n
        self.total, self.n = 0.0, 0
        return total / n if n else None

    def state(self) -> list:
        self._settle()
        return [float(self.total), int(self.n)]
