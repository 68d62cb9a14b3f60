"""The best model a budget can buy. With --max-time, the settings the user did not give (layers,
hidden size, batch, window, evaluation interval) are chosen for this machine and this budget:

  1. candidates: a short list of shapes for the device (CANDIDATES) with every given setting put in;
     shapes that do not fit the corpus or the device's memory are dropped;
  2. the probe (probe.py) measures what a step and an evaluation cost here (cached per machine);
  3. the budget buys each shape S = (budget - evaluations) / (seconds per step) optimizer steps, a
     step being a window of the layout the run will use (layout.py: with --records, the packed record
     windows, timed at their own shapes), and S / (windows per epoch) passes over the text;
  4. the compute model predicts each shape's loss after S steps; the lowest prediction wins;
  5. the passes the plan implies may set the regularisation (generalise.py: dropout and weight drop for
     a small corpus read many times; off, as epochs alone did not predict overfitting); instead, under
     --max-time dropout rises when the run's own curves show it memorising (--adaptive-dropout,
     adapt.py), and the run stops early when validation stops improving (--patience, validation.py);
  6. the plan's steps set the peak learning rate when --lr is not given (peak_lr.py: higher for a
     short plan).

The compute model, fitted by benchmarks/calibrate_budget.py (table and constants in docs/BENCHMARKS.md):

    L(N, S, D) = E + A / N^alpha + B / S^beta + C / D^gamma

N: parameters without the embedding (millions); S: optimizer steps; D = S x batch x window, the
tokens trained on (millions); in the prediction, steps beyond EPOCH_CAP passes over the training
text are not counted (repeats teach little and start to overfit), but the run makes them all and
the plan announces them (issue #24: announcing the capped count was 3-5x off on small corpora).
Its losses are tinyshakespeare nats/char: the ``budget:`` line states one only for tinyshakespeare
with the char tokenizer and only below uniform (ln V; the power law knows nothing of the vocabulary
and, for few steps, runs past it); on other text only the order of the predictions is used, and
the line says so. Probing goes from the cheapest shape up and stops after two in a row predict
worse than the best (once the fixed defaults were seen) or after PROBE_CAP.
Without --max-time (or with --no-budget) the fixed defaults stay, except the batch: larger on a
GPU (DEVICE_BATCH), and halved until the run fits in memory when --batch-size is not given.
"""

from __future__ import annotations

import math
import os
import time
from dataclasses import replace

from charrnn.data.batching import check_fits, eval_stream_count
from charrnn.errors import CharrnnError
from charrnn.model import sizes
from charrnn.model.network import ModelConfig
from charrnn.settings import TRAIN, by_name, check_combination
from charrnn.system import clock
from charrnn.training import adapt, memory, peak_lr
from charrnn.training import probe
from charrnn.training.generalise import regularisers
from charrnn.training.layout import Layout

COMPUTE_MODEL = {"E": 0.027705, "A": 0.43062, "alpha": 0.2, "B": 12.524, "beta": 0.575, "C": 1.0039,
                 "gamma": 0.1}  # benchmarks/calibrate_budget.py, 2026-11-23 (docs/BENCHMARKS.md)
CALIBRATED_ON = "tinyshakespeare"  # the corpus COMPUTE_MODEL's losses are about
EPOCH_CAP = 5          # passes over the training text beyond this teach little (repeats); not counted
EVAL_SHARE = 0.05      # intermediate evaluations may take this share of the budget
PROBE_CAP = (1.0, 30.0, 0.1)  # the probe stops starting shapes after max(1 s, min(30 s, 10% of the budget)):
                              # its time is the run's (--max-time counts from the start, system/clock.py)
MAX_EVALS = 10
MAX_EVALS_EPOCHS = 20  # a plan of more than EPOCHS_FINE epochs: finer evaluations (best.pt, the early stop)
EPOCHS_FINE = 2.0
SHAPE = ("layers", "hidden", "batch_size", "seq_len")
CHOSEN = SHAPE + ("eval_every",)
CANDIDATES = {  # (layers, hidden, batch, window), smallest first
    "cpu": [(2, 128, 16, 64), (2, 192, 16, 64), (2, 256, 16, 64), (2, 256, 32, 64), (2, 384, 32, 64),
            (2, 512, 32, 128), (2, 768, 32, 128), (2, 1024, 32, 128)],
    "cuda": [(2, 512, 128, 128), (2, 768, 128, 128), (2, 1024, 128, 128), (3, 1024, 128, 128),
             (2, 1536, 128, 128), (2, 2048, 128, 128), (3, 2048, 128, 128)],
    "mps": [(2, 256, 32, 64), (2, 512, 64, 128), (2, 768, 64, 128), (2, 1024, 64, 128), (2, 1536, 64, 128)],
}
DEVICE_BATCH = {"cuda": 128, "mps": 64}  # --batch-size when not given, without a budget too


def predict_loss(n_params: float, steps: float, tokens_per_step: float, k: dict = COMPUTE_MODEL) -> float:
    """The compute model (module docstring): predicted tinyshakespeare nats/char."""
    steps = max(steps, 1.0)
    return (k["E"] + k["A"] * (n_params / 1e6) ** -k["alpha"] + k["B"] * steps ** -k["beta"]
            + k["C"] * (steps * tokens_per_step / 1e6) ** -k["gamma"])


def plan_time(budget_s: float, step_s: float, eval_s: float, eval_every: int | None = None,
              step_cap: float = math.inf, max_evals: int = MAX_EVALS) -> tuple[int, int, int]:
    """(steps, eval_every, intermediate evaluations) a budget buys; evaluations count against it
    (the final one comes after). Without a given interval, evaluations take <= EVAL_SHARE of it.
    ``step_cap``: --max-steps / --max-epochs, the limits that really end the run."""
    if eval_every is not None:
        steps = min(step_cap, budget_s / (step_s + eval_s / eval_every))
        return int(steps), eval_every, int(steps // eval_every)
    n_evals = max(0, min(max_evals, int(EVAL_SHARE * budget_s / max(eval_s, 1e-9))))
    steps = min(step_cap, (budget_s - n_evals * eval_s) / step_s)
    default = by_name(TRAIN)["eval_every"].default
    every = _round_up(steps / (n_evals + 1), 50) if n_evals else _round_up(2 * steps + 1, 50)
    every = max(default, every)
    return int(steps), every, int(steps // every)


def plan_option(budget_s: float, opt: dict, fig: dict, eval_every: int | None = None) -> tuple[int, int, int]:
    """plan_time for one option: a plan of more than EPOCHS_FINE passes over the text evaluates up to
    MAX_EVALS_EPOCHS times (finer for best.pt and the early stop; a small text's evaluations are cheap)."""
    plan = plan_time(budget_s, fig["step_s"], fig["eval_s"], eval_every, opt["step_cap"])
    if plan[0] / opt.get("per_epoch", math.inf) > EPOCHS_FINE:
        plan = plan_time(budget_s, fig["step_s"], fig["eval_s"], eval_every, opt["step_cap"], MAX_EVALS_EPOCHS)
    return plan


def _round_up(x: float, to: int) -> int:
    return max(to, int(math.ceil(x / to) * to))


def choose(options: list[dict], speed, budget_s: float, eval_every: int | None = None, reference=None,
           k: dict | None = None, deadline: float | None = None):
    """The option with the lowest predicted loss. ``speed(option)`` gives {"step_s", "eval_s"}
    (the probe; a table in tests). Options are probed in the given order (cheapest first) and probing
    stops after two in a row predict worse than the best so far, once the reference (the fixed
    defaults, for the comparison in the message) has been seen, or at the deadline (perf_counter
    seconds; a busy machine). Returns (best, evaluated options)."""
    seen, best, worse = [], None, 0
    for opt in options:
        fig = speed(opt)
        steps, every, n_evals = plan_option(budget_s, opt, fig, eval_every)
        counted = min(steps, opt.get("epoch_cap", math.inf))  # repeats beyond EPOCH_CAP passes teach little
        pred = predict_loss(opt["params"], counted, opt["batch_size"] * opt["seq_len"], k or COMPUTE_MODEL)
        row = {**opt, **fig, "steps": steps, "eval_every": every, "evals": n_evals, "predicted_loss": pred}
        seen.append(row)
        if best is None or pred < best["predicted_loss"]:
            best, worse = row, 0
        else:
            worse += 1
        if worse >= 2 and (reference is None or any(_same(r, reference) for r in seen)):
            break
        if deadline is not None and time.perf_counter() > deadline:
            break
    return best, seen


def calibrated_corpus(cfg) -> bool:
    """Whether the compute model's losses are this run's: tinyshakespeare (a file or the named corpus of
    that name) read with the char tokenizer, so nats per token are nats per character."""
    path = os.path.normpath(str(cfg.corpus))
    names = {os.path.splitext(os.path.basename(path))[0].lower(), os.path.basename(os.path.dirname(path)).lower()}
    return cfg.tokenizer == "char" and CALIBRATED_ON in names


def _same(a: dict, b: dict) -> bool:
    return all(a[k] == b[k] for k in SHAPE)


def _shape_text(o: dict) -> str:
    return f"{o['layers']}x{o['hidden']}, batch {o['batch_size']} x {o['seq_len']}"


class Planner:
    """Trainer's ``prepare`` step, called once the corpus is known and before any model exists:
    chooses the settings not given (budget or device batch), then refuses a run that cannot fit."""

    def __init__(self, cfg, given: set, log, cache_dir: str | None = None, choose_settings: bool = True):
        self.cfg, self.given, self.log, self.cache_dir = cfg, set(given), log, cache_dir
        if cfg.tie_weights:
            self.given.add("hidden")  # tied weights need --emb equal to --hidden
        self.choose_settings, self.done, self.record = choose_settings, False, None
        self.eval_tok_s = None  # the probe's evaluation speed for the chosen shape (the trainer's EndOfRun)
        self.reason = ""  # why the plan added regularisation (generalise.py), for the budget line

    def __call__(self, corpus, device, precision) -> None:
        if self.done:
            return
        self.done = True
        self.device, self.precision, self.corpus = device, precision, corpus
        self.available = memory.available_bytes(device)
        cfg = self.cfg
        free = [k for k in CHOSEN if k not in self.given] + (["lr"] if self._lr_free() else [])
        if self.choose_settings and cfg.budget and cfg.max_time and free:
            self._choose_for_budget()
        elif self.choose_settings and "batch_size" not in self.given and device.type in DEVICE_BATCH:
            cfg.batch_size = DEVICE_BATCH[device.type]
            self.record = {"rule": f"default batch on {device.type}", "chosen": {"batch_size": cfg.batch_size}}
        if self.choose_settings and "batch_size" not in self.given:
            self._halve_batch_to_fit()
        check_combination(cfg)
        memory.check(self.estimate(cfg), self.available, cfg, device, self.log)

    # -- memory
    def estimate(self, cfg) -> dict:
        mc = ModelConfig.from_settings(cfg, self.corpus.tokenizer.vocab_size)
        on_device = 0  # training reads one window at a time from the memory-mapped corpus (batching.py)
        return memory.estimate(vocab=mc.vocab_size, cell=mc.cell, layers=mc.layers, hidden=mc.hidden, emb=mc.emb,
                               batch=cfg.batch_size, window=cfg.seq_len + (cfg.seq_len // 5 if cfg.variable_len else 0),
                               head=mc.head, cutoffs=mc.cutoffs, ema=cfg.ema > 0, attention=mc.attention,
                               tied=mc.tie_weights, precision=self.precision, val_tokens=len(self.corpus.val.ids),
                               device_data_tokens=on_device, device=self.device.type)

    def _halve_batch_to_fit(self) -> None:
        cfg, start = self.cfg, self.cfg.batch_size
        if memory.fits(self.estimate(cfg), self.available) or not memory.fits(self.estimate(
                replace(cfg, batch_size=1)), self.available):
            return  # fits, or the batch is not the problem: the memory check names what is
        while cfg.batch_size > 1 and not memory.fits(self.estimate(cfg), self.available):
            cfg.batch_size //= 2
        if cfg.batch_size != start:
            self.log(f"batch {cfg.batch_size} x {cfg.seq_len}: batch {start} would not fit in the "
                     f"{memory.human(self.available)} available (give --batch-size to choose)")
            self.record = {**(self.record or {}), "memory_halved_batch_from": start}

    # -- the budget
    def _options(self) -> tuple[list[dict], dict]:
        cfg, n_train = self.cfg, len(self.corpus.train.ids)
        self.layout = layout = Layout(self.corpus, cfg.records)
        defaults = {k: by_name(TRAIN)[k].default for k in SHAPE}
        ref = {k: (getattr(cfg, k) if k in self.given else defaults[k]) for k in SHAPE}
        shapes = [dict(zip(SHAPE, c)) for c in CANDIDATES.get(self.device.type, CANDIDATES["cpu"])]
        shapes = [{k: (getattr(cfg, k) if k in self.given else v) for k, v in s.items()} for s in shapes] + [ref]
        options, keys = [], set()
        for s in shapes:
            key = tuple(s[k] for k in SHAPE)
            if key in keys:
                continue
            keys.add(key)
            trial = replace(cfg, **s)
            try:
                if not cfg.records:
                    check_fits(n_train, s["batch_size"], s["seq_len"])
                check_combination(trial)
            except CharrnnError:
                continue
            if not memory.fits(self.estimate(trial), self.available):
                continue
            mc = ModelConfig.from_settings(trial, self.corpus.tokenizer.vocab_size)
            per_epoch = layout.windows_per_epoch(s["batch_size"], s["seq_len"])
            cap = min(cfg.max_steps or math.inf, math.ceil(cfg.max_epochs * per_epoch) if cfg.max_epochs else math.inf)
            params = sizes.n_parameters(mc.vocab_size, mc.cell, mc.layers, mc.hidden, mc.emb, mc.head, mc.cutoffs,
                                         mc.tie_weights, mc.attention) - mc.vocab_size * mc.emb
            options.append({**s, "params": params, "step_cap": cap, "epoch_cap": EPOCH_CAP * per_epoch,
                            "per_epoch": per_epoch, "_mc": mc})
        options.sort(key=lambda o: o["params"] * o["batch_size"] * o["seq_len"])
        return options, ref

    def _choose_for_budget(self) -> None:
        cfg, t0 = self.cfg, time.perf_counter()
        options, ref = self._options()
        if not options:
            return  # nothing fits: the memory check below names the problem
        if len(options) == 1 and "eval_every" in self.given and not self._lr_free():
            for k in SHAPE:  # one shape left and nothing else to choose: no probe needed
                setattr(cfg, k, options[0][k])
            return
        cache = probe.ProbeCache(self.cache_dir)
        val = len(self.corpus.val.ids)
        streams = eval_stream_count(val - 1, max_streams=memory.EVAL_STREAMS)
        hits = []

        def speed(o):
            figs = []  # a step of each shape of the layout (one for plain text; records: a few windows)
            for rows, width in self.layout.shapes(o["batch_size"], o["seq_len"]):
                fig, hit = probe.probe(o["_mc"], rows, width, streams, self.device, self.precision,
                                       cache, deadline=t0 + cap)
                hits.append(hit)
                figs.append(fig)
            step_s = sum(f["step_s"] for f in figs) / len(figs)
            return {"step_s": step_s, "tok_s": o["batch_size"] * o["seq_len"] / step_s,
                    "eval_s": val / figs[0]["eval_tok_s"]}

        given_every = cfg.eval_every if "eval_every" in self.given else None
        lo, hi, share = PROBE_CAP
        cap = max(lo, min(hi, share * cfg.max_time))
        left = max(cfg.max_time - clock.since_start() - cap, share * cfg.max_time)  # for training and evaluations
        try:
            best, seen = choose(options, speed, left, given_every, ref, deadline=t0 + cap)
        finally:
            cache.save()
        left = max(cfg.max_time - clock.since_start(), share * cfg.max_time)  # after the probe: what is left
        steps, every, n_evals = plan_option(left, best, best, given_every)
        best = {**best, "steps": steps, "eval_every": every, "evals": n_evals, "epochs": steps / best["per_epoch"]}
        self.eval_tok_s = val / best["eval_s"] if best["eval_s"] > 0 else None
        for k in SHAPE:
            setattr(cfg, k, best[k])
        if given_every is None:
            cfg.eval_every = best["eval_every"]
        chosen_reg, self.reason = self._regularise(best["epochs"])
        if self._lr_free():  # a short plan: a higher peak (peak_lr.py)
            cfg.lr = chosen_reg["lr"] = peak_lr.peak_lr(steps, cfg.hidden, by_name(TRAIN)["lr"].default, cfg.cell)
        took = time.perf_counter() - t0
        reference = next((r for r in seen if _same(r, ref)), None)
        self.log(self._line(best, reference, took, all(hits), left))
        rows = [{k: v for k, v in (best if _same(r, best) else r).items() if k not in ("_mc", "step_cap", "epoch_cap")}
                for r in seen]  # the chosen shape's row: its plan for the time left after the probe
        self.record = {"rule": "budget", "budget_s": cfg.max_time,
                       "chosen": {k: getattr(cfg, k) for k in CHOSEN + tuple(chosen_reg)},
                       "planned_steps": steps, "planned_epochs": round(best["epochs"], 2),
                       "given": sorted(self.given & set(CHOSEN)), "machine": probe.machine_key(self.device,
                                                                                               self.precision),
                       "probe_s": round(took, 2), "probe_cached": all(hits), "candidates": rows,
                       "compute_model": COMPUTE_MODEL}

    def _lr_free(self) -> bool:
        """Whether the plan sets the peak learning rate: not given, and a model peak_lr.py was measured on."""
        return "lr" not in self.given and self.cfg.cell in peak_lr.CELLS and not self.cfg.attention

    def _regularise(self, epochs: float) -> tuple[dict, str]:
        """Set the regularisers the plan's epochs call for (generalise.py), but none the run's other
        settings refuse (e.g. a cell without weight drop): (what was set, the reason for the line)."""
        cfg, given = self.cfg, set(self.given)
        default = by_name(TRAIN)["dropout"].default
        while True:
            chosen, reason = regularisers(epochs, given, default)
            try:
                check_combination(replace(cfg, **chosen))
            except CharrnnError:
                if not chosen:
                    return {}, ""  # the settings given are the problem: the check after the plan names it
                given.add(sorted(chosen)[-1])  # weight_drop first, then dropout
                continue
            for k, v in chosen.items():
                setattr(cfg, k, v)
            return chosen, reason

    def _line(self, best: dict, ref: dict | None, took: float, cached: bool, left: float) -> str:
        cfg = self.cfg
        how = "cached probe" if cached else f"probe {took:.1f}s"
        reg = f"; {self.reason}" if self.reason else ""
        if cfg.adaptive_dropout and best["epochs"] >= adapt.ANNOUNCE_EPOCHS:  # the run's own curves decide
            reg += "; dropout rises if the run memorises its text (--adaptive-dropout)"
        lr = f", lr {cfg.lr:g}" if self._lr_free() else ""
        return (f"budget: {cfg.cell} {_shape_text(best)}{lr}, eval every {cfg.eval_every:,} steps ({how}: "
                f"{best['tok_s'] / 1000:.1f}k tok/s, ~{best['steps']:,} steps, ~{best['epochs']:.1f} epochs, in the "
                f"{left:.0f}s left of {cfg.max_time:g}s{reg}; {self._prediction(best, ref)})")

    def _prediction(self, best: dict, ref: dict | None) -> str:
        """The compute model's figure where it means something (module docstring), else what it was used for."""
        if not calibrated_corpus(self.cfg):
            return "the compute model's pick, fitted on tinyshakespeare: no loss figure for this corpus"
        v = self.corpus.tokenizer.vocab_size
        uniform = math.log(v)

        def figure(row: dict) -> str:
            if row["predicted_loss"] < uniform:
                return f"{row['predicted_loss']:.2f} nats/char"
            return f"no better than uniform (ln {v} = {uniform:.2f} nats/char)"

        vs = f" vs {figure(ref)} for {_shape_text(ref)}" if ref is not None and not _same(ref, best) else ""
        return f"predicted {figure(best)}{vs}"
