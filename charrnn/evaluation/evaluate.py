"""Evaluation: one stateful pass over a whole text, every token scored once; loss, ppl, bits/char.

The library half: the API (``Model.evaluate``) and training call these; the CLI only prints.
"""

from __future__ import annotations

import math
import time

import numpy as np
import torch

from charrnn.data.batching import eval_plan
from charrnn.data.corpus import load_corpus
from charrnn.data.encode import encode_for_eval
from charrnn.data.store import IdFile
from charrnn.data.text import Source
from charrnn.errors import CharrnnError
from charrnn.evaluation.dynamic import dynamic_nlls
from charrnn.model import state as states
from charrnn.model.network import RNNLM
from charrnn.settings import config_from_saved
from charrnn.system.device import autocast
from charrnn.system.progress import progress_bar
from charrnn.system.rundir import cache_dir, checkpoint_dir_of

EVAL_WINDOW = 512
# Every stream cut from the middle of a text first reads the EVAL_WARM tokens before its cut, unscored
# (batching.eval_plan), so its state is close to the one a single pass over the whole text has there.
# What is left is the state's memory of text more than EVAL_WARM tokens back, which decays (forget gates):
# benchmarks/eval_warmup.py measures the excess nll of a cut against a single pass as the warm-up grows
# (docs/BENCHMARKS.md). A cut adds at most e(W) nats over the tokens after it, and streams are at least
# 4096 tokens long, so the figure per token moves by at most e(W) / 4096; the warm-up's cost is its
# recurrence alone (no head) over W / 4096 of the text at most (W / L for streams of length L).
EVAL_WARM = 256


def score(model: RNNLM, ids, device: torch.device, precision: str = "fp32",
          progress: bool = False, desc: str = "eval", limit: int | None = None, part=None,
          deadline: float | None = None) -> tuple[float, int]:
    """Total negative log-likelihood (nats) of ids[1:] given everything before, and the count.

    The text is cut into a few contiguous streams (see batching.eval_plan); each stream is read
    window by window with the hidden state carried, so context flows through the whole stream, and a
    stream cut from the middle of the text is first warmed on the EVAL_WARM tokens before its cut
    (unscored), so the total matches one pass over the whole text (within the tolerance at EVAL_WARM).
    Only the window being read is copied out of ``ids`` (a memory map, or store.IdFile).
    ``limit``: score only that many targets, in blocks spread over the text (--eval-tokens).
    ``part`` (distributed.py): this rank scores its rows of the streams, the sums are reduced.
    ``deadline`` (a perf_counter() time; --max-time): no window starts that would end after it, going by
    the last one (one at least), so only the first part of every stream is scored, and the count says
    how much (one process only).
    """
    plan = eval_plan(ids, limit=limit, warm=EVAL_WARM)
    if part is not None:
        plan = plan.rows(part.rows)
    total, count = _stateful_pass(model, ids, plan, device, precision, progress, desc,
                                  deadline=deadline if part is None or part.world == 1 else None) if plan.streams else (
        0.0, 0)
    return part.reduce(total, count) if part is not None else (total, count)


def token_nlls(model: RNNLM, ids, device: torch.device, precision: str = "fp32",
               progress: bool = False, desc: str = "score", one_stream: bool = False, sink=None) -> np.ndarray | None:
    """The nll (nats) of each of ids[1:] given everything before it, in text order (float64).

    The layout is score's (so these sum to the total eval reports, warm-ups included), or, with
    ``one_stream``, a single stream (what dynamic evaluation reads). ``sink(p, nll)``: instead of an
    array, each stream's piece of a window as it is scored: float32 nll of targets p, p + 1, ...
    (a target p predicts ids[p + 1]); then nothing is returned and nothing grows with the text.
    """
    plan = eval_plan(ids, max_streams=1) if one_stream else eval_plan(ids, warm=EVAL_WARM)
    out = None
    if sink is None:
        out = np.empty(plan.end, np.float64)

        def sink(p, nll):
            out[p:p + len(nll)] = nll
    _stateful_pass(model, ids, plan, device, precision, progress, desc, sink=sink)
    return out


@torch.no_grad()
def _stateful_pass(model, ids, plan, device, precision, progress, desc, sink=None, deadline=None):
    """Read the plan's streams (batching.EvalPlan) window by window with the state carried, each after its
    warm-up context (see warm_state); total nll and count; ``sink(p, nll)`` gets every row's scored
    targets of each window (float32, on the CPU)."""
    was_training = model.training
    model.eval()
    total, count = 0.0, 0
    state = warm_state(model, plan.ctx, device, precision)
    n_windows = -(-plan.length // EVAL_WINDOW)
    bar = progress_bar(total=plan.targets(), desc=desc, unit="tok", unit_scale=True, leave=False, dynamic_ncols=True,
                       disable=not (progress and n_windows >= 4))
    window_s = 0.0  # the last window's seconds: a window that would end past the deadline is not started
    for s in range(0, plan.length, EVAL_WINDOW):
        t0 = time.perf_counter()
        if s and deadline is not None and t0 + window_s > deadline:
            break
        e = min(s + EVAL_WINDOW, plan.length)
        xb, yb = plan.window(ids, s, e)
        xb, yb = xb.to(device, non_blocking=True), yb.to(device, non_blocking=True)
        with autocast(device, precision):
            nll, state = model.token_nll(xb, yb, state)
        total += float(nll.sum())
        valid = plan.valid(s, e)
        if sink is not None:
            rows = nll.float().cpu().numpy()
            for i, (st, k) in enumerate(zip(plan.starts.tolist(), valid.tolist())):
                if k:
                    sink(st + s, rows[i, :k])
        scored = int(valid.sum())
        count += scored
        bar.update(scored)
        window_s = time.perf_counter() - t0
    bar.close()
    model.train(was_training)
    return total, count


def warm_state(model, ctx, device, precision):
    """The state after reading each row of ``ctx`` (S, W), unscored (the recurrence alone, no head),
    window by window; zero (as a pass from the text's start has) for rows without context (-1).
    None when no row has context."""
    if ctx is None or ctx.shape[1] == 0 or not bool((ctx[:, 0] >= 0).any()):
        return None
    rows = (ctx[:, 0] >= 0).to(device)
    c, state = ctx.to(device)[rows], None
    for s in range(0, c.shape[1], EVAL_WINDOW):
        with autocast(device, precision):
            _, state = model.features(c[:, s:s + EVAL_WINDOW], state)

    def spread(h):  # (layers or M, rows with context, H) -> (layers or M, S, H), zero elsewhere
        full = h.new_zeros(h.shape[0], len(ctx), h.shape[2])
        full[:, rows] = h
        return full

    return states.map_state(spread, state)  # with --attention, the memory the warm-up built too


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
                   desc: str = "eval", dynamic: dict | None = None, limit: int | None = None, part=None,
                   deadline: float | None = None) -> dict:
    """Metrics over a split; characters/bytes of the first token (never predicted) are not counted.

    ``dynamic`` (lr, seq, decay): dynamic evaluation (dynamic.py), one stream, the model adapting
    to the text as it reads it; the model's weights are the same afterwards. ``limit``
    (--eval-tokens): only that many tokens are scored, and characters and bytes are the split's
    per token (exact for characters and bytes, an average for subwords).
    """
    if dynamic is not None:
        nll, count = dynamic_nlls(model, ids, device, precision, progress=progress, total=True, **dynamic)
    else:
        nll, count = score(model, ids, device, precision, progress, desc, limit, part, deadline)
    first_chars, first_bytes = first_token_size(tokenizer, ids)
    chars, n_bytes = n_chars - first_chars, n_bytes - first_bytes
    if count < len(ids) - 1:  # a bounded part of the split
        share = count / (len(ids) - 1)
        chars, n_bytes = max(1, round(chars * share)), max(1, round(n_bytes * share))
    return metrics(nll, count, chars, n_bytes)


def first_token_size(tokenizer, ids: np.ndarray) -> tuple[int, int]:
    """Characters and bytes of the first token, which nothing predicts (a lone byte counts as one of each)."""
    first = tokenizer.decode(ids[:1])
    byte_piece = tokenizer.kind == "byte" or (hasattr(tokenizer, "sp") and tokenizer.sp.IsByte(int(ids[0])))
    return len(first), 1 if byte_piece else len(first.encode("utf-8"))


def file_ids(tok, path: str, skip_unknown: bool = False):
    """Token ids of a text file, and the characters and bytes they stand for: the file is encoded chunk
    by chunk (data/encode.encode_for_eval) into an unnamed temporary file read back a window at a time
    (store.IdFile; close it when done), so memory does not grow with the file."""
    out = IdFile(tok.vocab_size)
    try:
        n_chars, n_bytes = encode_for_eval(Source(path, "file"), tok, out, skip_unknown,
                                           hint="pass --skip-unknown to drop them")
    except BaseException:
        out.close()
        raise
    return out, n_chars, n_bytes


def text_ids(tok, text: str | bytes, skip_unknown: bool = False):
    """Token ids of a text (bytes for byte models), and the characters and bytes they stand for."""
    if tok.kind == "byte":
        raw = text if isinstance(text, bytes) else text.encode("utf-8")
        return tok.encode(raw), len(raw.decode("utf-8", "replace")), len(raw)
    ids = tok.encode(text, skip_unknown=skip_unknown, hint="pass --skip-unknown to drop them")
    if skip_unknown:  # count only the characters that were scored
        text = tok.decode(ids)
    return ids, len(text), len(text.encode("utf-8"))


def run_split(ckpt: dict, path: str, split: str, min_tokens: int = 2):
    """A run's val or test split (data.Split) as the run read it, and its tokenizer (the cache is reused)."""
    run = ckpt.get("run_config")
    if not isinstance(run, dict) or "corpus" not in run:
        raise CharrnnError(f"checkpoint '{path}' does not record its corpus; evaluate it with --file PATH")
    cfg = config_from_saved(run)
    if split == "test" and not cfg.test_frac > 0:
        raise CharrnnError("this run has no test split (--test-frac was 0); use --split val or --file PATH")
    corpus = load_corpus(cfg.corpus, cfg.tokenizer, cfg.vocab_size, cfg.val_frac, cfg.test_frac, cfg.val_file,
                         cache_dir=cache_dir(checkpoint_dir_of(path)), tok_state=ckpt["tokenizer"],
                         records=cfg.records, unknown="skip" if cfg.skip_unknown else None)
    part = getattr(corpus, split)
    if len(part.ids) < min_tokens:
        raise CharrnnError(f"this run has no {split} split (--{split}-frac was 0); use --split val or --file PATH")
    return corpus.tokenizer, part


def split_ids(ckpt: dict, path: str, split: str):
    """Token ids, characters and bytes of a run's val or test split."""
    _, part = run_split(ckpt, path, split)
    return part.ids, part.n_chars, part.n_bytes
