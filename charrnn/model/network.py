"""The language model: embedding -> stacked LSTM/GRU/RNN (fused kernels) or one of cells/ (QRNN, SRU,
IndRNN, JANET, peephole LSTM) -> [attention] -> dropout -> output head.

``--attention M`` adds one attention head over the top layer's last M states (attention.py); its
memory is then part of the state, ``(rnn_state, memory)`` (state.py). Training-time regularisers
(dropout and its masks, weight drop, locked and embedding dropout) live in regularise.py.

The trunk (``features``) is written once; the head (heads.py) turns its hidden states into a
training loss, per-token negative log-likelihoods or log-probabilities.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, fields

import torch
import torch.nn as nn

from charrnn.model.cells import STACKS
from charrnn.model import state as states
from charrnn.model.attention import Attention
from charrnn.model.heads import resolve_head, make_head
from charrnn.model.regularise import Dropout, EmbeddingDropout, LockedDropout, RecurrentStack, WeightDrop
from charrnn.errors import CharrnnError
from charrnn.settings import CELLS
from charrnn.settings.setting import NO_WEIGHT_DROP

RNN_CLASSES = {name: STACKS[name] if name in STACKS else getattr(nn, name.upper())  # lstm -> nn.LSTM, ...,
               for name in CELLS}                                                  # qrnn -> cells.QRNN
REGULARISERS = ("weight_drop", "embed_dropout", "locked_dropout")  # training-only, like dropout
OMITTED_AT_DEFAULT = REGULARISERS + ("attention",)  # left out of a checkpoint's config when unset


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
    weight_drop: float = 0.0    # DropConnect on W_hh (regularise.py); off in checkpoints that predate it
    embed_dropout: float = 0.0  # drop whole embedding rows
    locked_dropout: bool = False  # --dropout with one mask per sequence, shared across time
    attention: int = 0          # --attention M: attend over the top layer's last M states (0: none)

    def to_dict(self) -> dict:
        d = asdict(self)
        d["cutoffs"] = list(self.cutoffs)
        defaults = {f.name: f.default for f in fields(self)}
        return {k: v for k, v in d.items() if k not in OMITTED_AT_DEFAULT or v != defaults[k]}  # unset: readable by
                                                                                            # older charrnn

    @classmethod
    def from_settings(cls, settings, vocab_size: int) -> "ModelConfig":
        """The architecture a run's settings ask for, by name (the "auto" head resolved for this vocabulary)."""
        names = {f.name for f in fields(cls)} - {"vocab_size", "head", "cutoffs"}
        kw = {n: getattr(settings, n) for n in names}
        head, cutoffs = resolve_head(settings.head, vocab_size, settings.tie_weights)
        return cls(vocab_size=vocab_size, head=head, cutoffs=cutoffs, **kw)


class RNNLM(nn.Module):
    def __init__(self, cfg: ModelConfig):
        super().__init__()
        self.cfg = cfg
        self.embed = nn.Embedding(cfg.vocab_size, cfg.emb)  # --tie-weights requires emb == hidden
        self.drop = (LockedDropout if cfg.locked_dropout else Dropout)(cfg.dropout)  # embeddings, between
        self.embed_drop, self.weight_drop = EmbeddingDropout(cfg.embed_dropout), WeightDrop(cfg.weight_drop)
        if cfg.weight_drop > 0 and cfg.cell in NO_WEIGHT_DROP:  # settings.check_combination says it first
            raise CharrnnError(f"--weight-drop needs a recurrent matrix W_hh and a {cfg.cell} has none")
        self.rnn = RNN_CLASSES[cfg.cell](cfg.emb, cfg.hidden, cfg.layers, batch_first=True)  # layers, output
        self.stack = RecurrentStack(self.rnn)  # not a module: no parameters of its own; applies self.drop
                                               # between layers (the RNN's own dropout= stays 0)
        self.attn = Attention(cfg.hidden, cfg.attention) if cfg.attention else None
        self.head = make_head(cfg.head, cfg.hidden, cfg.vocab_size, cfg.cutoffs,
                              tied=self.embed if cfg.tie_weights else None)
        self.reset_parameters()

    def reset_parameters(self) -> None:
        nn.init.normal_(self.embed.weight, std=0.1 if not self.cfg.tie_weights else self.cfg.hidden ** -0.5)
        self.head.init_weights()
        if self.cfg.cell in STACKS:  # each cell's own initialisation (its paper's: cells/)
            self.rnn.reset_parameters()
        if self.attn is not None:
            self.attn.init_weights()
        if self.cfg.cell == "lstm":  # forget-gate bias 1 (gates are ordered i, f, g, o)
            h = self.cfg.hidden
            for name, p in self.rnn.named_parameters():
                if name.startswith("bias_"):
                    with torch.no_grad():
                        p.zero_()
                        if name.startswith("bias_ih"):
                            p[h:2 * h].fill_(1.0)

    def init_output_bias(self, counts) -> None:
        """Start from the unigram model: training begins at the unigram loss instead of ln(V) and
        skips the early plateau (with bytes or Chinese most classes are rare, and this matters)."""
        self.head.init_bias(counts)

    def features(self, x: torch.Tensor, state=None):
        """x: (B, T) token ids -> top-layer hidden states (B, T, H) after dropout, and the final state
        (with attention: the attention's output, and the state (rnn_state, memory))."""
        e = self.drop(self.embed_drop(self.embed, x))
        rnn_state, memory = states.parts(state, self.cfg.attention)
        out, rnn_state = self.stack(self.rnn, e, rnn_state, self.weight_drop, self.drop)  # = self.rnn(e, state)
        # without weight drop or dropout. out is a batch-first view of the kernel's time-major output; the head
        # folds it to (B*T, H), a copy either way: made here, dropout's product and its gradient are contiguous
        out = out.contiguous()
        if self.attn is None:
            return self.drop(out), rnn_state
        out, memory = self.attn(out, memory)
        return self.drop(out), (rnn_state, memory)

    def forward(self, x: torch.Tensor, state=None):
        """x: (B, T) token ids -> log-probabilities (B, T, V) and the final hidden state."""
        h, state = self.features(x, state)
        return self.head.log_probs(h), state

    def loss(self, x: torch.Tensor, y: torch.Tensor, state=None):
        """Mean next-token cross-entropy of targets y (B, T), and the final hidden state."""
        h, state = self.features(x, state)
        return self.head.loss(h, y), state

    def token_nll(self, x: torch.Tensor, y: torch.Tensor, state=None):
        """Per-target negative log-likelihood (B, T) (targets < 0 score 0), and the final state."""
        h, state = self.features(x, state)
        return self.head.token_nll(h, y), state

    def num_parameters(self) -> int:
        return sum(p.numel() for p in self.parameters())


def detach_state(state):
    return states.detach(state)
