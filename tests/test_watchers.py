"""What a run shows while it trains (training/watchers.py): --sample-every samples, --keep-checkpoints,
--tensorboard, and that none of them changes what is trained."""

from __future__ import annotations

import hashlib
import json
import os
import signal
from pathlib import Path

import pytest
import torch

import charrnn
from charrnn.errors import Interrupted
from charrnn.model.checkpoint import load_checkpoint
from charrnn.training.samples import SAMPLE_TEMP, training_sample
from tests.conftest import TINY_MODEL, TINY_TEXT, snapshot

SAMPLING = ["--sample-every", "10", "--sample-length", "40", "--sample-prime", "the "]


def _train(base: Path, name: str, *extra) -> Path:
    from charrnn.cli import main

    corpus = base / "tiny.txt"
    corpus.write_text(TINY_TEXT, encoding="utf-8")
    with pytest.raises(SystemExit) as exc:
        main(["train", str(corpus), "--checkpoint-dir", str(base / "ck"), "--name", name, "--device", "cpu",
              *TINY_MODEL, "--eval-every", "10", *map(str, extra)])
    assert exc.value.code == 0
    return base / "ck" / name


def _weights(path) -> str:
    sd = load_checkpoint(str(path))["model"]
    h = hashlib.sha256()
    for k in sorted(sd):
        h.update(k.encode() + sd[k].numpy().tobytes())
    return h.hexdigest()


def _metrics(run: Path, split: str) -> list[dict]:
    lines = [json.loads(x) for x in (run / "metrics.jsonl").read_text().splitlines()]
    return [r for r in lines if r["split"] == split]


@pytest.fixture(scope="module")
def watched(tmp_path_factory, one_thread):
    """A run with samples every 10 steps and the 2 latest evaluated checkpoints kept, its stderr."""
    base = tmp_path_factory.mktemp("watched")
    import contextlib
    import io

    err = io.StringIO()
    with contextlib.redirect_stderr(err):
        run = _train(base, "w", "--max-steps", 40, "--keep-checkpoints", 2, *SAMPLING)
    return run, err.getvalue()


def test_samples_are_in_the_log_printed_and_the_model_text_at_that_step(watched):
    run, err = watched
    samples = _metrics(run, "sample")
    assert [r["step"] for r in samples] == [10, 20, 30, 40]
    assert all(r["prime"] == "the " and r["temp"] == SAMPLE_TEMP and r["text"].startswith("the ") for r in samples)
    for r in samples:  # printed under the evaluation of the same step
        assert f"--- sample at step {r['step']} (val loss" in err
        assert r["text"].rstrip("\n") in err
    # the logged text is the kept checkpoint's own sample: same prime, length, seed (the run's) and temperature
    for r in samples[-2:]:
        (ckpt,) = run.glob(f"step-{r['step']}-val-*.pt")
        model = charrnn.load(ckpt, device="cpu")
        again = model.sample("the ", length=40, temp=SAMPLE_TEMP, seed=1337, precision="fp32")
        assert again == r["text"]


def test_successive_samples_share_their_seed(tmp_path, one_thread):
    """The same weights give the same sample twice; the global RNG and train mode are left alone."""
    from charrnn.model.network import ModelConfig, RNNLM
    from charrnn.data.tokenizers import fit_tokenizer
    from charrnn.settings import make_config

    cfg = make_config(corpus=str(tmp_path / "x.txt"), hidden=16, emb=8, layers=1, sample_every=5, sample_length=30)
    tok = fit_tokenizer("char", TINY_TEXT)
    model = RNNLM(ModelConfig.from_settings(cfg, tok.vocab_size))
    model.train()
    torch.manual_seed(3)
    before = torch.get_rng_state()
    a = training_sample(model, tok, cfg, torch.device("cpu"))
    b = training_sample(model, tok, cfg, torch.device("cpu"))
    assert a == b and len(a["text"]) > 0
    assert model.training
    assert torch.equal(torch.get_rng_state(), before)
    assert "_charrnn_steppers" not in model.__dict__


def test_sampling_does_not_change_training_and_resume_stays_exact(watched, tmp_path, one_thread):
    """The same steps with and without --sample-every give the same weights, bit for bit; so does a run
    resumed half way with --sample-every on, and its log holds the same samples."""
    run, _ = watched
    plain = _train(tmp_path, "plain", "--max-steps", 40)
    assert _weights(plain / "last.pt") == _weights(run / "last.pt")
    corpus = tmp_path / "tiny.txt"

    def interrupt(rec):  # Ctrl-C at step 20: last.pt is saved there and the run stops
        if rec["step"] == 20:
            os.kill(os.getpid(), signal.SIGINT)

    with pytest.raises(Interrupted):
        charrnn.train(corpus, checkpoint_dir=tmp_path / "ck", name="half", device="cpu", layers=1, hidden=32, emb=16,
                      batch_size=4, seq_len=16, precision="fp32", eval_every=10, save_every=20, log_every=10,
                      max_steps=40, sample_every=10, sample_length=40, sample_prime="the ", keep_checkpoints=2,
                      on_eval=interrupt, verbose=False, progress=False)
    half = tmp_path / "ck" / "half"
    assert load_checkpoint(str(half / "last.pt"))["train_state"]["step"] == 20
    charrnn.resume(half, verbose=False, progress=False)
    assert _weights(half / "last.pt") == _weights(run / "last.pt")
    assert [r["text"] for r in _metrics(half, "sample")] == [r["text"] for r in _metrics(run, "sample")]


def test_keep_checkpoints_keeps_the_latest_evaluated_ones(watched, cli):
    run, _ = watched
    val = {r["step"]: r["loss"] for r in _metrics(run, "val")}
    kept = sorted(p.name for p in run.glob("step-*.pt"))
    assert kept == sorted(f"step-{s}-val-{val[s]:.4f}.pt" for s in (30, 40))
    for name in kept:  # loadable wherever a checkpoint is taken
        assert cli("eval", run / name, "--json", "--device", "cpu").code == 0
        assert cli("sample", run / name, "--length", "5", "--seed", "1").code == 0
    step40 = load_checkpoint(str(next(run.glob("step-40-*.pt"))))
    assert step40["train_state"]["step"] == 40
    r = cli("runs", run, "--json")
    files = [f["file"] for f in json.loads(r.out)["checkpoints"]]
    assert files == ["best.pt", "last.pt", *kept]
    assert all(name in cli("runs", run).out for name in kept)


def test_resume_removes_checkpoints_kept_after_its_position(tmp_path, one_thread):
    run = _train(tmp_path, "k", "--max-steps", 20, "--keep-checkpoints", 3)
    stale = run / "step-90-val-1.0000.pt"  # left by steps the resumed run trains again
    stale.write_bytes(b"x")
    charrnn.resume(run, max_steps=30, verbose=False, progress=False)
    assert sorted(p.name for p in run.glob("step-*.pt")) == sorted(
        p.name for p in run.glob("step-[123]0-val-*.pt"))
    assert not stale.exists() and len(list(run.glob("step-*.pt"))) == 3


@pytest.mark.parametrize("value", ["0", "-2"])
def test_keep_checkpoints_must_be_positive(cli, tmp_path, value):
    corpus = tmp_path / "c.txt"
    corpus.write_text(TINY_TEXT, encoding="utf-8")
    r = cli("train", corpus, "--checkpoint-dir", tmp_path / "ck", "--keep-checkpoints", value)
    assert r.code != 0 and r.err.startswith("error: --keep-checkpoints must be a positive integer")
    assert len(r.err.strip().splitlines()) == 1 and not (tmp_path / "ck").exists()


def test_tensorboard_without_the_extra_says_the_pip_command(cli, tmp_path, monkeypatch):
    monkeypatch.setattr("charrnn.settings.run.installed", lambda name: False)
    corpus = tmp_path / "c.txt"
    corpus.write_text(TINY_TEXT, encoding="utf-8")
    before = snapshot(tmp_path)
    r = cli("train", corpus, "--checkpoint-dir", tmp_path / "ck", "--tensorboard")
    assert r.code != 0 and len(r.err.strip().splitlines()) == 1
    assert "pip install 'charrnn[tensorboard]'" in r.err
    assert snapshot(tmp_path) == before and not (tmp_path / "ck").exists()


def test_tensorboard_scalars_are_the_logged_metrics_across_a_resume(tmp_path, one_thread):
    pytest.importorskip("tensorboard", reason="tensorboard is not installed (pip install 'charrnn[tensorboard]')")
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    run = _train(tmp_path, "tb", "--max-steps", 40, "--tensorboard", "--keep-checkpoints", 4, *SAMPLING)
    # as if killed just after saving step 20 with the events of steps 21-40 written: resume from there
    (run / "last.pt").write_bytes(next(run.glob("step-20-val-*.pt")).read_bytes())
    charrnn.resume(run, verbose=False, progress=False)
    acc = EventAccumulator(str(run / "tensorboard"), size_guidance={"scalars": 0, "tensors": 0})
    acc.Reload()
    tags = set(acc.Tags()["scalars"])
    assert tags == {"train/loss", "train/bpc", "train/lr", "train/grad_norm", "train/tok_s", "val/loss", "val/bpc"}
    for split, keys in (("train", ("loss", "bpc", "lr", "grad_norm", "tok_s")), ("val", ("loss", "bpc"))):
        logged = [r for r in _metrics(run, split) if "scope" not in r]
        for k in keys:
            events = acc.Scalars(f"{split}/{k}")
            assert [e.step for e in events] == [r["step"] for r in logged]
            for e, r in zip(events, logged):
                # TensorBoard stores float32: the logged value rounded once to 24 significant bits
                assert abs(e.value - r[k]) <= abs(r[k]) * 2.0 ** -24
    # the reader purges scalars only; of a step's texts written twice (before and after the resume) the later counts
    texts = {t.step: t.tensor_proto.string_val[0].decode() for t in acc.Tensors("sample/text_summary")}
    logged = {r["step"]: "    " + r["text"].replace("\n", "\n    ") for r in _metrics(run, "sample")}
    assert texts == logged and sorted(texts) == [10, 20, 30, 40]


def test_run_settings_are_recorded(watched):
    cfg = json.loads((watched[0] / "config.json").read_text())
    assert (cfg["sample_every"], cfg["sample_length"], cfg["sample_prime"], cfg["keep_checkpoints"],
            cfg["tensorboard"]) == (10, 40, "the ", 2, False)
    assert os.path.isfile(watched[0] / "best.pt")
