"""Looking at trained models and runs: what is inside a checkpoint, and a table of the runs.

``inspect_checkpoint(path)`` returns a plain dict (model, tokenizer, a per-layer parameter table
with the closed-form count beside the real one, training summary); ``list_runs(dir)`` reads each
run's config.json and metrics.jsonl (a checkpoint only when those are missing), so listing many
runs stays fast. torch is imported only by the functions that load checkpoints.
"""

from __future__ import annotations

import datetime
import math
import os
import textwrap

from charrnn.system import rundir
from charrnn.errors import CharrnnError
from charrnn.model.sizes import GATES, rnn_layer_count

def bias_note(cell: str) -> str:
    g, article = {"lstm": ("4", "an"), "gru": ("3", "a"), "rnn": ("", "an")}[cell]
    return (f"PyTorch keeps two bias vectors per layer, b_ih and b_hh, so {article} {cell.upper()} layer with "
            f"input m and hidden h has {g}(mh + h² + 2h) parameters where the textbook formula {g}(mh + h² + h) "
            "has one bias")


def parameter_table(model) -> list[dict]:
    """Rows {part, formula, numbers, count}: embedding, each recurrent layer, the output head.

    ``count`` is the sum of the real tensors' sizes; ``formula``/``numbers`` give the closed form,
    and ``closed_form`` its value (equal to count unless the model is not what its config says).
    """
    cfg, rnn = model.cfg, model.rnn
    V, e, h = cfg.vocab_size, cfg.emb, cfg.hidden
    rows = [{"part": "embedding", "formula": "V·e", "numbers": f"{V}·{e}", "closed_form": V * e,
             "count": model.embed.weight.numel()}]
    G = GATES[cfg.cell]
    for i in range(rnn.num_layers):
        m = e if i == 0 else h
        actual = sum(getattr(rnn, f"{w}_l{i}").numel() for w in ("weight_ih", "weight_hh", "bias_ih", "bias_hh"))
        g = f"{G}" if G > 1 else ""
        rows.append({"part": f"{cfg.cell} layer {i + 1} (m={m}, h={h})", "formula": f"{g}(mh + h² + 2h)",
                     "numbers": f"{g}({m}·{h} + {h}² + 2·{h})", "closed_form": rnn_layer_count(cfg.cell, m, h),
                     "count": actual})
    rows.extend(model.head.parameter_rows())
    return rows


def escape_char(c: str) -> str:
    """A character as it should appear in a one-line preview: printable as is, the rest escaped."""
    named = {"\n": "\\n", "\t": "\\t", "\r": "\\r", " ": "␣", "\\": "\\\\"}
    if c in named:
        return named[c]
    if c.isprintable():
        return c
    return f"\\x{ord(c):02x}" if ord(c) < 0x100 else f"\\u{ord(c):04x}" if ord(c) < 0x10000 else f"\\U{ord(c):08x}"


def tokenizer_summary(tok, preview: int = 96) -> dict:
    d = {"kind": tok.kind, "vocab_size": tok.vocab_size}
    if tok.kind == "char":
        chars = [chr(int(c)) for c in tok.codepoints]
        d["preview"] = "".join(escape_char(c) for c in chars[:preview]) + (" …" if len(chars) > preview else "")
    elif tok.kind == "byte":
        d["preview"] = "the 256 UTF-8 byte values 0x00-0xff"
    else:
        sp = tok.sp
        pieces = [sp.IdToPiece(i) for i in range(tok.vocab_size)
                  if not (sp.IsByte(i) or sp.IsControl(i) or sp.IsUnknown(i))]
        shown = " ".join("".join(escape_char(c) for c in p.replace("\u2581", " ")) for p in pieces[:preview // 3])
        d["preview"] = f"{shown} …" if len(pieces) > preview // 3 else shown
        d["byte_pieces"] = sum(1 for i in range(tok.vocab_size) if sp.IsByte(i))
    return d


def training_summary(ckpt: dict, run_dir: str | None = None) -> dict:
    """The training part of the report; with the run directory, the best figure is best.pt on the
    whole validation split when the run recorded it (rundir.full_best)."""
    ts, run = ckpt.get("train_state") or {}, ckpt.get("run_config") or {}
    best = (rundir.full_best(run_dir, ts.get("best")) if run_dir else ts.get("best")) or {}
    last = ts.get("last_val") or {}
    return {
        "steps": ts.get("step"), "epoch": ts.get("epoch"), "tokens": ts.get("tokens"),
        "elapsed": ts.get("elapsed"),
        # resolved values when the checkpoint records them; else what the run asked for (maybe "auto")
        "device": ts.get("device", run.get("device")), "precision": ts.get("precision", run.get("precision")),
        "device_recorded": "device" in ts,
        "best_val_bpc": best.get("bpc"), "best_val_loss": best.get("loss"), "best_step": best.get("step"),
        "best_val_whole_split": best.get("scope") == "all", "best_val_tokens": best.get("tokens"),
        "last_val_bpc": last.get("bpc"), "last_val_tokens": last.get("tokens"), "skipped": ts.get("skipped"),
        "corpus": run.get("corpus"), "init_from": run.get("init_from"),
    }


def inspect_checkpoint(path: str) -> dict:
    """Everything ``charrnn inspect`` shows, as a plain JSON-ready dict."""
    from charrnn.model.checkpoint import load_checkpoint, model_from_checkpoint

    ckpt = load_checkpoint(path)
    model, tok = model_from_checkpoint(ckpt, path)
    cfg = model.cfg
    rows = parameter_table(model)
    total = sum(r["count"] for r in rows)
    return {
        "checkpoint": path, "bytes": os.path.getsize(path),
        "model": {"cell": cfg.cell, "layers": cfg.layers, "hidden": cfg.hidden, "embedding": cfg.emb,
                  "vocab_size": cfg.vocab_size, "head": cfg.head, "cutoffs": list(cfg.cutoffs),
                  "tie_weights": cfg.tie_weights, "dropout": cfg.dropout, "locked_dropout": cfg.locked_dropout,
                  "weight_drop": cfg.weight_drop, "embed_dropout": cfg.embed_dropout},
        "tokenizer": tokenizer_summary(tok),
        "parameters": {"rows": rows, "total": total, "num_parameters": model.num_parameters(),
                       "note": bias_note(cfg.cell)},
        "training": training_summary(ckpt, os.path.dirname(path) or "."),
    }


def fmt_duration(seconds) -> str:
    if seconds is None or not math.isfinite(seconds):
        return "-"
    s = int(round(seconds))
    if s < 60:
        return f"{s}s"
    if s < 3600:
        return f"{s // 60}m{s % 60:02d}s"
    return f"{s // 3600}h{s % 3600 // 60:02d}m"


def regularisers(m: dict) -> str:
    """The training-time regularisers beyond --dropout, as the report's model line names them."""
    parts = [" (locked)" if m.get("locked_dropout") else ""]
    parts += [f", {name} {m[key]:g}" for key, name in (("weight_drop", "weight drop"),
                                                       ("embed_dropout", "embedding dropout")) if m.get(key)]
    return "".join(parts)


def format_report(info: dict) -> str:
    """The human-readable ``charrnn inspect`` report."""
    m, t, p, tr = info["model"], info["tokenizer"], info["parameters"], info["training"]
    head = "full softmax" if m["head"] == "full" else f"adaptive softmax (clusters at {m['cutoffs']})"
    out = [f"checkpoint  {info['checkpoint']} ({info['bytes'] / 1e6:.1f} MB)",
           f"model       {m['cell']} {m['layers']}x{m['hidden']}, embedding {m['embedding']}, {head} head"
           f"{' tied to the embedding' if m['tie_weights'] else ''}, dropout {m['dropout']:g}{regularisers(m)}",
           f"tokenizer   {t['kind']}, {t['vocab_size']:,} tokens: {t['preview']}", "", "parameters"]
    w = max(len(r["part"]) for r in p["rows"]) + 2
    wf = max(len(r["formula"]) for r in p["rows"]) + 2
    wn = max(len(r["numbers"]) for r in p["rows"]) + 2
    for r in p["rows"]:
        flag = "" if r["count"] == r["closed_form"] else f"  (closed form gives {r['closed_form']:,}!)"
        out.append(f"  {r['part']:<{w}}{r['formula']:<{wf}}{r['numbers']:<{wn}}{r['count']:>12,}{flag}")
    same = "= model.num_parameters()" if p["total"] == p["num_parameters"] else f"!= {p['num_parameters']:,}"
    out.append(f"  {'total':<{w + wf + wn}}{p['total']:>12,}  {same}")
    out += textwrap.wrap(f"note: {p['note']}.", 100, initial_indent="  ", subsequent_indent="        ")
    out += ["", "training"]
    if tr["steps"] is None:
        out.append("  (this checkpoint records no training state)")
        return "\n".join(out)
    epoch = f" (in epoch {tr['epoch'] + 1})" if isinstance(tr["epoch"], int) else ""
    tokens = f", {tr['tokens']:,} tokens" if tr["tokens"] is not None else ""
    out.append(f"  steps       {tr['steps']:,}{epoch}{tokens}")
    out.append(f"  wall time   {fmt_duration(tr['elapsed'])} (training and evaluation)")
    unresolved = "" if tr["device_recorded"] else " (as asked for: this checkpoint does not record what they resolved to)"
    out.append(f"  device      {tr['device'] or '-'}, {tr['precision'] or '-'}{unresolved}")
    if tr["best_val_bpc"] is not None:
        out.append(f"  best val    {tr['best_val_bpc']:.4f} bits/char (loss {tr['best_val_loss']:.4f}) "
                   f"at step {tr['best_step']:,}{' (whole split)' if tr.get('best_val_whole_split') else ''}")
    if tr["last_val_bpc"] is not None:
        part = tr.get("last_val_tokens") or 0
        est = f" (est. on {part:,} tokens)" if tr.get("best_val_whole_split") and part < tr["best_val_tokens"] else ""
        out.append(f"  last val    {tr['last_val_bpc']:.4f} bits/char{est}")
    if tr["skipped"]:
        out.append(f"  skipped     {tr['skipped']} non-finite batches")
    if tr["corpus"]:
        out.append(f"  corpus      {tr['corpus']}")
    if tr["init_from"]:
        out.append(f"  started from {tr['init_from']}")
    return "\n".join(out)


# ----------------------------------------------------------------------------- runs table

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
        "updated": datetime.datetime.fromtimestamp(updated).isoformat(timespec="seconds"), "updated_ts": updated,
        "training": _lock_alive(os.path.join(run_dir, rundir.LOCK)),
    }


def _lock_alive(path: str) -> bool:
    try:
        with open(path) as f:
            pid = int(f.read().strip())
        os.kill(pid, 0)
    except (OSError, ValueError):
        return False
    return True


def list_runs(checkpoint_dir: str) -> list[dict]:
    """Runs (subdirectories with best.pt or last.pt) under checkpoint_dir, most recently updated first."""
    if not os.path.isdir(checkpoint_dir):
        raise CharrnnError(f"checkpoint directory '{checkpoint_dir}' does not exist; train a model first "
                           "(charrnn train) or pass --checkpoint-dir DIR")
    runs = []
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
             f"{r['steps']:,}" if r["steps"] is not None else "-", fmt_duration(r["elapsed"]),
             f"{r['best_val_bpc']:.4f}" if r["best_val_bpc"] is not None else "-",
             r["updated"].replace("T", " ")[:16]) for r in runs]
    widths = [max(len(row[i]) for row in [head, *body]) for i in range(len(head))]
    right = {4, 5, 6}
    lines = ["  ".join(c.rjust(w) if i in right else c.ljust(w) for i, (c, w) in enumerate(zip(row, widths))).rstrip()
             for row in [head, *body]]
    if any(r["training"] for r in runs):
        lines.append("* still training")
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
