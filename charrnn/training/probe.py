"""What this machine does per second: a few timed training steps of a candidate shape, with the
run's output head, device and precision; cached per machine, precision and shape, whatever the corpus.

A probe builds the candidate model and its AdamW, runs one warm-up step, then TIMED_STEPS timed
steps at windows of min(window, PROBE_WINDOW) tokens and of half that (as many again when their
times disagree by over 2x; the median counts, a step the run will really make, where the fastest
promised a crowded machine steps it never made). A
step costs a + b x window (a: the optimizer, clipping and per-call work; b: the recurrence), so the
two windows give the cost at the real one; a window of PROBE_WINDOW or less is timed as it is.
One forward pass over evaluation-shaped streams (after a warm-up pass) gives the evaluation speed.
Past the probe's deadline (its time is the run's: budget.py) no timing is repeated and the half
window is not timed (the step is then scaled in proportion to the window: an overestimate).

The vocabulary is not part of the key: a shape is timed at a vocabulary of ``vocab_bucket(V)``
tokens (the next power of two, at least VOCAB_BUCKET; every character and byte vocabulary shares
256) and the figures are scaled to the run's V by the arithmetic of a token (the recurrence's
multiply-adds plus the full softmax's H x V: the step is GEMMs whose time follows their size). With
V <= 256 the head is at most an eighth of a token's arithmetic on the smallest candidate (2x128), so
the scaling moves the figures by at most that much; an adaptive head is timed at the bucket's
clusters and not scaled (a bucket at least as large: a little slower, never faster).
Results live in ``<checkpoint dir>/.cache/budget-probe.json``, keyed by the machine (CPU model, threads,
torch version, device, precision) and the shape; delete the file to measure again.
"""

from __future__ import annotations

import json
import os
import statistics
import time
from dataclasses import asdict, replace

import torch

from charrnn.model.heads import resolve_head
from charrnn.model.network import RNNLM
from charrnn.model.sizes import layer_macs
from charrnn.system.device import cpu_model
from charrnn.system.fileio import atomic_write_bytes
from charrnn.training.step import make_optimizer

PROBE_WINDOW = 64  # steps are timed at min(window, 64) and half that
EVAL_WINDOW = 64
TIMED_STEPS = 2
CACHE_FILE = "budget-probe.json"
CACHE_VERSION = 3  # 2: two-window timing; 3: keyed by the vocabulary's bucket, not its size
VOCAB_BUCKET = 256  # the smallest vocabulary timed (every char and byte vocabulary)


def machine_key(device: torch.device, precision: str) -> str:
    name = torch.cuda.get_device_name(device) if device.type == "cuda" else device.type
    return f"{cpu_model()} | {torch.get_num_threads()} threads | torch {torch.__version__} | {name} | {precision}"


def vocab_bucket(vocab_size: int) -> int:
    """The vocabulary a shape is timed at: the next power of two, at least VOCAB_BUCKET."""
    return max(VOCAB_BUCKET, 1 << (int(vocab_size) - 1).bit_length())


def timed_config(mc):
    """The model actually timed for ``mc``: the same but for the vocabulary (its bucket) and its clusters."""
    v = vocab_bucket(mc.vocab_size)
    head, cutoffs = resolve_head(mc.head, v, mc.tie_weights)
    return replace(mc, vocab_size=v, head=head, cutoffs=cutoffs)


def token_macs(mc) -> int:
    """Multiply-adds per token of the recurrence and of a full softmax head (an adaptive head: 0)."""
    n, m = 0, mc.emb
    for _ in range(mc.layers):
        n += layer_macs(mc.cell, m, mc.hidden)
        m = mc.hidden
    if getattr(mc, "attention", 0):  # the query's product and the scores and sum over M + C keys (attention.py)
        n += mc.hidden * mc.hidden + 2 * (mc.attention + max(mc.attention, 64)) * mc.hidden
    return n + (mc.hidden * mc.vocab_size if mc.head != "adaptive" else 0)


def shape_key(mc, batch: int, window: int, eval_streams: int) -> str:
    t = timed_config(mc)
    heads = f"{t.head}{list(t.cutoffs) if t.cutoffs else ''}"
    return (f"{t.cell} {t.layers}x{t.hidden} emb {t.emb} vocab <= {t.vocab_size} {heads}"
            f"{' tied' if t.tie_weights else ''}{f' attention {t.attention}' if t.attention else ''}"
            f" | batch {batch} x {window} | eval streams {eval_streams}")


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)
    elif device.type == "mps":
        torch.mps.synchronize()


def _late(deadline: float | None) -> bool:
    return deadline is not None and time.perf_counter() > deadline


def _timed(fn, device, repeat: int, deadline: float | None = None) -> float:
    """The median of ``repeat`` calls, as many again when they disagree by over 2x (a busy machine):
    the speed a run will see (the fastest call promised a crowded machine steps it never made).
    Past the deadline, no more calls (one at least)."""
    times = []
    for i in range(2 * repeat):
        _sync(device)
        t0 = time.perf_counter()
        fn()
        _sync(device)
        times.append(time.perf_counter() - t0)
        if (i + 1 >= repeat and max(times) <= 2 * min(times)) or _late(deadline):
            break
    return statistics.median(times)


def measure(mc, batch: int, window: int, eval_streams: int, device: torch.device, precision: str,
            deadline: float | None = None) -> dict:
    """Seconds per training step at batch x window, and evaluation tokens per second."""
    from charrnn.system.device import autocast

    gen = torch.Generator().manual_seed(0)
    model = RNNLM(mc).to(device).train()
    opt = make_optimizer(model, 1e-4, 0.01, device)  # the trainer's AdamW (step.py)
    params = list(model.parameters())
    hi = min(window, PROBE_WINDOW)
    lo = max(1, hi // 2)
    data = {t: [torch.randint(mc.vocab_size, (batch, t), generator=gen).to(device) for _ in range(2)] for t in (lo, hi)}

    def step(t):
        x, y = data[t]
        with autocast(device, precision):
            loss, _ = model.loss(x, y)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(params, 1.0)
        opt.step()

    step(hi)  # warm-up: allocations, kernel selection
    t_hi = _timed(lambda: step(hi), device, TIMED_STEPS, deadline)
    step_s = t_hi * max(window, hi) / hi  # in proportion (past the deadline): at least a + b * window
    if window > hi and not _late(deadline):  # a step costs a + b * window: two windows give the line
        t_lo = _timed(lambda: step(lo), device, TIMED_STEPS, deadline)
        slope = (t_hi - t_lo) / (hi - lo)
        step_s = t_hi + slope * (window - hi) if slope > 0 else t_hi * window / hi
    xe, ye = (torch.randint(mc.vocab_size, (eval_streams, EVAL_WINDOW), generator=gen).to(device) for _ in range(2))
    model.eval()

    def evaluate():
        with torch.no_grad(), autocast(device, precision):
            model.token_nll(xe, ye)

    evaluate()  # warm-up: inference kernels differ from training ones
    t_eval = _timed(evaluate, device, 1)
    return {"step_s": step_s, "tok_s": batch * window / step_s, "eval_tok_s": eval_streams * EVAL_WINDOW / t_eval,
            "measured": time.strftime("%Y-%m-%d %H:%M")}


class ProbeCache:
    """The probe's measurements on disk: {"version", "machines": {machine: {shape: figures}}}."""

    def __init__(self, directory: str | None):
        self.path = os.path.join(directory, CACHE_FILE) if directory else None
        self.data = {"version": CACHE_VERSION, "machines": {}}
        if self.path and os.path.exists(self.path):
            try:
                with open(self.path, encoding="utf-8") as f:
                    data = json.load(f)
                if isinstance(data, dict) and data.get("version") == CACHE_VERSION:
                    self.data = data
            except (OSError, ValueError):
                pass  # a damaged cache is measured again
        self.dirty = False

    def get(self, machine: str, shape: str) -> dict | None:
        return self.data["machines"].get(machine, {}).get(shape)

    def put(self, machine: str, shape: str, figures: dict) -> None:
        self.data["machines"].setdefault(machine, {})[shape] = figures
        self.dirty = True

    def save(self) -> None:
        if not (self.path and self.dirty):
            return
        try:
            os.makedirs(os.path.dirname(self.path), exist_ok=True)
            atomic_write_bytes((json.dumps(self.data, indent=1) + "\n").encode(), self.path)
        except (OSError, Exception):  # noqa: BLE001 - a cache is an optimisation; never fail a run over it
            pass


def probe(mc, batch: int, window: int, eval_streams: int, device: torch.device, precision: str,
          cache: ProbeCache, deadline: float | None = None) -> tuple[dict, bool]:
    """The figures of one shape on this machine at ``mc``'s vocabulary, and whether they came from the
    cache (timed at the vocabulary's bucket, module docstring)."""
    machine, shape = machine_key(device, precision), shape_key(mc, batch, window, eval_streams)
    timed = timed_config(mc)
    figures = cache.get(machine, shape)
    hit = figures is not None
    if not hit:
        kw = {"deadline": deadline} if deadline is not None else {}
        figures = {**measure(timed, batch, window, eval_streams, device, precision, **kw), "model": asdict(timed)}
        figures["model"]["cutoffs"] = list(timed.cutoffs)
        cache.put(machine, shape, figures)
    return _scaled(mc, timed, figures), hit


def cached(mc, batch: int, window: int, eval_streams: int, device: torch.device, precision: str,
           cache: ProbeCache) -> dict | None:
    """The cached figures of a shape at ``mc``'s vocabulary, or None; never measures."""
    figures = cache.get(machine_key(device, precision), shape_key(mc, batch, window, eval_streams))
    return None if figures is None else _scaled(mc, timed_config(mc), figures)


def _scaled(mc, timed, figures: dict) -> dict:
    scale = token_macs(mc) / token_macs(timed)  # <= 1: the run's vocabulary is at most the bucket
    return {**figures, "step_s": figures["step_s"] * scale, "tok_s": figures["tok_s"] / scale,
            "eval_tok_s": figures["eval_tok_s"] / scale, "vocab_scale": round(scale, 4)}
