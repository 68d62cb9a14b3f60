"""What this machine does per second: a few timed training steps of a candidate shape, with the
run's real vocabulary, output head, device and precision; cached per machine.

A probe builds the candidate model and its AdamW, runs one warm-up step, then TIMED_STEPS timed
steps at windows of min(window, PROBE_WINDOW) tokens and of half that (as many again when their
times disagree by over 2x; the median counts, a step the run will really make, where the fastest
promised a crowded machine steps it never made). A
step costs a + b x window (a: the optimizer, clipping and per-call work; b: the recurrence), so the
two windows give the cost at the real one; a window of PROBE_WINDOW or less is timed as it is.
One forward pass over evaluation-shaped streams (after a warm-up pass) gives the evaluation speed.
Results live in ``<checkpoint dir>/.cache/budget-probe.json``, keyed by the machine (CPU model, threads,
torch version, device, precision) and the shape; delete the file to measure again.
"""

from __future__ import annotations

import json
import os
import platform
import statistics
import time
from dataclasses import asdict

import torch

from charrnn.system.fileio import atomic_write_bytes
from charrnn.model.network import RNNLM
from charrnn.training.step import make_optimizer

PROBE_WINDOW = 64  # steps are timed at min(window, 64) and half that
EVAL_WINDOW = 64
TIMED_STEPS = 2
CACHE_FILE = "budget-probe.json"
CACHE_VERSION = 2  # 2: two-window timing


def cpu_model() -> str:
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine() or "unknown CPU"


def machine_key(device: torch.device, precision: str) -> str:
    name = torch.cuda.get_device_name(device) if device.type == "cuda" else device.type
    return f"{cpu_model()} | {torch.get_num_threads()} threads | torch {torch.__version__} | {name} | {precision}"


def shape_key(mc, batch: int, window: int, eval_streams: int) -> str:
    heads = f"{mc.head}{list(mc.cutoffs) if mc.cutoffs else ''}"
    return (f"{mc.cell} {mc.layers}x{mc.hidden} emb {mc.emb} vocab {mc.vocab_size} {heads}"
            f"{' tied' if mc.tie_weights else ''} | batch {batch} x {window} | eval streams {eval_streams}")


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)
    elif device.type == "mps":
        torch.mps.synchronize()


def _timed(fn, device, repeat: int) -> float:
    """The median of ``repeat`` calls, as many again when they disagree by over 2x (a busy machine):
    the speed a run will see (the fastest call promised a crowded machine steps it never made)."""
    times = []
    for i in range(2 * repeat):
        _sync(device)
        t0 = time.perf_counter()
        fn()
        _sync(device)
        times.append(time.perf_counter() - t0)
        if i + 1 >= repeat and max(times) <= 2 * min(times):
            break
    return statistics.median(times)


def measure(mc, batch: int, window: int, eval_streams: int, device: torch.device, precision: str) -> dict:
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
    t_hi = _timed(lambda: step(hi), device, TIMED_STEPS)
    step_s = t_hi
    if window > hi:  # a step costs a + b * window: two windows give the line
        t_lo = _timed(lambda: step(lo), device, TIMED_STEPS)
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
          cache: ProbeCache) -> tuple[dict, bool]:
    """The figures of one shape on this machine, and whether they came from the cache."""
    machine, shape = machine_key(device, precision), shape_key(mc, batch, window, eval_streams)
    hit = cache.get(machine, shape)
    if hit is not None:
        return hit, True
    figures = {**measure(mc, batch, window, eval_streams, device, precision), "model": asdict(mc)}
    figures["model"]["cutoffs"] = list(mc.cutoffs)
    cache.put(machine, shape, figures)
    return figures, False
