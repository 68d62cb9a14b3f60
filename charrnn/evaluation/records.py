"""Scoring a records run (``--records``): every record from a fresh state, as it was trained.

The layout is records.py's (one record per window row, windows of similar lengths, long records
read in EVAL_WINDOW-wide pieces with the state carried); each token of the split is predicted once,
the first token of a record from the separator alone. The trainer's validation, ``charrnn eval`` and
``Model.evaluate`` on a records run's split all come here.
"""

from __future__ import annotations

import numpy as np
import torch

from charrnn.data.records import gather, plan_windows, record_lengths, records_separator, separator_ids
from charrnn.evaluation.baselines import compression_baselines, text_of
from charrnn.evaluation.evaluate import EVAL_WINDOW, metrics, run_split
from charrnn.system.device import autocast
from charrnn.system.progress import progress_bar

EVAL_ROWS = 32  # windows of about EVAL_ROWS x EVAL_WINDOW tokens


class _Prefixed:
    """``SEP + ids`` for ``gather`` without copying ids (a memory map of the split): each window reads
    only the positions it indexes."""

    def __init__(self, sep_ids: np.ndarray, ids):
        self.sep, self.ids, self.k = np.asarray(sep_ids, np.int64), ids, len(sep_ids)

    def __getitem__(self, idx: torch.Tensor) -> torch.Tensor:
        i = idx.numpy()
        body = np.asarray(self.ids[np.maximum(i - self.k, 0).reshape(-1)], np.int64).reshape(i.shape)
        return torch.from_numpy(np.where(i < self.k, self.sep[np.minimum(i, self.k - 1)], body))


@torch.no_grad()
def record_token_nll(model, ids: np.ndarray, starts: np.ndarray, sep_ids: np.ndarray, device: torch.device,
                     precision: str = "fp32", progress: bool = False, desc: str = "eval", total: bool = False):
    """Negative log-likelihood (nats) of every token of ids (float64, len(ids)), each record scored
    from a fresh state: no prediction depends on another record. ``total``: only their sum (float64),
    nothing per token; ids are read a window at a time in either case."""
    was_training = model.training
    model.eval()
    k, starts = len(sep_ids), np.asarray(starts, np.int64)
    ext = _Prefixed(sep_ids, ids)
    lengths = record_lengths(len(ids), starts, k)
    plan = plan_windows(lengths, EVAL_ROWS, EVAL_WINDOW)
    out = 0.0 if total else np.zeros(len(ids), np.float64)
    bar = progress_bar(total=len(ids), desc=desc, unit="tok", unit_scale=True, leave=False, dynamic_ncols=True,
                       disable=not (progress and len(plan) >= 4))
    state = None
    for w in plan:
        x, y, pos = gather(ext, starts, lengths, k, w)
        with autocast(device, precision):
            nll, state = model.token_nll(x.to(device), y.to(device), None if w.fresh else state)
        scored = pos >= 0
        if total:
            out += float(nll.float()[scored.to(nll.device)].double().sum())
        else:
            out[pos[scored].numpy()] = nll.float().cpu()[scored].double().numpy()
        bar.update(int(scored.sum()))
    bar.close()
    model.train(was_training)
    return out


def evaluate_records(model, tokenizer, split, sep: str, device: torch.device, precision: str = "fp32",
                     progress: bool = False, desc: str = "eval") -> dict:
    """Metrics of a records split (data.Split with starts); every character is predicted, so all count."""
    nll = record_token_nll(model, split.ids, split.starts, separator_ids(tokenizer, sep), device, precision,
                           progress, desc, total=True)
    return metrics(nll, len(split.ids), split.n_chars, split.n_bytes)


def evaluate_run_split(model, ckpt: dict, path: str, split: str, device: torch.device, precision: str,
                       progress: bool = False, baselines: bool = True) -> dict:
    """The val or test split of a records run, scored as it was trained (api.Model.evaluate), with the
    compressors' figures on the same text (baselines.py)."""
    tokenizer, part = run_split(ckpt, path, split, min_tokens=1)
    m = evaluate_records(model, tokenizer, part, records_separator(ckpt["run_config"]), device, precision,
                         progress, desc="eval")
    return {**m, "baselines": compression_baselines(text_of(tokenizer, part.ids))} if baselines else m
