"""A model's sizes in closed form, without building it (no torch): the parameters of each recurrent
layer and of the output head, and the classes scored per token. The memory estimate and the budget
size candidate models with them; ``charrnn inspect`` prints them beside the real tensors' sizes
(tests check the two agree for every cell and head, and with --attention).

PyTorch keeps two bias vectors per recurrent layer (b_ih and b_hh), so a layer with G gate blocks,
input width m and hidden width h has G (m h + h^2 + 2 h) parameters (G = 4 LSTM, 3 GRU, 1 RNN).
The cells of model/cells/ keep one bias per gate: QRNN 3(mh + h), SRU 3mh + 2h (4mh + 2h where its
input width differs from h: the highway's projection), IndRNN mh + 2h, JANET 2(mh + h² + h), peephole
LSTM 4(mh + h² + h) + 3h.
"""

from __future__ import annotations

GATES = {"lstm": 4, "gru": 3, "rnn": 1}
ADAPTIVE_DIV = 4  # heads.AdaptiveSoftmax's div_value


def rnn_layer_count(cell: str, m: int, h: int) -> int:
    """One recurrent layer's parameters as the module stores them (PyTorch's cells: two bias vectors)."""
    if cell == "qrnn":
        return 3 * (m * h + h)
    if cell == "sru":
        return (3 if m == h else 4) * m * h + 2 * h
    if cell == "indrnn":
        return m * h + 2 * h
    if cell == "janet":
        return 2 * (m * h + h * h + h)
    if cell == "lstm-peephole":
        return 4 * (m * h + h * h + h) + 3 * h
    return GATES[cell] * (m * h + h * h + 2 * h)


def layer_formula(cell: str, m: int, h: int) -> tuple[str, str]:
    """The closed form of ``rnn_layer_count`` as text, and with the numbers put in."""
    if cell == "qrnn":
        return "3(mh + h)", f"3({m}·{h} + {h})"
    if cell == "sru":
        k = 3 if m == h else 4
        return f"{k}mh + 2h", f"{k}·{m}·{h} + 2·{h}"
    if cell == "indrnn":
        return "mh + 2h", f"{m}·{h} + 2·{h}"
    if cell == "janet":
        return "2(mh + h² + h)", f"2({m}·{h} + {h}² + {h})"
    if cell == "lstm-peephole":
        return "4(mh + h² + h) + 3h", f"4({m}·{h} + {h}² + {h}) + 3·{h}"
    g = f"{GATES[cell]}" if GATES[cell] > 1 else ""
    return f"{g}(mh + h² + 2h)", f"{g}({m}·{h} + {h}² + 2·{h})"


def layer_macs(cell: str, m: int, h: int) -> int:
    """Multiply-adds per token of one layer's matrix products."""
    if cell in ("qrnn", "sru", "indrnn"):
        return {"qrnn": 3, "sru": 3 if m == h else 4, "indrnn": 1}[cell] * m * h
    return {"janet": 2, "lstm-peephole": 4}.get(cell, GATES.get(cell, 4)) * (m + h) * h


def n_parameters(vocab: int, cell: str, layers: int, hidden: int, emb: int, head: str = "full",
                 cutoffs=(), tied: bool = False, attention: int = 0) -> int:
    """The model's parameter count in closed form (equals RNNLM(...).num_parameters())."""
    n, m = vocab * emb, emb
    for _ in range(layers):
        n += rnn_layer_count(cell, m, hidden)
        m = hidden
    return n + head_parameters(vocab, hidden, head, cutoffs, tied) + (attention_parameters(hidden) if attention else 0)


def attention_parameters(h: int) -> int:
    """--attention's head (model/attention.py), whatever its span M: the query W_q, b_q (h^2 + h), the
    gates s_q, s_k, s_v (3h) and two layer norms' gains and biases (4h)."""
    return h * h + 8 * h


def head_parameters(vocab, hidden, head, cutoffs, tied) -> int:
    if head != "adaptive":
        return vocab if tied else hidden * vocab + vocab
    edges = [*cutoffs, vocab]
    n = (hidden + 1) * (cutoffs[0] + len(cutoffs))
    for i in range(len(cutoffs)):
        d = hidden // ADAPTIVE_DIV ** (i + 1)
        n += hidden * d + d * (edges[i + 1] - edges[i])
    return n


def output_width(vocab: int, head: str, cutoffs) -> int:
    """Classes scored per token: all of them, or an adaptive softmax's shortlist and clusters plus an
    allowance of a quarter of the tail (a tail is computed only for the tokens that fall in it)."""
    return cutoffs[0] + len(cutoffs) + (vocab - cutoffs[0]) // 4 if head == "adaptive" else vocab
