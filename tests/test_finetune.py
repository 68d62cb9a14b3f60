"""Fine-tuning (--init-from): a new run from a trained model's weights and tokenizer (finetune.py)."""

from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path

import numpy as np
import pytest
import torch

import charrnn
from charrnn.model.checkpoint import load_checkpoint, model_from_checkpoint
from charrnn.evaluation.evaluate import evaluate_split
from charrnn.training.finetune import start_model
from charrnn.model.heads import _smoothed_logp
from charrnn.system.rundir import read_metrics
from charrnn.settings import config_from_saved
from charrnn.data.tokenizers import adapt_vocab
from charrnn.training.schedule import lr_at
from tests.conftest import TINY_TEXT, snapshot

TINY = dict(batch_size=4, seq_len=16, precision="fp32", eval_every=10, save_every=10, log_every=5, device="cpu")
ZH = "".join(chr(0x4E00 + j) for j in range(640)) + "".join(chr(0x4E00 + j % 97) for j in range(2000))  # 640 chars
CPU = torch.device("cpu")


@pytest.fixture(scope="module")
def sources(tmp_path_factory, one_thread):
    """Three small trained models: full softmax, tied weights, adaptive softmax (with its corpus)."""
    base = tmp_path_factory.mktemp("sources")
    (base / "tiny.txt").write_text(TINY_TEXT, encoding="utf-8")
    (base / "zh.txt").write_text((ZH + "\n") * 4, encoding="utf-8")
    ck = base / "ck"
    kw = dict(checkpoint_dir=ck, max_steps=30, verbose=False, layers=1, **TINY)
    runs = {"full": charrnn.train(base / "tiny.txt", name="full", hidden=32, emb=16, **kw),
            "tied": charrnn.train(base / "tiny.txt", name="tied", hidden=32, emb=32, tie_weights=True, **kw),
            "adaptive": charrnn.train(base / "zh.txt", name="adaptive", hidden=32, emb=16, head="adaptive", **kw)}
    return {k: (Path(r.run_dir), base / ("zh.txt" if k == "adaptive" else "tiny.txt")) for k, r in runs.items()}


def _loss(model, tok, text: str) -> float:
    ids = tok.encode(text)
    return evaluate_split(model.eval(), tok, ids, len(text), len(text.encode("utf-8")), CPU)["loss"]


@pytest.mark.slow
@pytest.mark.numerics
@pytest.mark.parametrize("kind", ["full", "tied", "adaptive"])
def test_extended_vocabulary_starts_at_the_source_models_loss(sources, kind):
    """Before any step, the extended model scores text made of known characters as the source did.

    The new characters' output units get, on average over the new text's hidden states, their
    smoothed unigram frequency p_c there; so every old character's probability shrinks by the factor
    1 / (1 + sum p_c) and the loss grows by about log(1 + sum p_c) ~ sum p_c. The new text below has
    5 occurrences of 3 new characters in ~9,000, so sum p_c ~ 1e-3 of the probability and the loss
    (~3 nats) moves by ~1e-3 nats: within 1e-3 relative, and at most 2 sum p_c.
    """
    run_dir, corpus = sources[kind]
    ckpt = load_checkpoint(str(run_dir / "best.pt"))
    source, old_tok = model_from_checkpoint(ckpt)
    known = corpus.read_text(encoding="utf-8")
    new_text = known + known[: len(known) // 2] + "@@§½@§"
    tok, skip = adapt_vocab(old_tok, old_tok.unknown_chars(new_text), "extend")
    text = new_text
    assert not skip and tok.vocab_size == old_tok.vocab_size + 3 and tok.decode(tok.encode(text)) == text
    ids = tok.encode(text)
    model = start_model(ckpt, tok, ids, dropout=0.0)
    new = torch.tensor([i for i, c in enumerate(tok.codepoints) if chr(int(c)) in "@§½"])
    mass = float(_smoothed_logp(np.bincount(ids, minlength=tok.vocab_size))[new].exp().sum())
    before, after = _loss(source, old_tok, known), _loss(model, tok, known)
    assert 0 <= after - before <= 2 * mass, (before, after, mass)
    assert (after - before) / before < 1e-3
    old_pos = torch.from_numpy(np.searchsorted(tok.codepoints, old_tok.codepoints))
    assert torch.equal(model.embed.weight[old_pos], source.embed.weight)  # known characters keep their rows
    probs = model(torch.from_numpy(ids[:200]).long()[None])[0].exp()[0]
    # float32 softmax over the vocabulary sums to 1 within ~V eps (V < 200: 2.4e-5)
    assert torch.allclose(probs.sum(-1), torch.ones(200), atol=1e-4)
    assert (probs[:, new].sum(-1) < 20 * mass).all()  # new characters start rare everywhere


@pytest.mark.numerics
def test_finetune_run_from_a_run_directory(trained_run, tmp_path, cli, one_thread):
    run_dir, corpus, _ = trained_run
    before = snapshot(run_dir)
    new = tmp_path / "new.txt"
    new.write_text(TINY_TEXT.replace("fox", "f@x") + "Ω\n", encoding="utf-8")
    ck = tmp_path / "ck"
    r = cli("train", new, "--init-from", run_dir, "--extend-vocab", "--checkpoint-dir", ck, "--max-steps", 6,
            "--batch-size", 4, "--seq-len", 16, "--eval-every", 3, "--log-every", 2, "--precision", "fp32")
    assert r.code == 0, r.err
    assert snapshot(run_dir) == before  # the source run is only read
    assert "extending the vocabulary with 2 character(s) the model never saw: '@', 'Ω'" in r.err
    assert f"fine-tuning {os.path.abspath(run_dir / 'best.pt')}" in r.err
    cfg = json.loads((ck / "new" / "config.json").read_text())
    assert cfg["init_from"] == os.path.abspath(run_dir / "best.pt")
    assert (cfg["layers"], cfg["hidden"], cfg["emb"], cfg["head"]) == (1, 32, 16, "full")  # not the defaults
    assert cfg["lr"] == 3e-3 and cfg["extend_vocab"] is True  # a new run's default (a lower one did worse)
    last = load_checkpoint(str(ck / "new" / "last.pt"))
    assert last["train_state"]["step"] == 6  # a new run: steps, warmup and schedule from zero
    assert last["model_config"]["vocab_size"] == load_checkpoint(str(run_dir / "best.pt"))["model_config"][
        "vocab_size"] + 2
    lrs = [m["lr"] for m in read_metrics(str(ck / "new")) if m["split"] == "train"]
    want = lr_at(config_from_saved(cfg), 1, 1 / 6)  # step 2 of 6: warming up afresh
    assert lrs[0] == pytest.approx(want, rel=1e-3) and want < 3e-3 * 3 / 30
    out = cli("inspect", ck / "new")
    assert out.code == 0 and f"started from {os.path.abspath(run_dir / 'best.pt')}" in out.out
    # the fine-tuned model samples and evaluates like any other
    assert cli("sample", ck / "new", "--length", 20, "--prime", "f@").code == 0
    assert cli("eval", ck / "new", "--device", "cpu").code == 0


def test_explicit_settings_are_kept_unless_they_contradict_the_architecture(trained_run, tmp_path, one_thread):
    run_dir, corpus, _ = trained_run
    kw = dict(checkpoint_dir=tmp_path / "ck", max_steps=2, verbose=False, init_from=run_dir, **TINY)
    r = charrnn.train(corpus, lr=5e-3, dropout=0.0, hidden=32, head="auto", cell="lstm", **kw)
    cfg = json.loads((Path(r.run_dir) / "config.json").read_text())
    assert (cfg["lr"], cfg["dropout"], cfg["hidden"], cfg["head"]) == (5e-3, 0.0, 32, "full")
    with pytest.raises(charrnn.CharrnnError, match=r"--tie-weights on contradicts the model being fine-tuned "
                                                   r"\(tie_weights off in .*best.pt\)"):
        charrnn.train(corpus, tie_weights=True, **kw)
    with pytest.raises(charrnn.CharrnnError, match="--cell gru contradicts .* drop --cell"):
        charrnn.train(corpus, cell="gru", **kw)
    with pytest.raises(charrnn.CharrnnError, match="--init-from starts a new run and cannot be combined with "
                                                   "--resume"):
        charrnn.resume(r.run_dir, init_from=run_dir)


def test_skip_unknown_drops_the_characters_and_keeps_the_tokenizer(trained_run, tmp_path, cli, one_thread):
    run_dir, corpus, _ = trained_run
    new = tmp_path / "other.txt"
    new.write_text(TINY_TEXT.replace("dog", "d#g") * 2, encoding="utf-8")
    r = charrnn.train(new, init_from=run_dir, skip_unknown=True, checkpoint_dir=tmp_path / "ck", max_steps=3,
                      verbose=False, **TINY)
    src = charrnn.load(run_dir, device="cpu")
    assert np.array_equal(r.model.tokenizer.codepoints, src.tokenizer.codepoints)
    m = r.model.evaluate(precision="fp32")  # the run's own val split, without the dropped '#'
    assert m["chars"] == m["tokens"] and m["loss"] == pytest.approx(r.last_val["loss"], rel=1e-5)
    out = cli("eval", r.run_dir, "--split", "test", "--device", "cpu")
    assert out.code == 0, out.err


@pytest.mark.parametrize("tokenizer", ["byte", "bpe"])
def test_byte_and_subword_models_keep_their_tokenizer(tmp_path, tokenizer, one_thread):
    corpus = tmp_path / "src.txt"
    corpus.write_text(TINY_TEXT, encoding="utf-8")
    kw = dict(checkpoint_dir=tmp_path / "ck", verbose=False, layers=1, hidden=16, emb=8, **TINY)
    src = charrnn.train(corpus, tokenizer=tokenizer, vocab_size=300, max_steps=2, **kw)
    new = tmp_path / "new.txt"
    new.write_text("Ωμέγα @ ünïcödé ✓\n" * 200, encoding="utf-8")
    for extra in ({}, {"extend_vocab": True}):  # nothing is unknown: --extend-vocab has nothing to do
        r = charrnn.train(new, init_from=src.run_dir, max_steps=2, **kw, **extra)
        a, b = load_checkpoint(str(Path(r.run_dir) / "best.pt")), load_checkpoint(src.best_path)
        assert a["run_config"]["tokenizer"] == tokenizer and a["model_config"] == b["model_config"]
        assert all(torch.equal(a["tokenizer"][k], b["tokenizer"][k]) if isinstance(b["tokenizer"][k], torch.Tensor)
                   else a["tokenizer"][k] == b["tokenizer"][k] for k in b["tokenizer"])


class _Stop(Exception):
    pass


def _weights(path) -> str:
    sd = load_checkpoint(str(path))["model"]
    return hashlib.sha256(b"".join(sd[k].numpy().tobytes() for k in sorted(sd))).hexdigest()


@pytest.mark.numerics
def test_a_finetuned_run_resumes_bit_exactly(trained_run, tmp_path, one_thread):
    run_dir, _, _ = trained_run
    new = tmp_path / "new.txt"
    new.write_text(TINY_TEXT.replace("box", "b%x"), encoding="utf-8")
    kw = dict(checkpoint_dir=tmp_path / "ck", init_from=run_dir, extend_vocab=True, max_steps=18, verbose=False,
              **dict(TINY, save_every=6, log_every=7, eval_every=100))
    charrnn.train(new, name="a", **kw)

    def stop(rec):
        raise _Stop

    with pytest.raises(_Stop):
        charrnn.train(new, name="b", on_log=stop, **kw)
    assert load_checkpoint(str(tmp_path / "ck" / "b" / "last.pt"))["train_state"]["step"] == 6
    b = charrnn.resume(tmp_path / "ck" / "b", verbose=False)
    assert b.steps == 18
    assert _weights(tmp_path / "ck" / "a" / "last.pt") == _weights(tmp_path / "ck" / "b" / "last.pt")
