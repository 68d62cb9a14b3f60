"""The model as an ONNX graph, written node by node (no tracing): token ids and state in,
log-probabilities and state out. One graph serves both uses: ``tokens`` is (batch, time), so time 1
is one generation step and a whole text is the scoring forward. Every cell (ONNX's own LSTM/GRU/RNN
operators, gates reordered from PyTorch's), both heads (full softmax, tied or not; the adaptive
softmax with its clusters) and every tokenizer (its vocabulary in the metadata, key "charrnn").

    inputs   tokens int64 (B, T); h float (L, B, H); c float (L, B, H), LSTM only
    outputs  logp float (B, T, V): log-probabilities of the next token; h_out, c_out: the final state
"""

from __future__ import annotations

import base64
import json

import numpy as np
import torch

from charrnn.errors import CharrnnError
from charrnn.export import describe

OPSET = 21
IR_VERSION = 10  # what opset 21 needs; onnxruntime 1.20 and later read it
# PyTorch's gate blocks -> ONNX's: LSTM i,f,g,o -> i,o,f,c; GRU r,z,n -> z,r,h; RNN one block
GATE_ORDER = {"lstm": (0, 3, 1, 2), "gru": (1, 0, 2), "rnn": (0,)}
OPS = {"lstm": "LSTM", "gru": "GRU", "rnn": "RNN"}


def _onnx():
    try:
        import onnx
    except ImportError:
        raise CharrnnError("exporting to ONNX needs the onnx package: pip install 'charrnn[onnx]' "
                           "(or pip install onnx onnxruntime)") from None
    return onnx


def _gates(t: torch.Tensor, cell: str) -> np.ndarray:
    blocks = t.detach().float().cpu().chunk(len(GATE_ORDER[cell]), 0)
    return torch.cat([blocks[i] for i in GATE_ORDER[cell]], 0).numpy()


def tokenizer_metadata(tokenizer) -> dict:
    """Everything needed to encode a prime and decode tokens without charrnn (char: the code points;
    byte: nothing; subword: the text of every piece as charrnn streams it, and the sentencepiece model)."""
    if tokenizer.kind == "char":
        return {"kind": "char", "codepoints": [int(c) for c in tokenizer.codepoints]}
    if tokenizer.kind == "byte":
        return {"kind": "byte"}
    sp = tokenizer.sp  # a byte piece is its byte (an int); any other piece its text
    pieces = [int(sp.IdToPiece(i)[3:5], 16) if sp.IsByte(i) else sp.decode([i]) for i in range(tokenizer.vocab_size)]
    return {"kind": tokenizer.kind, "pieces": pieces,
            "sentencepiece": base64.b64encode(tokenizer.model_proto).decode("ascii")}


class _Graph:
    """Nodes and initializers, with fresh names."""

    def __init__(self, onnx):
        self.onnx, self.h, self.nodes, self.inits, self.n, self.names = onnx, onnx.helper, [], [], 0, set()

    def const(self, name: str, value) -> str:
        if name in self.names:
            return name
        self.names.add(name)
        arr = np.asarray(value)
        arr = arr.astype(np.float32) if arr.dtype.kind == "f" else arr.astype(np.int64)
        self.inits.append(self.onnx.numpy_helper.from_array(arr, name))
        return name

    def op(self, kind: str, *inputs: str, outputs: int = 1, name: str | None = None, **attrs):
        self.n += 1
        outs = [name or f"{kind.lower()}_{self.n}"] if outputs == 1 else [f"{kind.lower()}_{self.n}_{i}"
                                                                            for i in range(outputs)]
        self.nodes.append(self.h.make_node(kind, list(inputs), outs, **attrs))
        return outs[0] if outputs == 1 else outs


def build(module, tokenizer, info: dict, source: str = ""):
    """The ONNX ModelProto of an RNNLM (eval mode: no dropout)."""
    onnx = _onnx()
    g, c, rnn = _Graph(onnx), module.cfg, module.rnn
    L, H, cell = c.layers, c.hidden, c.cell
    ax = lambda *v: g.const(f"axes_{'_'.join(map(str, v))}", v)  # noqa: E731 - shared int64 constants
    emb = g.const("embed.weight", module.embed.weight.detach().cpu())
    x = g.op("Transpose", g.op("Gather", emb, "tokens"), perm=[1, 0, 2])  # (T, B, E)
    hs, cs = [], []
    for i in range(L):
        w = g.const(f"rnn.W{i}", _gates(getattr(rnn, f"weight_ih_l{i}"), cell)[None])
        r = g.const(f"rnn.R{i}", _gates(getattr(rnn, f"weight_hh_l{i}"), cell)[None])
        b = g.const(f"rnn.B{i}", np.concatenate([_gates(getattr(rnn, f"bias_ih_l{i}"), cell),
                                                 _gates(getattr(rnn, f"bias_hh_l{i}"), cell)])[None])
        h0 = g.op("Slice", "h", ax(i), ax(i + 1), ax(0))
        ins = [x, w, r, b, "", h0]
        attrs = {"hidden_size": H}
        if cell == "lstm":
            ins.append(g.op("Slice", "c", ax(i), ax(i + 1), ax(0)))
        if cell == "gru":
            attrs["linear_before_reset"] = 1  # PyTorch's GRU: r multiplies (W_hn h + b_hn)
        outs = g.op(OPS[cell], *ins, outputs=3 if cell == "lstm" else 2, **attrs)
        x = g.op("Squeeze", outs[0], ax(1))  # (T, 1, B, H) -> (T, B, H)
        hs.append(outs[1])
        if cell == "lstm":
            cs.append(outs[2])
    g.op("Concat", *hs, axis=0, name="h_out")
    if cell == "lstm":
        g.op("Concat", *cs, axis=0, name="c_out")
    top = g.op("Transpose", x, perm=[1, 0, 2])  # (B, T, H)
    _head(g, module, top, emb, ax)
    return _model(onnx, g, module, tokenizer, info, source)


def _head(g: _Graph, module, top: str, emb: str, ax) -> None:
    head = module.head
    lin = head.linear_parts()
    if lin is not None:  # full softmax; a tied weight is the embedding's initializer, stored once
        wt = g.op("Transpose", emb, perm=[1, 0]) if head.tied else g.const("head.weight_t", lin[0].detach().cpu().t())
        logits = g.op("Add", g.op("MatMul", top, wt), g.const("head.bias", lin[1].detach().cpu()))
        g.op("LogSoftmax", logits, axis=-1, name="logp")
        return
    # adaptive softmax (nn.AdaptiveLogSoftmaxWithLoss.log_prob): shortlist + one logit per cluster,
    # each cluster's tokens through two projections; classes in frequency order, then by token id
    s = head.shortlist_size
    hw = g.const("head.head.weight_t", head.head.weight.detach().cpu().t())
    hl = g.op("MatMul", top, hw)
    if head.head.bias is not None:
        hl = g.op("Add", hl, g.const("head.head.bias", head.head.bias.detach().cpu()))
    hl = g.op("LogSoftmax", hl, axis=-1)
    parts = [g.op("Slice", hl, ax(0), ax(s), ax(2))]
    for i, tail in enumerate(head.tail):
        p = g.op("MatMul", top, g.const(f"head.tail{i}.0.weight_t", tail[0].weight.detach().cpu().t()))
        p = g.op("LogSoftmax", g.op("MatMul", p, g.const(f"head.tail{i}.1.weight_t", tail[1].weight.detach().cpu().t())),
                 axis=-1)
        parts.append(g.op("Add", p, g.op("Slice", hl, ax(s + i), ax(s + i + 1), ax(2))))
    ranked = g.op("Concat", *parts, axis=-1)
    g.op("Gather", ranked, g.const("head.rank", head.rank.detach().cpu()), axis=2, name="logp")


def _model(onnx, g: _Graph, module, tokenizer, info: dict, source: str):
    h, c = onnx.helper, module.cfg
    F, I = onnx.TensorProto.FLOAT, onnx.TensorProto.INT64
    state = ["h", "c"] if c.cell == "lstm" else ["h"]
    inputs = [h.make_tensor_value_info("tokens", I, ["batch", "time"])]
    inputs += [h.make_tensor_value_info(n, F, [c.layers, "batch", c.hidden]) for n in state]
    outputs = [h.make_tensor_value_info("logp", F, ["batch", "time", c.vocab_size])]
    outputs += [h.make_tensor_value_info(n + "_out", F, [c.layers, "batch", c.hidden]) for n in state]
    graph = h.make_graph(g.nodes, "charrnn", inputs, outputs, g.inits)
    model = h.make_model(graph, opset_imports=[h.make_opsetid("", OPSET)], producer_name="charrnn")
    model.ir_version = IR_VERSION
    meta = {**describe(module, tokenizer, info, source), "format": "charrnn-onnx", "version": 1,
            "state": state, "vocab": tokenizer_metadata(tokenizer)}
    h.set_model_props(model, {"charrnn": json.dumps(meta, ensure_ascii=False)})
    onnx.checker.check_model(model)
    return model


def onnx_bytes(module, tokenizer, info: dict, source: str = "") -> bytes:
    return build(module, tokenizer, info, source).SerializeToString()
