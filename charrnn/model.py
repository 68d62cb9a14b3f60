"""The language model: embedding -> stacked LSTM/GRU/RNN (fused kernels) -> dropout -> linear."""

from __future__ import annotations

from dataclasses import asdict, dataclass

import torch
import torch.nn as nn

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

    def to_dict(self) -> dict:
        return asdict(self)


class RNNLM(nn.Module):
    def __init__(self, cfg: ModelConfig):
        super().__init__()
        self.cfg = cfg
        emb = cfg.emb  # --tie-weights requires emb == hidden (checked when the run is configured)
        self.embed = nn.Embedding(cfg.vocab_size, emb)
        self.drop = nn.Dropout(cfg.dropout)
        self.rnn = CELLS[cfg.cell](emb, cfg.hidden, cfg.layers, batch_first=True,
                                   dropout=cfg.dropout if cfg.layers > 1 else 0.0)
        self.head = nn.Linear(cfg.hidden, cfg.vocab_size)
        if cfg.tie_weights:
            self.head.weight = self.embed.weight
        self.reset_parameters()

    def reset_parameters(self) -> None:
        nn.init.normal_(self.embed.weight, std=0.1 if not self.cfg.tie_weights else self.cfg.hidden ** -0.5)
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
        self.head.bias.copy_((counts / counts.sum()).log().float())

    def forward(self, x: torch.Tensor, state=None):
        """x: (B, T) token ids -> logits (B, T, V) and the final hidden state."""
        out, state = self.rnn(self.drop(self.embed(x)), state)
        return self.head(self.drop(out)), state

    def num_parameters(self) -> int:
        return sum(p.numel() for p in self.parameters())


def detach_state(state):
    if state is None:
        return None
    if isinstance(state, tuple):
        return tuple(s.detach() for s in state)
    return state.detach()
