"""The table of runs (``charrnn runs``, ``charrnn.runs()``): one row per run directory, read from its
config.json and metrics.jsonl (a checkpoint only when those are missing), so listing many runs stays
fast. No torch unless a run has only a checkpoint to read.
"""

from __future__ import annotations

import datetime
import os

from charrnn.errors import CharrnnError
from charrnn.reports import Shown
from charrnn.system import rundir
from charrnn.system.progress import human_duration


class RunTable(Shown, list):
    """The rows of ``list_runs`` (dicts); printed (or shown in a notebook) it is the table."""

    def render(self) -> str:
        return format_runs(self)


def run_summary(run_dir: str) -> dict:
    """One row of ``charrnn runs``: from config.json and metrics.jsonl, a checkpoint only if they are missing."""
    files = {n: os.path.join(run_dir, n) for n in (rundir.CONFIG, rundir.METRICS, rundir.LAST, rundir.BEST)}
    mcfg, ts = {}, {}
    cfg = rundir.read_config(run_dir) or {}
    metrics = rundir.read_metrics(run_dir)
    if not isinstance(cfg, dict) or "cell" not in cfg or not metrics:  # fall back to a checkpoint
        from charrnn.model.checkpoint import load_checkpoint

        ck = files[rundir.LAST] if os.path.isfile(files[rundir.LAST]) else files[rundir.BEST]
        try:
            ckpt = load_checkpoint(ck)
            cfg = cfg if isinstance(cfg, dict) and "cell" in cfg else (ckpt.get("run_config") or {})
            mcfg, ts = ckpt.get("model_config") or {}, ckpt.get("train_state") or {}
        except CharrnnError:
            cfg = cfg if isinstance(cfg, dict) else {}
    best = rundir.best_from_metrics(run_dir, metrics)
    steps = max((r["step"] for r in metrics), default=ts.get("step"))
    elapsed = max((r.get("elapsed", 0) for r in metrics), default=ts.get("elapsed"))
    if best is None and (ts.get("best") or {}).get("bpc") is not None:
        best = ts["best"]
    cell, layers, hidden = (cfg.get("cell") or mcfg.get("cell"), cfg.get("layers") or mcfg.get("layers"),
                            cfg.get("hidden") or mcfg.get("hidden"))
    tok = cfg.get("tokenizer") or "?"
    if tok in ("bpe", "unigram") and cfg.get("vocab_size"):
        tok = f"{tok} {cfg['vocab_size']}"
    updated = max(os.path.getmtime(p) for p in files.values() if os.path.exists(p))
    return {
        "name": os.path.basename(os.path.normpath(run_dir)), "path": run_dir,
        "corpus": os.path.basename(str(cfg.get("corpus") or "?")), "tokenizer": tok,
        "model": f"{cell} {layers}x{hidden}" if cell else "?",
        "steps": steps, "elapsed": elapsed,
        "best_val_bpc": best["bpc"] if best else None, "best_step": best["step"] if best else None,
        "best_val_estimate": bool(best) and best.get("scope") == "estimate",
        "updated": datetime.datetime.fromtimestamp(updated).isoformat(timespec="seconds"), "updated_ts": updated,
        "training": rundir.lock_alive(run_dir),
    }


def list_runs(checkpoint_dir: str) -> RunTable:
    """Runs (subdirectories with best.pt or last.pt) under checkpoint_dir, most recently updated first."""
    if not os.path.isdir(checkpoint_dir):
        raise CharrnnError(f"checkpoint directory '{checkpoint_dir}' does not exist; train a model first "
                           "(charrnn train) or pass --checkpoint-dir DIR")
    runs = RunTable()
    for name in sorted(os.listdir(checkpoint_dir)):
        d = os.path.join(checkpoint_dir, name)
        if name.startswith(".") or not os.path.isdir(d):
            continue
        if rundir.has_checkpoint(d):
            runs.append(run_summary(d))
    runs.sort(key=lambda r: r["updated_ts"], reverse=True)
    return runs


def format_runs(runs: list[dict]) -> str:
    head = ("name", "corpus", "tokenizer", "model", "steps", "time", "best val bpc", "updated")
    body = [(r["name"] + (" *" if r["training"] else ""), r["corpus"], r["tokenizer"], r["model"],
             f"{r['steps']:,}" if r["steps"] is not None else "-", human_duration(r["elapsed"]),
             (f"{r['best_val_bpc']:.4f}" + ("~" if r.get("best_val_estimate") else "")) if r["best_val_bpc"] is not None
             else "-",
             r["updated"].replace("T", " ")[:16]) for r in runs]
    widths = [max(len(row[i]) for row in [head, *body]) for i in range(len(head))]
    right = {4, 5, 6}
    lines = ["  ".join(c.rjust(w) if i in right else c.ljust(w) for i, (c, w) in enumerate(zip(row, widths))).rstrip()
             for row in [head, *body]]
    if any(r["training"] for r in runs):
        lines.append("* still training")
    if any(r.get("best_val_estimate") for r in runs):
        lines.append("~ an estimate on part of the validation split (--max-time left no time for all of it; "
                     "charrnn eval scores it whole)")
    return "\n".join(lines)


def format_checkpoints(files: list[dict]) -> str:
    """The checkpoint files of one run (training.keep.list_checkpoints), as ``charrnn runs RUN`` shows them."""
    head = ("checkpoint", "step", "val loss", "size", "written")
    body = [(f["path"], f"{f['step']:,}" if f["step"] is not None else "-",
             f"{f['val_loss']:.4f}" if f["val_loss"] is not None else "-", f"{f['bytes'] / 1e6:.1f} MB",
             datetime.datetime.fromtimestamp(f["mtime"]).isoformat(sep=" ", timespec="minutes")) for f in files]
    widths = [max(len(row[i]) for row in [head, *body]) for i in range(len(head))]
    return "\n".join("  ".join(c.rjust(w) if i in (1, 2, 3) else c.ljust(w) for i, (c, w) in
                               enumerate(zip(row, widths))).rstrip() for row in [head, *body])
