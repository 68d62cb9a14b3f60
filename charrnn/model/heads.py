"""Output heads: hidden states -> next-token distribution, behind one small interface.

    head.loss(h, y)         mean cross-entropy of targets y (training)
    head.token_nll(h, y)    negative log-likelihood of each target (evaluation, scoring)
    head.log_probs(h)       normalised log-probabilities over token ids (sampling, inspection)
    head.linear_parts()     (weight, bias) if log_probs is one linear layer's log-softmax, else None
    head.init_bias(counts)  start from the unigram distribution
    head.init_weights()     initial weights (called by the model after the embedding's)
    head.parameter_rows()   closed-form parameter counts (charrnn inspect)

``FullSoftmax`` is one linear layer; ``AdaptiveSoftmax`` (Grave et al. 2017) gives frequent tokens
the full hidden size and rare ones cheaper projections, so thousands of Chinese characters do not
make every step pay for all of them. Nothing outside this module branches on the head's kind.
"""

from __future__ import annotations

import torch
import torch.nn as nn
import torch.nn.functional as F

ADAPTIVE_MIN_VOCAB = 1024  # head "auto" becomes adaptive above this many tokens
ADAPTIVE_CUTOFFS = (512, 2048, 8192, 32768)


def resolve_head(head: str, vocab_size: int, tie_weights: bool) -> tuple[str, tuple]:
    """"auto": adaptive softmax for vocabularies over ADAPTIVE_MIN_VOCAB (unless weights are tied)."""
    if head == "auto":
        head = "adaptive" if vocab_size > ADAPTIVE_MIN_VOCAB and not tie_weights else "full"
    if head == "full":
        return "full", ()
    cutoffs = tuple(c for c in ADAPTIVE_CUTOFFS if c < vocab_size - 1)
    return ("adaptive", cutoffs) if cutoffs else ("full", ())


def _smoothed_logp(counts) -> torch.Tensor:
    counts = torch.as_tensor(counts, dtype=torch.float64) + 1.0
    return (counts / counts.sum()).log()


class FullSoftmax(nn.Linear):
    """A linear layer over the whole vocabulary (its weight may be the embedding's: tied)."""

    def __init__(self, hidden: int, vocab_size: int, tied: nn.Embedding | None = None):
        super().__init__(hidden, vocab_size)
        self.tied = tied is not None
        if self.tied:
            self.weight = tied.weight

    def init_weights(self) -> None:
        nn.init.zeros_(self.bias)
        if not self.tied:
            nn.init.normal_(self.weight, std=self.in_features ** -0.5)

    def loss(self, h: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        logits = self(h)
        return F.cross_entropy(logits.float().reshape(-1, logits.shape[-1]), y.reshape(-1))

    def token_nll(self, h: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        """Per-target nll, shape of y; targets < 0 (padding) give 0."""
        logits = self(h).float()
        nll = F.cross_entropy(logits.reshape(-1, logits.shape[-1]), y.reshape(-1), ignore_index=-100,
                              reduction="none")
        return nll.view(y.shape)

    def log_probs(self, h: torch.Tensor) -> torch.Tensor:
        return torch.log_softmax(self(h).float(), dim=-1)

    def linear_parts(self) -> tuple:
        """(weight, bias) when log_probs is log_softmax(h W^T + b) (the sampler prepares its own product)."""
        return self.weight, self.bias

    @torch.no_grad()
    def init_bias(self, counts) -> None:
        self.bias.copy_(_smoothed_logp(counts).float())

    def parameter_rows(self) -> list[dict]:
        """Closed-form parameter counts beside the real ones (for ``charrnn inspect``)."""
        h, V = self.in_features, self.out_features
        if self.tied:
            return [{"part": "output head (tied)", "formula": "V (weight shared with the embedding)",
                     "numbers": f"{V}", "closed_form": V, "count": self.bias.numel()}]
        return [{"part": "output head (full softmax)", "formula": "h·V + V", "numbers": f"{h}·{V} + {V}",
                 "closed_form": h * V + V, "count": self.weight.numel() + self.bias.numel()}]


class AdaptiveSoftmax(nn.AdaptiveLogSoftmaxWithLoss):
    """Adaptive softmax over token ids; classes are kept in frequency order internally (``rank``)."""

    def __init__(self, hidden: int, vocab_size: int, cutoffs):
        super().__init__(hidden, vocab_size, list(cutoffs), div_value=4.0, head_bias=True)
        # token id -> frequency rank (the class order of the adaptive softmax); set by init_bias
        self.register_buffer("rank", torch.arange(vocab_size))

    def init_weights(self) -> None:
        """PyTorch's own initialisation is kept."""

    def loss(self, h: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        h, y = h.reshape(-1, h.shape[-1]), y.reshape(-1)
        if (y < 0).any():  # padding targets (--records) are left out, as cross_entropy ignores -100
            h, y = h[y >= 0], y[y >= 0]
        return self(h, self.rank[y]).loss

    def token_nll(self, h: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        """Only the targets' log-probabilities are computed (no full-vocabulary log-softmax)."""
        valid = y >= 0
        ranks = self.rank[torch.where(valid, y, 0).reshape(-1)]
        nll = -self(h.reshape(-1, h.shape[-1]).float(), ranks).output
        return torch.where(valid, nll.view(y.shape), torch.zeros((), device=nll.device))

    def linear_parts(self) -> None:
        return None

    def log_probs(self, h: torch.Tensor) -> torch.Tensor:
        logp = self.log_prob(h.reshape(-1, h.shape[-1]).float()).index_select(-1, self.rank)
        return logp.view(*h.shape[:-1], -1)

    @torch.no_grad()
    def init_bias(self, counts) -> None:
        """Shortlist logits start at the tokens' log-frequencies, cluster logits at each cluster's mass."""
        logp = _smoothed_logp(counts)
        order = torch.argsort(logp, descending=True, stable=True)
        self.rank.copy_(torch.argsort(order))
        ranked = logp[order]
        edges = [0, *self.cutoffs[:-1], self.n_classes]
        head_bias = [ranked[:edges[1]]] + [torch.logsumexp(ranked[a:b], 0).view(1)
                                           for a, b in zip(edges[1:], edges[2:])]
        self.head.bias.copy_(torch.cat(head_bias).float())

    def parameter_rows(self) -> list[dict]:
        """Closed-form parameter counts beside the real ones (for ``charrnn inspect``)."""
        h, c0, k = self.in_features, self.shortlist_size, self.n_clusters
        rows = [{"part": f"adaptive head: shortlist {c0} + {k} clusters", "formula": "(h + 1)(c₀ + k)",
                 "numbers": f"({h} + 1)·({c0} + {k})", "closed_form": (h + 1) * (c0 + k),
                 "count": sum(p.numel() for p in self.head.parameters())}]
        for i, tail in enumerate(self.tail):
            d, n = tail[0].out_features, tail[1].out_features
            rows.append({"part": f"adaptive tail {i + 1}: {n} tokens via {d} dims", "formula": "h·d + d·n",
                         "numbers": f"{h}·{d} + {d}·{n}", "closed_form": h * d + d * n,
                         "count": sum(p.numel() for p in tail.parameters())})
        return rows


def make_head(kind: str, hidden: int, vocab_size: int, cutoffs=(), tied: nn.Embedding | None = None):
    if kind == "adaptive":
        return AdaptiveSoftmax(hidden, vocab_size, cutoffs)
    return FullSoftmax(hidden, vocab_size, tied)
