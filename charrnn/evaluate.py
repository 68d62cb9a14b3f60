"""Evaluation: one stateful pass over a whole text, every token scored once; loss, ppl, bits/char."""

from __future__ import annotations

import math
import os
import sys

import numpy as np
import torch
import torch.nn.functional as F
from tqdm.auto import tqdm

from charrnn.checkpoint import load_model
from charrnn.data import decode_text, eval_streams, load_corpus, read_bytes
from charrnn.errors import CharrnnError
from charrnn.model import RNNLM
from charrnn.runtime import autocast, resolve_device, resolve_precision, stderr_is_terminal

EVAL_WINDOW = 512


@torch.no_grad()
def score(model: RNNLM, ids: np.ndarray, device: torch.device, precision: str = "fp32",
          progress: bool = False, desc: str = "eval") -> tuple[float, int]:
    """Total negative log-likelihood (nats) of ids[1:] given everything before, and the count.

    The text is cut into a few contiguous streams (see data.eval_streams); each stream is read
    window by window with the hidden state carried, so context flows through the whole stream.
    """
    was_training = model.training
    model.eval()
    x, y = eval_streams(ids)
    x, y = x.to(device), y.to(device)
    total, count, state = 0.0, int((y >= 0).sum()), None
    n_windows = -(-x.shape[1] // EVAL_WINDOW)
    bar = tqdm(total=count, desc=desc, unit="tok", unit_scale=True, leave=False,
               disable=not (progress and n_windows >= 4 and stderr_is_terminal()), dynamic_ncols=True,
               file=sys.stderr)
    for s in range(0, x.shape[1], EVAL_WINDOW):
        xb, yb = x[:, s:s + EVAL_WINDOW], y[:, s:s + EVAL_WINDOW]
        with autocast(device, precision):
            logits, state = model(xb, state)
        nll = F.cross_entropy(logits.float().reshape(-1, logits.shape[-1]), yb.reshape(-1),
                              ignore_index=-100, reduction="sum")
        total += float(nll)
        bar.update(int((yb >= 0).sum()))
    bar.close()
    model.train(was_training)
    return total, count


def metrics(nll: float, n_tokens: int, n_chars: int, n_bytes: int) -> dict:
    """Per-token loss and perplexity, and the tokenizer-independent bits per character / byte."""
    loss = nll / max(n_tokens, 1)
    return {
        "loss": loss,
        "perplexity": math.exp(min(loss, 700.0)),
        "bpc": nll / math.log(2) / max(n_chars, 1),
        "bpb": nll / math.log(2) / max(n_bytes, 1),
        "tokens": n_tokens,
        "chars": n_chars,
        "bytes": n_bytes,
    }


def evaluate_split(model: RNNLM, tokenizer, ids: np.ndarray, n_chars: int, n_bytes: int,
                   device: torch.device, precision: str = "fp32", progress: bool = False,
                   desc: str = "eval") -> dict:
    """Metrics over a split; characters/bytes of the first token (never predicted) are not counted."""
    nll, count = score(model, ids, device, precision, progress, desc)
    first = tokenizer.decode(ids[:1])
    byte_piece = tokenizer.kind == "byte" or (hasattr(tokenizer, "sp") and tokenizer.sp.IsByte(int(ids[0])))
    first_bytes = 1 if byte_piece else len(first.encode("utf-8"))
    return metrics(nll, count, n_chars - len(first), n_bytes - first_bytes)


def evaluate_checkpoint(path: str, split: str = "val", file: str | None = None, device: str = "auto",
                        precision: str = "auto", skip_unknown: bool = False, progress: bool = True) -> dict:
    """Metrics of a checkpoint on its run's val/test split, or on any text file."""
    dev = resolve_device(device)
    model, tok, ckpt = load_model(path, dev)
    run = ckpt.get("run_config") or {}
    prec = resolve_precision(precision if precision != "auto" else run.get("precision", "auto"), dev)
    if file is not None:
        raw = read_bytes(file, "file")
        if tok.kind == "byte":
            ids = tok.encode(raw)
            text = raw.decode("utf-8", "replace")
        else:
            text = decode_text(raw, file, "file")
            ids = tok.encode(text, skip_unknown=skip_unknown, hint="pass --skip-unknown to drop them")
            if skip_unknown:  # count only the characters that were scored
                text = tok.decode(ids)
        n_chars, n_bytes, where = len(text), len(raw) if tok.kind == "byte" else len(text.encode()), file
    else:
        if split not in ("val", "test"):
            raise CharrnnError(f"unknown split {split!r}; choose val or test")
        if "corpus" not in run:
            raise CharrnnError(f"checkpoint '{path}' does not record its corpus; evaluate it with --file PATH")
        if split == "test" and not run.get("test_frac", 0.05) > 0:
            raise CharrnnError("this run has no test split (--test-frac was 0); use --split val or --file PATH")
        cache_dir = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(path))), ".cache")
        corpus = load_corpus(run["corpus"], run.get("tokenizer", tok.kind), run.get("vocab_size", 512),
                             run.get("val_frac", 0.05), run.get("test_frac", 0.05), run.get("val_file"),
                             cache_dir=cache_dir, tok_state=ckpt["tokenizer"])
        part = getattr(corpus, split)
        if len(part.ids) < 2:
            raise CharrnnError(f"this run has no {split} split (--{split}-frac was 0); "
                               "use --split val or --file PATH")
        ids, n_chars, n_bytes, where = part.ids, part.n_chars, part.n_bytes, f"{split} split of {run['corpus']}"
    if len(ids) < 2:
        raise CharrnnError(f"{where} is too short to evaluate: it needs at least two tokens")
    m = evaluate_split(model, tok, ids, n_chars, n_bytes, dev, prec, progress=progress, desc="eval")
    return {"checkpoint": path, "text": where, "tokenizer": tok.kind, **m}
