"""--keep-checkpoints K: the K most recent evaluated checkpoints, each saved as
``step-<n>-val-<loss>.pt`` beside best.pt and last.pt (atomic, like every checkpoint), the oldest
pruned first. Any command that loads a model takes one of them as its checkpoint path;
``charrnn runs RUN`` lists them. A resumed run first removes those written after its checkpoint
(they belong to the steps it is about to train again). Imports no torch."""

from __future__ import annotations

import os
import re

from charrnn.system import rundir

PATTERN = re.compile(r"^step-(\d+)-val-(\d+(?:\.\d+)?|inf|nan)\.pt$")


def kept_name(step: int, val_loss: float) -> str:
    return f"step-{step}-val-{val_loss:.4f}.pt"


def kept(run_dir: str) -> list[tuple[int, str]]:
    """(step, file name) of the kept checkpoints of a run, oldest first."""
    try:
        names = os.listdir(run_dir)
    except OSError:
        return []
    found = [(int(m.group(1)), n) for n in names if (m := PATTERN.match(n))]
    return sorted(found)


def prune(run_dir: str, keep: int | None = None, after_step: int | None = None) -> list[str]:
    """Remove the kept checkpoints beyond the ``keep`` most recent, and those of steps after
    ``after_step``; the names removed."""
    found = kept(run_dir)
    gone = [n for s, n in found if after_step is not None and s > after_step]
    left = [n for s, n in found if n not in gone]
    if keep is not None and len(left) > keep:
        gone += left[:len(left) - keep]
    for n in gone:
        try:
            os.unlink(os.path.join(run_dir, n))
        except FileNotFoundError:
            pass
    return gone


def list_checkpoints(run_dir: str) -> list[dict]:
    """Every checkpoint file of a run: best.pt, last.pt and the kept ones (step, val loss from the name),
    with size and modification time; what ``charrnn runs RUN`` shows."""
    rows = []
    for name in (rundir.BEST, rundir.LAST):
        p = os.path.join(run_dir, name)
        if os.path.isfile(p):
            rows.append({"file": name, "step": None, "val_loss": None})
    for step, name in kept(run_dir):
        loss = PATTERN.match(name).group(2)
        rows.append({"file": name, "step": step, "val_loss": float(loss)})
    out = []
    for r in rows:
        p = os.path.join(run_dir, r["file"])
        try:
            st = os.stat(p)
        except OSError:
            continue
        out.append({**r, "path": p, "bytes": st.st_size, "mtime": st.st_mtime})
    return out
