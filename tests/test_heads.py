"""Both output heads answer the same small interface with the same meaning."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from charrnn.model.heads import AdaptiveSoftmax, FullSoftmax, make_head, resolve_head


def _head(kind):
    torch.manual_seed(0)
    V = 1300
    head = make_head(kind, 24, V, resolve_head(kind, V, False)[1])
    head.init_weights()
    head.init_bias(np.random.default_rng(0).integers(0, 100, V))
    return head, V


@pytest.mark.numerics
@pytest.mark.parametrize("kind", ["full", "adaptive"])
def test_token_nll_and_loss_agree_with_log_probs(kind):
    head, V = _head(kind)
    h, y = torch.randn(3, 5, 24), torch.randint(0, V, (3, 5))
    with torch.no_grad():
        logp = head.log_probs(h)
        nll = head.token_nll(h, y)
        loss = head.loss(h, y)
    # softmax probabilities in float32 sum to 1 within ~V eps (V <= 1,000: 1.2e-4 worst case, typically 4e-6)
    assert logp.shape == (3, 5, V) and torch.allclose(logp.exp().sum(-1), torch.ones(3, 5), atol=1e-4)
    # token_nll and log_probs compute the same logsumexp by different kernels (gather first or after): float32,
    # a few eps of values ~ln V, far under 1e-5
    torch.testing.assert_close(nll, -logp.gather(-1, y.unsqueeze(-1)).squeeze(-1), atol=1e-5, rtol=1e-5)
    # a mean of 15 float32 terms in another order: relative error <= 15 eps = 2e-6
    assert float(loss) == pytest.approx(float(nll.mean()), rel=1e-5)


@pytest.mark.parametrize("kind", ["full", "adaptive"])
def test_padding_targets_score_zero(kind):
    head, V = _head(kind)
    h, y = torch.randn(2, 4, 24), torch.randint(0, V, (2, 4))
    y[1, 2:] = -100
    with torch.no_grad():
        nll = head.token_nll(h, y)
    assert torch.all(nll[1, 2:] == 0) and torch.all(nll[0] > 0)


@pytest.mark.numerics
@pytest.mark.parametrize("kind", ["full", "adaptive"])
def test_init_bias_starts_at_the_unigram_distribution_for_frequent_tokens(kind):
    head, V = _head(kind)
    counts = np.arange(V)[::-1].astype(float)
    with torch.no_grad():
        for p in head.parameters():
            if p.dim() == 2:
                p.zero_()
        head.init_bias(counts)
        logp = head.log_probs(torch.zeros(1, 24))[0]
    p = (counts + 1) / (counts + 1).sum()
    # float64 probabilities against float32 log-softmax of log-count biases: relative error ~V eps (1e-4) from
    # the logsumexp; 1e-3 leaves 10x, neighbouring tokens' probabilities differ by >= 1/V relative
    torch.testing.assert_close(logp[:100].exp(), torch.from_numpy(p[:100]).float(), rtol=1e-3, atol=1e-7)


def test_make_head_kinds_and_tied_weights():
    emb = torch.nn.Embedding(50, 16)
    tied = make_head("full", 16, 50, tied=emb)
    assert isinstance(tied, FullSoftmax) and tied.weight is emb.weight
    tied.init_weights()
    assert tied.weight is emb.weight  # init leaves a tied weight alone
    assert isinstance(make_head("adaptive", 16, 2000, (512,)), AdaptiveSoftmax)
