"""--tensorboard: the run's figures as TensorBoard event files in RUN/tensorboard (torch.utils.tensorboard,
the optional extra ``pip install 'charrnn[tensorboard]'``). The scalars are metrics.jsonl's own values
(the same rounded numbers), the --sample-every samples go in as text. A resumed run purges the events
written after its checkpoint, as metrics.jsonl is truncated."""

from __future__ import annotations

import os

from charrnn.errors import CharrnnError
from charrnn.settings import NEEDS_TENSORBOARD

DIR = "tensorboard"
TRAIN_SCALARS = ("loss", "bpc", "lr", "grad_norm", "tok_s")  # metrics.jsonl keys of a train line
VAL_SCALARS = ("loss", "bpc")


class Board:
    """A SummaryWriter fed with the records the trainer writes to metrics.jsonl."""

    def __init__(self, run_dir: str, step: int):
        try:
            from torch.utils.tensorboard import SummaryWriter
        except ImportError:
            raise CharrnnError(NEEDS_TENSORBOARD) from None
        # events after the checkpoint (step) are dropped: TensorBoard purges steps >= purge_step
        self.writer = SummaryWriter(os.path.join(run_dir, DIR), purge_step=step + 1 if step > 0 else None)

    def record(self, rec: dict) -> None:
        """One metrics.jsonl line: train and val lines become scalars, sample lines text."""
        split, step = rec.get("split"), rec["step"]
        if split == "sample":
            self.writer.add_text("sample", "    " + rec["text"].replace("\n", "\n    "), step)  # markdown: verbatim
            return
        names = TRAIN_SCALARS if split == "train" else VAL_SCALARS if split == "val" and "scope" not in rec else ()
        for k in names:
            if isinstance(rec.get(k), (int, float)):
                self.writer.add_scalar(f"{split}/{k}", rec[k], step)

    def close(self) -> None:
        self.writer.close()
