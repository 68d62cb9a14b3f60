"""See what the network sees: one self-contained HTML page of a text, every character coloured by the
model's surprisal or by one hidden unit's activation, with the next-token predictions on hover.

As in Karpathy, Johnson & Fei-Fei (2015), "Visualizing and Understanding Recurrent Networks": the page
also lists the units most correlated with simple properties of the text (inside quotes, inside
brackets, position in the line), so a "quote cell" is one click away. Each layer of the stacked RNN
runs through the fused kernel on its own to give every timestep's h; an LSTM's cell state c is
recomputed from the gates (an elementwise recurrence). Activations are embedded as int8 (base64).
"""

from __future__ import annotations

import base64
import importlib.resources
import json
import math
import os
from html import escape

import numpy as np
import torch
import torch.nn.functional as F

from charrnn.errors import CharrnnError
from charrnn.system.fileio import atomic_write_bytes

MAX_CHARS = 2000
MAX_VALUES = 6_000_000  # activation values embedded at most: about 8 MB of base64 (int8 each)
TOP_K = 5
WEIGHTS = ("weight_ih", "weight_hh", "bias_ih", "bias_hh")


@torch.no_grad()
def layer_states(model, ids) -> tuple[list[torch.Tensor], list[torch.Tensor] | None]:
    """Hidden state h of every layer at every timestep (lists of (T, H)), and the LSTM cell state c.

    Each layer is a one-layer copy of model.rnn's weights run by the fused kernel (no loop over time
    for h); c_t = f_t * c_{t-1} + i_t * g_t is recomputed from the gates, which use x_t and h_{t-1}.
    """
    rnn, cell = model.rnn, model.cfg.cell
    p0 = next(model.parameters())
    x = model.embed(torch.as_tensor(np.asarray(ids), dtype=torch.long, device=p0.device).view(1, -1))
    hs, cs = [], ([] if cell == "lstm" else None)
    for i in range(rnn.num_layers):
        if hasattr(rnn, "layers"):  # a CellStack (model/cells): its own layer, h at every step
            x, _ = rnn.layers[i](x, None)
            hs.append(x[0])
            continue
        w = [getattr(rnn, f"{n}_l{i}") for n in WEIGHTS]
        layer = type(rnn)(w[0].shape[1], rnn.hidden_size, 1, batch_first=True).to(p0.device, p0.dtype)
        for n, p in zip(WEIGHTS, w):
            getattr(layer, f"{n}_l0").copy_(p)
        out, _ = layer(x)
        hs.append(out[0])
        if cs is not None:
            cs.append(_cell_states(x[0], out[0], *w))
        x = out
    return hs, cs


def _cell_states(x, h, w_ih, w_hh, b_ih, b_hh) -> torch.Tensor:
    h_prev = torch.cat([torch.zeros_like(h[:1]), h[:-1]])
    i, f, g, _ = (x @ w_ih.t() + b_ih + h_prev @ w_hh.t() + b_hh).chunk(4, dim=1)
    f = torch.sigmoid(f).cpu().numpy()
    ig = (torch.sigmoid(i) * torch.tanh(g)).cpu().numpy()
    c = np.empty_like(ig)
    prev = np.zeros_like(ig[0])
    for t in range(len(ig)):  # elementwise only: cheap for a capped text
        prev = c[t] = f[t] * prev + ig[t]
    return torch.from_numpy(c).to(h.device)


@torch.no_grad()
def token_logprobs(model, ids) -> torch.Tensor:
    """(T, V) log-probabilities of the next token after each position (log-softmax of the model's logits)."""
    p0 = next(model.parameters())
    logits, _ = model(torch.as_tensor(np.asarray(ids), dtype=torch.long, device=p0.device).view(1, -1))
    return F.log_softmax(logits[0].float(), dim=-1).cpu()


def surprisal_bits(logp: torch.Tensor, ids) -> np.ndarray:
    """-log2 p(token t | tokens before t); NaN for the first token, which nothing predicts."""
    ids = torch.as_tensor(np.asarray(ids), dtype=torch.long)
    s = np.full(len(ids), np.nan)
    s[1:] = (-logp[:-1].gather(1, ids[1:, None])[:, 0] / math.log(2)).numpy()
    return s


def token_bytes(tok, ids) -> list[bytes]:
    if tok.kind == "char":
        return [chr(int(tok.codepoints[i])).encode("utf-8", "surrogatepass") for i in ids]
    if tok.kind == "byte":
        return [bytes([int(i)]) for i in ids]
    sp = tok.sp
    return [bytes([int(sp.IdToPiece(int(i))[3:5], 16)]) if sp.IsByte(int(i))
            else sp.IdToPiece(int(i)).replace("\u2581", " ").encode("utf-8") for i in ids]


def token_label(tok, i: int) -> str:
    """How a predicted token is shown: its text, or <0xNN> for a lone byte."""
    b = token_bytes(tok, [i])[0]
    try:
        return b.decode("utf-8")
    except UnicodeDecodeError:
        return "".join(f"<0x{v:02X}>" for v in b)


def segments(tok, ids, text: str) -> list[tuple[int, int, int, int]]:
    """(char_start, char_end, tok_start, tok_end): the smallest spans where token and character
    boundaries agree: a character per char token, a token span per subword, a character's bytes."""
    tb = token_bytes(tok, ids)
    if b"".join(tb) != text.encode("utf-8", "surrogatepass"):
        raise CharrnnError("the tokens do not spell the text back exactly; cannot place them on characters")
    char_at = {0: 0}
    pos = 0
    for k, ch in enumerate(text):
        pos += len(ch.encode("utf-8", "surrogatepass"))
        char_at[pos] = k + 1
    out, pos, cs, ts = [], 0, 0, 0
    for t, b in enumerate(tb):
        pos += len(b)
        if pos in char_at and char_at[pos] > cs:
            out.append((cs, char_at[pos], ts, t + 1))
            cs, ts = char_at[pos], t + 1
    return out


def text_features(text: str) -> dict[str, np.ndarray]:
    """Per character, the state after reading it: inside quotes, inside brackets, position in the line.

    An apostrophe between letters (don't) is not a quote; brackets inside quotes do not count."""
    n = len(text)
    quote, depth, col = np.zeros(n), np.zeros(n), np.zeros(n)
    q, esc, d, c = None, False, 0, 0
    for k, ch in enumerate(text):
        c = 0 if ch == "\n" else c + 1
        if q is not None:
            if esc:
                esc = False
            elif ch == "\\":
                esc = True
            elif ch == q:
                q = None
        elif ch in "\"'" and not (ch == "'" and 0 < k < n - 1 and text[k - 1].isalnum() and text[k + 1].isalpha()):
            q = ch
        elif ch in "([{":
            d += 1
        elif ch in ")]}":
            d = max(0, d - 1)
        quote[k], depth[k], col[k] = q is not None, d, c
    return {"inside quotes": quote, "inside brackets": (depth > 0).astype(float), "position in line": col}


def correlated_units(columns: np.ndarray, labels: list[tuple], feats: dict, per_feature: int = 3):
    """Top units by |Pearson r| per feature; columns (N, U), labels[u] = (layer, state, unit)."""
    xc = columns - columns.mean(0)
    xn = np.linalg.norm(xc, axis=0)
    found, absent = [], []
    for name, f in feats.items():
        fc = (f - f.mean()).astype(columns.dtype)
        if np.linalg.norm(fc) == 0:
            absent.append(name)
            continue
        r = (xc.T @ fc) / np.where(xn > 0, xn, np.inf) / np.linalg.norm(fc)
        for u in np.argsort(-np.abs(r), kind="stable")[:per_feature]:
            layer, state, unit = labels[u]
            found.append({"feature": name, "layer": layer, "state": state, "unit": unit, "r": round(float(r[u]), 3)})
    return found, absent


def page_data(model, tok, text: str, *, title: str = "", notes: list[str] | None = None,
              initial: dict | None = None, max_values: int = MAX_VALUES) -> dict:
    """Everything the page shows, as JSON-ready data (activations int8, base64, unit-major)."""
    notes = list(notes or [])
    ids = tok.encode(text)
    segs = segments(tok, ids, text)
    hs, cs = layer_states(model, ids)
    logp = token_logprobs(model, ids)
    s = surprisal_bits(logp, ids)
    last = np.array([te - 1 for _, _, _, te in segs])
    seg_s = [None if ts == 0 else round(float(s[ts:te].sum()), 3) for _, _, ts, te in segs]
    top_p, top_i = logp[torch.as_tensor(last)].exp().topk(min(TOP_K, logp.shape[1]), dim=1)
    vocab = {int(i): token_label(tok, int(i)) for i in torch.unique(top_i)}
    states = {"h": hs} if cs is None else {"h": hs, "c": cs}
    per_layer = {st: [v[torch.as_tensor(last)].float().cpu().numpy() for v in vals]  # float32: big models
                 for st, vals in states.items()}
    cols, labels = [], []
    for st, arrs in per_layer.items():
        for li, a in enumerate(arrs):
            cols.append(a)
            labels += [(li + 1, st, u) for u in range(a.shape[1])]
    feats = {k: v[[ce - 1 for _, ce, _, _ in segs]] for k, v in text_features(text).items()}
    corr, absent = correlated_units(np.concatenate(cols, 1), labels, feats)
    if absent:
        notes.append("nothing on this page is " + " or ".join(absent) + ": no units listed for that")
    n, layers, hidden = len(segs), len(hs), hs[0].shape[1]
    keep = max(1, min(hidden, max_values // max(1, n * layers * len(states))))
    units = []
    for li in range(layers):
        if keep >= hidden:
            units.append(list(range(hidden)))
            continue
        want = [c["unit"] for c in corr if c["layer"] == li + 1]
        if initial and initial.get("layer") == li + 1 and initial.get("unit") is not None:
            want.insert(0, initial["unit"])  # the unit the page opens on comes first
        want = list(dict.fromkeys(want))
        by_var = np.argsort(-per_layer["h"][li].var(0), kind="stable")
        chosen = want[:keep]
        chosen += [int(u) for u in by_var if int(u) not in want][:keep - len(chosen)]
        units.append(sorted(chosen))
    if keep < hidden:
        notes.append(f"page size: {len(units[0])} of {hidden} units per layer are embedded (the correlated ones "
                     "and those varying most); use a smaller --max-chars to embed all")
    # int8 per value: h (in [-1, 1]) at a fixed scale; c at its largest |c| per unit, and coloured
    # relative to its 98th percentile |c| ("norm"), so that one outlier does not wash a unit out
    act, scale, norm = [], [], []
    for li in range(layers):
        a_l, s_l, n_l = {}, {}, {}
        for st, arrs in per_layer.items():
            a = arrs[li][:, units[li]].T  # (units, N)
            sc = np.ones(len(a)) if st == "h" else np.maximum(np.abs(a).max(1), 1e-6)
            nm = np.ones(len(a)) if st == "h" else np.maximum(np.percentile(np.abs(a), 98, axis=1), 1e-6)
            q = np.clip(np.rint(a / sc[:, None] * 127), -127, 127).astype(np.int8)
            a_l[st] = base64.b64encode(q.tobytes()).decode("ascii")
            s_l[st], n_l[st] = [float(f"{v:.4g}") for v in sc], [float(f"{v:.4g}") for v in nm]
        act.append(a_l)
        scale.append(s_l)
        norm.append(n_l)
    scored = sum(ce - cs_ for (cs_, ce, ts, _) in segs if ts > 0)
    bits = sum(v for v in seg_s if v is not None)
    return {
        "title": title, "cell": model.cfg.cell, "layers": layers, "hidden": hidden, "states": list(states),
        "segs": [text[a:b] for a, b, _, _ in segs], "s": seg_s,
        "ti": top_i.reshape(-1).tolist(), "tp": [round(float(p), 3) for p in top_p.reshape(-1)], "k": top_i.shape[1],
        "vocab": vocab, "units": units, "act": act, "scale": scale, "norm": norm, "corr": corr, "notes": notes,
        "initial": initial or {}, "bpc": round(bits / max(scored, 1), 4), "chars": len(text), "tokens": len(ids),
        "tokenizer": tok.kind,
    }


def render(data: dict) -> str:
    """The page: viz_page.html (package data; inline CSS and JavaScript, no network) with the data filled
    in at ``/*DATA*/`` (``<``, ``>`` and ``&`` escaped, so the text can never close the script element).
    The page reads its selection (``#layer=2&unit=37&state=c`` or ``#view=surprisal``) from the URL
    fragment and writes it back there when the selectors change."""
    template = (importlib.resources.files("charrnn.reports") / "viz_page.html").read_text(encoding="utf-8")
    blob = json.dumps(data, ensure_ascii=False, separators=(",", ":"))
    blob = blob.replace("<", "\\u003c").replace(">", "\\u003e").replace("&", "\\u0026")
    return template.replace("/*DATA*/", blob, 1)


def prepare_text(tok, text: str, *, max_chars: int = MAX_CHARS, skip_unknown: bool = False,
                 log=None) -> tuple[str, list[str]]:
    """Cap, check and (with skip_unknown) clean the text; returns it with the notes to show."""
    if max_chars < 2:
        raise CharrnnError(f"--max-chars must be at least 2 (got {max_chars})")
    if not text:
        raise CharrnnError("the text is empty; give some text with --text TEXT or --file PATH")
    notes = []
    if len(text) > max_chars:
        notes.append(f"showing the first {max_chars:,} of {len(text):,} characters (--max-chars {max_chars})")
        if log:
            log(f"note: {notes[-1]}")
        text = text[:max_chars]
    ids = tok.encode(text, skip_unknown=skip_unknown, hint="pass --skip-unknown to drop them")
    if skip_unknown and tok.kind == "char":
        dropped = len(text) - len(ids)
        text = tok.decode(ids)
        if dropped:
            notes.append(f"{dropped} character(s) the model never saw were dropped (--skip-unknown)")
    if len(ids) < 2:
        raise CharrnnError("the text is too short to show: it needs at least two tokens the model knows")
    return text, notes


def check_selection(model, layer, unit, state) -> dict:
    cfg = model.cfg
    if state == "c" and cfg.cell != "lstm":
        raise CharrnnError(f"--state c needs an LSTM (this model is a {cfg.cell}); use --state h")
    if layer is not None and not 1 <= layer <= cfg.layers:
        raise CharrnnError(f"--layer {layer} is out of range: the model has layers 1 to {cfg.layers}")
    if unit is not None and not 0 <= unit < cfg.hidden:
        raise CharrnnError(f"--unit {unit} is out of range: each layer has units 0 to {cfg.hidden - 1}")
    if unit is None and layer is None and state == "h":
        return {"view": "surprisal", "state": state}
    return {"view": "unit", "layer": layer or 1, "unit": unit or 0, "state": state}


def make_page(model, tok, text: str, *, name: str = "", max_chars: int = MAX_CHARS, skip_unknown: bool = False,
              layer: int | None = None, unit: int | None = None, state: str = "h", source: str = "",
              log=None) -> "Page":
    """The page of ``text`` read by ``model`` (an RNNLM) with tokenizer ``tok``; ``name`` titles it
    (e.g. run/best.pt), ``source`` names where the text came from."""
    initial = check_selection(model, layer, unit, state)
    text, notes = prepare_text(tok, text, max_chars=max_chars, skip_unknown=skip_unknown, log=log)
    cfg = model.cfg
    title = (f"{name}: " if name else "") + f"{cfg.cell} {cfg.layers}x{cfg.hidden}, {tok.kind} tokenizer" + (
        f", {source}" if source else "")
    data = page_data(model, tok, text, title=title, notes=notes, initial=initial)
    return Page(render(data), data)


class Page:
    """One viz page: ``html`` (self-contained: no network), and what it shows: ``chars``, ``bpc``,
    ``notes``, ``corr`` (the units most correlated with quotes, brackets and line position).

    In Jupyter it shows inline (an iframe whose srcdoc is the page, so its script runs even in an
    untrusted notebook); ``save(path)`` writes it atomically for any browser."""

    HEIGHT = 640  # pixels of the inline frame

    def __init__(self, html: str, data: dict):
        self.html = html
        self.chars, self.bpc, self.notes, self.corr = data["chars"], data["bpc"], data["notes"], data["corr"]

    @property
    def bytes(self) -> int:
        return len(self.html.encode("utf-8"))

    def save(self, path) -> str:
        """Write the page to ``path`` (atomically: an existing file is replaced whole or not at all)."""
        path = os.fspath(path)
        atomic_write_bytes(self.html.encode("utf-8"), path)
        return path

    def _repr_html_(self) -> str:
        return (f'<iframe srcdoc="{escape(self.html, quote=True)}" sandbox="allow-scripts" '
                f'style="width:100%;height:{self.HEIGHT}px;border:1px solid #ccc"></iframe>')

    def __repr__(self) -> str:
        return f"<charrnn viz page: {self.chars:,} characters, {self.bpc:.3f} bits/char, {self.bytes / 1e6:.1f} MB>"
