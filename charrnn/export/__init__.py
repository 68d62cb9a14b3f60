"""Take a model anywhere: ONNX (onnx.py), one self-contained web page (html.py + page.html) and a
weights-only checkpoint (weights.py). ``export`` checks the request, builds the file in memory and
writes it atomically: on any refusal nothing is written."""

from __future__ import annotations

import os

from charrnn.errors import CharrnnError

FORMATS = ("onnx", "html", "pt")
GRAPH_CELLS = ("lstm", "gru", "rnn")  # the cells ONNX (and the page's JavaScript) implement
QUANTIZE = ("fp16", "int8")
FIX = "choose another output path"


def check_request(path: str | None, fmt: str, force: bool = False, quantize: str | None = None,
                  half: bool = False) -> None:
    """Every refusal that needs no model: an unknown format or option, an existing output path
    (path None: the options alone)."""
    if fmt not in FORMATS:
        raise CharrnnError(f"unknown export format {fmt!r}; choose one of {', '.join(FORMATS)}")
    if quantize is not None and quantize not in QUANTIZE:
        raise CharrnnError(f"unknown --quantize {quantize!r}; choose fp16 or int8")
    if quantize is not None and fmt != "html":
        raise CharrnnError("--quantize applies to --format html (the web page); for a smaller .pt use --half")
    if half and fmt != "pt":
        raise CharrnnError("--half applies to --format pt; for a smaller web page use --quantize fp16|int8")
    if path is None:
        return
    if os.path.isdir(path):
        raise CharrnnError(f"'{path}' is a directory; give a file name to export to")
    if os.path.lexists(path) and not force:
        raise CharrnnError(f"'{path}' already exists; pass --force to overwrite it or choose another path")
    parent = os.path.dirname(os.path.abspath(path))
    if not os.path.isdir(parent):
        raise CharrnnError(f"directory '{parent}' does not exist; create it or choose another path")


def export(module, tokenizer, info: dict, path: str, fmt: str, *, force: bool = False,
           quantize: str | None = None, half: bool = False, source: str = "") -> dict:
    """Write ``module`` (an RNNLM in eval mode) as ``fmt`` to ``path``; returns {"path", "format", "bytes"}.

    info: the checkpoint's dict without its weights (model config, tokenizer state, run config, train
    state); source: where the model came from (its name on the web page and in the ONNX metadata)."""
    from charrnn.system.fileio import atomic_write_bytes

    path = os.fspath(path)
    check_request(path, fmt, force, quantize, half)
    if fmt != "pt" and module.cfg.cell not in GRAPH_CELLS:
        raise CharrnnError(f"--format {fmt} supports the lstm, gru and rnn cells (ONNX and the page have no "
                           f"{module.cfg.cell}); this model can be exported with --format pt")
    if fmt != "pt" and getattr(module.cfg, "attention", 0):
        raise CharrnnError(f"--format {fmt} does not export --attention models (the graph and the page have no "
                           "attention step); use --format pt, or sample with charrnn")
    if fmt == "onnx":
        from charrnn.export.onnx import onnx_bytes

        data = onnx_bytes(module, tokenizer, info, source)
    elif fmt == "html":
        from charrnn.export.html import page_bytes

        data = page_bytes(module, tokenizer, info, source, quantize)
    else:
        from charrnn.export.weights import weights_only_bytes

        data = weights_only_bytes(module, tokenizer, info, half)
    atomic_write_bytes(data, path, FIX)
    return {"path": path, "format": fmt, "bytes": len(data)}


def describe(module, tokenizer, info: dict, source: str) -> dict:
    """What the ONNX metadata and the web page say about the model (plain JSON values)."""
    c = module.cfg
    best = ((info.get("train_state") or {}).get("best") or {})
    base = os.path.basename(source) if source else ""
    name = (os.path.basename(os.path.dirname(os.path.abspath(source))) if base in ("best.pt", "last.pt")
            else os.path.splitext(base)[0] or "model")
    return {"name": name, "source": base, "cell": c.cell,
            "layers": c.layers, "hidden": c.hidden, "emb": c.emb, "vocab_size": c.vocab_size, "head": c.head,
            "tied": bool(c.tie_weights), "parameters": module.num_parameters(), "tokenizer": tokenizer.kind,
            "val_bpc": best.get("bpc"), "start_id": start_id(tokenizer)}


def start_id(tokenizer) -> int:
    """The token a sample without a prime starts from: a newline, else token 0 (as charrnn sample starts)."""
    try:
        ids = tokenizer.encode("\n")
    except CharrnnError:
        return 0
    return int(ids[0]) if len(ids) else 0
