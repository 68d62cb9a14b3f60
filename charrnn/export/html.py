"""One self-contained web page that writes in the browser: page.html (package data: plain JavaScript,
no network) with the model's weights, vocabulary and description inline. Char and byte models; a
subword model is refused (the page has no sentencepiece encoder). ``--quantize fp16|int8`` stores the
weight matrices in half precision or as int8 with one fp32 scale per row (weights.quantize)."""

from __future__ import annotations

import base64
import importlib.resources
import json
import re

from charrnn.errors import CharrnnError
from charrnn.export import describe
from charrnn.export.weights import quantize as quantize_tensor

MAX_PAGE_BYTES = 96 * 2 ** 20  # browsers parse bigger inline scripts slowly or not at all
BYTES_PER_WEIGHT = {None: 4, "fp16": 2, "int8": 1}


def page_tensors(module) -> tuple[dict, dict]:
    """The tensors the page reads, by its names, and how its output head is laid out."""
    rnn, head, t = module.rnn, module.head, {"embed": module.embed.weight}
    for i in range(module.cfg.layers):
        for k in ("w_ih", "w_hh", "b_ih", "b_hh"):
            t[f"{k}{i}"] = getattr(rnn, f"{'weight' if k[0] == 'w' else 'bias'}_{k[2:]}_l{i}")
    parts = head.linear_parts()
    if parts is not None:
        if not head.tied:
            t["head.w"] = parts[0]
        t["head.b"] = parts[1]
        return t, {"kind": "full", "tied": bool(head.tied)}
    t["head.w"] = head.head.weight
    if head.head.bias is not None:
        t["head.b"] = head.head.bias
    for i, tail in enumerate(head.tail):
        t[f"tail{i}.a"], t[f"tail{i}.b"] = tail[0].weight, tail[1].weight
    return t, {"kind": "adaptive", "shortlist": head.shortlist_size, "tails": list(head.cutoffs[:-1]),
               "rank": [int(r) for r in head.rank]}


def check_size(module, quantize: str | None) -> None:
    params = module.num_parameters()
    page = params * BYTES_PER_WEIGHT[quantize] * 4 / 3  # base64
    if page > MAX_PAGE_BYTES:
        int8 = params * 4 / 3
        hint = (f"; use --quantize int8 (about {int8 / 2 ** 20:.0f} MiB)" if quantize != "int8" and int8 <= MAX_PAGE_BYTES
                else "; export it with --format onnx instead")
        raise CharrnnError(f"this model ({params:,} parameters) makes a {page / 2 ** 20:.0f} MiB page, over the "
                           f"{MAX_PAGE_BYTES / 2 ** 20:.0f} MiB a web page can hold{hint}")


def page_bytes(module, tokenizer, info: dict, source: str = "", quantize: str | None = None) -> bytes:
    if tokenizer.kind not in ("char", "byte"):
        raise CharrnnError(f"the web page reads characters or bytes; a {tokenizer.kind} model needs sentencepiece's "
                           "encoder, which the page does not carry: export it with --format onnx")
    check_size(module, quantize)
    tensors, head = page_tensors(module)
    blob, index = bytearray(), {}
    for name, w in tensors.items():
        data, scales, _ = quantize_tensor(w, quantize)
        kind = "f32" if quantize is None or w.dim() != 2 else ("f16" if quantize == "fp16" else "i8")
        entry = {"dtype": kind, "shape": list(w.shape), "offset": len(blob)}
        blob += data
        blob += b"\0" * (-len(blob) % 4)  # every tensor starts 4-byte aligned
        if scales is not None:
            entry["scales"] = len(blob)
            blob += scales.tobytes()
        index[name] = entry
    meta = describe(module, tokenizer, info, source)
    vocab = {"codepoints": [int(c) for c in tokenizer.codepoints]} if tokenizer.kind == "char" else {}
    model = {"meta": meta, "head": head, "tensors": index, "vocab": vocab, "quantize": quantize}
    template = (importlib.resources.files("charrnn.export") / "page.html").read_text(encoding="utf-8")
    model_json = json.dumps(model, ensure_ascii=False).replace("</", "<\\/")
    fill = {"__TITLE__": _escape(meta["name"]) + " — charrnn", "__MODEL__": model_json,
            "__WEIGHTS__": base64.b64encode(bytes(blob)).decode("ascii")}
    return re.sub("__(TITLE|MODEL|WEIGHTS)__", lambda m: fill[m.group(0)], template).encode("utf-8")


def _escape(s: str) -> str:
    return s.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")
