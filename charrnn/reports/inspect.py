"""What is inside one checkpoint: model, tokenizer, a per-layer parameter table with the closed-form
count beside the real one, and how it was trained.

``inspect_checkpoint(path)`` returns an ``Inspection``: a plain JSON-ready dict (what
``charrnn inspect --json`` prints) whose ``str()`` is the human-readable report. torch is imported
only when a checkpoint is loaded. The table of runs is reports/runs.py.
"""

from __future__ import annotations

import os
import textwrap

from charrnn.model.sizes import attention_parameters, layer_formula, rnn_layer_count
from charrnn.reports import Shown
from charrnn.system import rundir
from charrnn.system.progress import human_duration

def bias_note(cell: str) -> str:
    if cell not in ("lstm", "gru", "rnn"):
        return f"a {cell} layer keeps one bias per gate (docs/cells.md has its equations and formula)"
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
    for i in range(rnn.num_layers):
        m = e if i == 0 else h
        if hasattr(rnn, "layers"):  # a CellStack (model/cells)
            actual = sum(p.numel() for p in rnn.layers[i].parameters())
        else:
            actual = sum(getattr(rnn, f"{w}_l{i}").numel() for w in ("weight_ih", "weight_hh", "bias_ih", "bias_hh"))
        formula, numbers = layer_formula(cfg.cell, m, h)
        rows.append({"part": f"{cfg.cell} layer {i + 1} (m={m}, h={h})", "formula": formula,
                     "numbers": numbers, "closed_form": rnn_layer_count(cfg.cell, m, h), "count": actual})
    if model.attn is not None:
        rows.append({"part": f"attention (M={cfg.attention}, h={h})", "formula": "h² + 8h",
                     "numbers": f"{h}² + 8·{h}", "closed_form": attention_parameters(h),
                     "count": sum(p.numel() for p in model.attn.parameters())})
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
        "best_val_whole_split": best.get("scope") == "all", "best_val_estimate": best.get("scope") == "estimate",
        "best_val_tokens": best.get("tokens"),
        "last_val_bpc": last.get("bpc"), "last_val_tokens": last.get("tokens"), "skipped": ts.get("skipped"),
        "corpus": run.get("corpus"), "init_from": run.get("init_from"),
    }


class Inspection(Shown, dict):
    """The dict of ``inspect_checkpoint``; printed (or shown in a notebook) it is the report."""

    def render(self) -> str:
        return format_report(self)


def inspect_checkpoint(path: str) -> Inspection:
    """Everything ``charrnn inspect`` shows, as a JSON-ready dict."""
    from charrnn.model.checkpoint import load_checkpoint, model_from_checkpoint

    ckpt = load_checkpoint(path)
    model, tok = model_from_checkpoint(ckpt, path)
    cfg = model.cfg
    rows = parameter_table(model)
    total = sum(r["count"] for r in rows)
    return Inspection({
        "checkpoint": path, "bytes": os.path.getsize(path),
        "model": {"cell": cfg.cell, "layers": cfg.layers, "hidden": cfg.hidden, "embedding": cfg.emb,
                  "vocab_size": cfg.vocab_size, "head": cfg.head, "cutoffs": list(cfg.cutoffs),
                  "tie_weights": cfg.tie_weights, "dropout": cfg.dropout, "locked_dropout": cfg.locked_dropout,
                  "weight_drop": cfg.weight_drop, "embed_dropout": cfg.embed_dropout, "attention": cfg.attention},
        "tokenizer": tokenizer_summary(tok),
        "parameters": {"rows": rows, "total": total, "num_parameters": model.num_parameters(),
                       "note": bias_note(cfg.cell)},
        "training": training_summary(ckpt, os.path.dirname(path) or "."),
    })


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
           f"{' tied to the embedding' if m['tie_weights'] else ''}, dropout {m['dropout']:g}{regularisers(m)}"
           f"{', attention over the last ' + str(m['attention']) + ' states' if m.get('attention') else ''}",
           f"tokenizer   {t['kind']}, {t['vocab_size']:,} tokens: {t['preview']}", "", "parameters"]
    w = max(len(r["part"]) for r in p["rows"]) + 2
    wf = max(len(r["formula"]) for r in p["rows"]) + 2
    wn = max(len(r["numbers"]) for r in p["rows"]) + 2
    for r in p["rows"]:
        flag = "" if r["count"] == r["closed_form"] else f"  (closed form gives {r['closed_form']:,}!)"
        out.append(f"  {r['part']:<{w}}{r['formula']:<{wf}}{r['numbers']:<{wn}}{r['count']:>12,}{flag}")
    same = "= model.num_parameters" if p["total"] == p["num_parameters"] else f"!= {p['num_parameters']:,}"
    out.append(f"  {'total':<{w + wf + wn}}{p['total']:>12,}  {same}")
    out += textwrap.wrap(f"note: {p['note']}.", 100, initial_indent="  ", subsequent_indent="        ")
    out += ["", "training"]
    if tr["steps"] is None:
        out.append("  (this checkpoint records no training state)")
        return "\n".join(out)
    epoch = f" (in epoch {tr['epoch'] + 1})" if isinstance(tr["epoch"], int) else ""
    tokens = f", {tr['tokens']:,} tokens" if tr["tokens"] is not None else ""
    out.append(f"  steps       {tr['steps']:,}{epoch}{tokens}")
    out.append(f"  wall time   {human_duration(tr['elapsed'])} (training and evaluation)")
    unresolved = "" if tr["device_recorded"] else " (as asked for: this checkpoint does not record what they resolved to)"
    out.append(f"  device      {tr['device'] or '-'}, {tr['precision'] or '-'}{unresolved}")
    if tr["best_val_bpc"] is not None:
        scope = " (whole split)" if tr.get("best_val_whole_split") else (
            f" (est. on {tr['best_val_tokens']:,} tokens: --max-time left no time for the whole split)"
            if tr.get("best_val_estimate") else "")
        out.append(f"  best val    {tr['best_val_bpc']:.4f} bits/char (loss {tr['best_val_loss']:.4f}) "
                   f"at step {tr['best_step']:,}{scope}")
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
