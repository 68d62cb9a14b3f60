"""The language model: embedding -> stacked LSTM/GRU/RNN (fused kernels) -> dropout -> output layer.

The output layer is a plain linear softmax, or for large vocabularies (thousands of Chinese
characters) an adaptive softmax: frequent tokens get the full hidden size, rare ones a cheaper
projection, so a big alphabet does not make every training step pay for all of it.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

import torch
import torch.nn as nn
import torch.nn.functional as F

CELLS = {"lstm": nn.LSTM, "gru": nn.GRU, "rnn": nn.RNN}


@dataclass
class ModelConfig:
    vocab_size: int
    cell: str = "lstm"
    layers: int = 2
    hidden: int = 512
    emb: int = 64
    dropout: float = 0.1
    tie_weights: bool = False
    head: str = "full"          # "full" softmax or "adaptive"
    cutoffs: tuple = ()         # adaptive: frequency-rank boundaries of the tail clusters

    def to_dict(self) -> dict:
        d = asdict(self)
        d["cutoffs"] = list(self.cutoffs)
        return d


HEADS = ("auto", "full", "adaptive")
ADAPTIVE_MIN_VOCAB = 1024  # head "auto" becomes adaptive above this many tokens


def resolve_head(head: str, vocab_size: int, tie_weights: bool) -> tuple[str, tuple]:
    """"auto": adaptive softmax for vocabularies over ADAPTIVE_MIN_VOCAB (unless weights are tied)."""
    if head == "auto":
        head = "adaptive" if vocab_size > ADAPTIVE_MIN_VOCAB and not tie_weights else "full"
    if head == "full":
        return "full", ()
    cutoffs = tuple(c for c in (512, 2048, 8192, 32768) if c < vocab_size - 1)
    return ("adaptive", cutoffs) if cutoffs else ("full", ())


class RNNLM(nn.Module):
    def __init__(self, cfg: ModelConfig):
        super().__init__()
        self.cfg = cfg
        emb = cfg.emb  # --tie-weights requires emb == hidden (checked when the run is configured)
        self.embed = nn.Embedding(cfg.vocab_size, emb)
        self.drop = nn.Dropout(cfg.dropout)
        self.rnn = CELLS[cfg.cell](emb, cfg.hidden, cfg.layers, batch_first=True,
                                   dropout=cfg.dropout if cfg.layers > 1 else 0.0)
        if cfg.head == "adaptive":
            self.head = nn.AdaptiveLogSoftmaxWithLoss(cfg.hidden, cfg.vocab_size, list(cfg.cutoffs), div_value=4.0,
                                                      head_bias=True)
            # token id -> frequency rank (the adaptive softmax's class order); set by init_output_bias
            self.register_buffer("rank", torch.arange(cfg.vocab_size))
        else:
            self.head = nn.Linear(cfg.hidden, cfg.vocab_size)
            if cfg.tie_weights:
                self.head.weight = self.embed.weight
        self.reset_parameters()

    def reset_parameters(self) -> None:
        nn.init.normal_(self.embed.weight, std=0.1 if not self.cfg.tie_weights else self.cfg.hidden ** -0.5)
        if self.cfg.head == "full":
            nn.init.zeros_(self.head.bias)
            if not self.cfg.tie_weights:
                nn.init.normal_(self.head.weight, std=self.cfg.hidden ** -0.5)
        if self.cfg.cell == "lstm":  # forget-gate bias 1 (gates are ordered i, f, g, o)
            h = self.cfg.hidden
            for name, p in self.rnn.named_parameters():
                if name.startswith("bias_"):
                    with torch.no_grad():
                        p.zero_()
                        if name.startswith("bias_ih"):
                            p[h:2 * h].fill_(1.0)

    @torch.no_grad()
    def init_output_bias(self, counts) -> None:
        """Start from the unigram model: output bias = log of the (add-one smoothed) token frequencies.

        Training then begins at the unigram loss instead of ln(V) and skips the early plateau;
        with large vocabularies (bytes, Chinese) most classes are rare or unused, and this matters.
        """
        counts = torch.as_tensor(counts, dtype=torch.float64) + 1.0
        logp = (counts / counts.sum()).log()
        if self.cfg.head == "full":
            self.head.bias.copy_(logp.float())
            return
        # adaptive: classes in order of frequency; shortlist and cluster logits start at log-frequencies
        order = torch.argsort(counts, descending=True, stable=True)
        self.rank.copy_(torch.argsort(order))
        ranked = logp[order]
        edges = [0, *self.cfg.cutoffs, self.cfg.vocab_size]
        head_bias = [ranked[:edges[1]]] + [torch.logsumexp(ranked[a:b], 0).view(1) for a, b in zip(edges[1:], edges[2:])]
        self.head.head.bias.copy_(torch.cat(head_bias).float())

    def forward(self, x: torch.Tensor, state=None):
        """x: (B, T) token ids -> logits (B, T, V) and the final hidden state.

        With the adaptive head the "logits" are normalised log-probabilities (softmax leaves them
        unchanged), so sampling and evaluation treat both heads alike.
        """
        out, state = self.rnn(self.drop(self.embed(x)), state)
        h = self.drop(out)
        if self.cfg.head == "full":
            return self.head(h), state
        logp = self.head.log_prob(h.reshape(-1, h.shape[-1]).float()).index_select(-1, self.rank)
        return logp.view(*h.shape[:-1], -1), state

    def loss(self, x: torch.Tensor, y: torch.Tensor, state=None):
        """Mean next-token cross-entropy of targets y (B, T); the adaptive head skips the full softmax."""
        out, state = self.rnn(self.drop(self.embed(x)), state)
        h = self.drop(out)
        if self.cfg.head == "full":
            logits = self.head(h)
            return F.cross_entropy(logits.float().reshape(-1, logits.shape[-1]), y.reshape(-1)), state
        return self.head(h.reshape(-1, h.shape[-1]), self.rank[y.reshape(-1)]).loss, state

    def num_parameters(self) -> int:
        return sum(p.numel() for p in self.parameters())


def detach_state(state):
    if state is None:
        return None
    if isinstance(state, tuple):
        return tuple(s.detach() for s in state)
    return state.detach()
