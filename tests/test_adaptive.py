"""The adaptive-softmax output layer for large vocabularies (thousands of Chinese characters)."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from charrnn.model.checkpoint import load_checkpoint
from charrnn.model.network import resolve_head
from tests.conftest import TINY_MODEL, make_model


def test_auto_head_is_adaptive_only_for_big_vocabularies():
    assert resolve_head("auto", 65, False) == ("full", ())
    assert resolve_head("auto", 1024, False) == ("full", ())
    assert resolve_head("auto", 3636, False) == ("adaptive", (512, 2048))
    assert resolve_head("auto", 3636, True) == ("full", ())  # tied weights need the full softmax
    assert resolve_head("full", 5000, False) == ("full", ())


@pytest.fixture
def model():
    V = 1500
    kind, cutoffs = resolve_head("adaptive", V, False)
    m = make_model(V, "lstm", 1, 32, 16, seed=0, dropout=0.0, tie_weights=False, head=kind, cutoffs=cutoffs)
    counts = np.random.default_rng(0).zipf(1.3, size=20000) % V
    m.init_output_bias(np.bincount(counts, minlength=V))
    return m.eval()


@pytest.mark.numerics
def test_adaptive_forward_is_a_normalised_distribution_over_token_ids(model):
    x = torch.randint(0, 1500, (3, 7))
    logp, _ = model(x)
    assert logp.shape == (3, 7, 1500)
    # a softmax's float32 probabilities (eps 1.2e-7) over 1,500 tokens sum to 1 within ~1500 eps = 2e-4 worst
    # case, ~sqrt(1500) eps = 5e-6 typically: 1e-4; a head that forgets a cluster loses >= 1e-2 of the mass
    assert torch.allclose(logp.exp().sum(-1), torch.ones(3, 7), atol=1e-4)


@pytest.mark.numerics
def test_adaptive_training_loss_equals_cross_entropy_of_its_log_probs(model):
    x, y = torch.randint(0, 1500, (2, 9)), torch.randint(0, 1500, (2, 9))
    with torch.no_grad():
        loss, _ = model.loss(x, y)
        logp, _ = model(x)
    # the same per-token terms, averaged by two kernels in another order: float32 relative error ~sqrt(18) eps,
    # well under 1e-5
    assert float(loss) == pytest.approx(float(F.cross_entropy(logp.reshape(-1, 1500), y.reshape(-1))), rel=1e-5)


@pytest.mark.numerics
def test_adaptive_init_starts_at_the_unigram_distribution():
    V = 1500
    kind, cutoffs = resolve_head("adaptive", V, False)
    m = make_model(V, "lstm", 1, 32, 16, dropout=0.0, tie_weights=False, head=kind, cutoffs=cutoffs)
    with torch.no_grad():  # silence the hidden state so only the biases speak
        for p in m.head.parameters():
            if p.dim() == 2:
                p.zero_()
    counts = np.arange(V)[::-1] + 1.0
    m.init_output_bias(counts)
    with torch.no_grad():
        logp, _ = m.eval()(torch.zeros(1, 1, dtype=torch.long))
    p = torch.from_numpy((counts + 1) / (counts + 1).sum()).float()
    # shortlist tokens get their unigram probability exactly; tail clusters get their total mass
    top = torch.argsort(p, descending=True)[:512]
    # log(count) biases put through float32 logsumexp over 1,500 tokens and exp: each step ~1e-6 relative, 1e-3
    # is the model's stated precision of 'exactly' (the unigram probabilities differ from each other by >=
    # 1/1500 relative)
    assert torch.allclose(logp[0, 0, top].exp(), p[top], rtol=1e-3)
    assert float(logp[0, 0].exp().sum()) == pytest.approx(1.0, abs=1e-4)


@pytest.mark.slow
def test_chinese_corpus_trains_adaptive_samples_and_evaluates(tmp_path, cli):
    rng = np.random.default_rng(1)
    alphabet = [chr(0x4E00 + i) for i in range(1500)]
    ranks = np.minimum(rng.zipf(1.2, size=30000), 1500) - 1
    lines = ["".join(alphabet[r] for r in ranks[i:i + 20]) + "。\n" for i in range(0, 30000, 20)]
    corpus = tmp_path / "zh.txt"
    corpus.write_text("".join(lines), encoding="utf-8")
    r = cli("train", corpus, "--checkpoint-dir", tmp_path / "ck", *TINY_MODEL, "--max-steps", 20)
    assert r.code == 0, r.err
    assert "adaptive softmax" in r.err
    ckpt = load_checkpoint(str(tmp_path / "ck" / "zh" / "best.pt"))
    assert ckpt["model_config"]["head"] == "adaptive"
    assert sorted(ckpt["model"]["head.rank"].tolist()) == list(range(ckpt["model_config"]["vocab_size"]))
    r = cli("sample", tmp_path / "ck" / "zh", "--prime", alphabet[0], "--length", 30, "--seed", 0)
    assert r.code == 0 and r.out.startswith(alphabet[0]) and len(r.out.strip()) == 31
    r = cli("eval", tmp_path / "ck" / "zh", "--json")
    assert r.code == 0, r.err
    m = json.loads(r.out)
    assert 0 < m["loss"] < np.log(1501)
