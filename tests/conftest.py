"""Shared fixtures and helpers: an in-process CLI runner, tiny corpora, tiny models, a tiny trained run,
and what several test modules check with (snapshots, weight hashes, waiting for a file, a NaN loss)."""

from __future__ import annotations

import hashlib
import math
import os
import shutil
import time
from dataclasses import dataclass
from pathlib import Path

import pytest
import torch

from charrnn.cli import main
from charrnn.model.checkpoint import load_checkpoint
from charrnn.model.network import ModelConfig, RNNLM

torch.set_num_threads(min(2, os.cpu_count() or 1))

SHARED = Path(__file__).resolve().parents[2] / "shared" / "corpora"

# A short English + Chinese text; tiny models learn it in seconds.
TINY_TEXT = (
    "the quick brown fox jumps over the lazy dog.\n"
    "pack my box with five dozen liquor jugs!\n"
    "床前明月光，疑是地上霜。举头望明月，低头思故乡。\n"
) * 40


@dataclass
class Result:
    code: int
    out: str
    err: str


@pytest.fixture
def cli(capsys):
    """Run ``charrnn ARGS`` in-process; returns exit code, stdout and stderr."""

    def run(*args) -> Result:
        capsys.readouterr()
        with pytest.raises(SystemExit) as exc:
            main([str(a) for a in args])
        code = exc.value.code
        captured = capsys.readouterr()
        return Result(code if isinstance(code, int) else (0 if code is None else 1), captured.out, captured.err)

    return run


TINY_MODEL = ["--layers", "1", "--hidden", "32", "--emb", "16", "--batch-size", "4", "--seq-len", "16",
              "--precision", "fp32", "--eval-every", "20", "--save-every", "20", "--log-every", "10"]


@pytest.fixture(scope="module")
def one_thread():
    """Tiny models: one intra-op thread avoids oversubscription stalls on a busy 2-core machine."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


def train_tiny(base: Path, name: str, *extra: str) -> tuple[Path, Path]:
    """Train a tiny char model on TINY_TEXT in-process: (corpus_path, checkpoint_dir)."""
    corpus = base / f"{name}.txt"
    corpus.write_text(TINY_TEXT, encoding="utf-8")
    ckdir = base / "checkpoints"
    with pytest.raises(SystemExit) as exc:
        main(["train", str(corpus), "--checkpoint-dir", str(ckdir), *TINY_MODEL, *extra])
    assert exc.value.code == 0
    return corpus, ckdir


@pytest.fixture(scope="session")
def trained_run(tmp_path_factory):
    """A tiny char model trained for a few steps: (run_dir, corpus_path, checkpoint_dir)."""
    corpus, ckdir = train_tiny(tmp_path_factory.mktemp("trained"), "tiny", "--max-steps", "40")
    return ckdir / "tiny", corpus, ckdir


@pytest.fixture
def run_copy(trained_run, tmp_path):
    """A private copy of the trained run (tests may damage it): (run_dir, corpus, checkpoint_dir)."""
    run_dir, corpus, _ = trained_run
    ckdir = tmp_path / "checkpoints"
    shutil.copytree(run_dir, ckdir / "tiny")
    return ckdir / "tiny", corpus, ckdir


def snapshot(directory: Path) -> dict:
    """Bytes of every file under a directory, to prove nothing was changed."""
    return {str(p.relative_to(directory)): p.read_bytes() for p in sorted(directory.rglob("*")) if p.is_file()}


# ----------------------------------------------------------------------------- corpora

@pytest.fixture
def tiny_corpus(tmp_path) -> Path:
    """TINY_TEXT written to tmp_path/tiny.txt (runs trained on it are named "tiny")."""
    p = tmp_path / "tiny.txt"
    p.write_text(TINY_TEXT, encoding="utf-8")
    return p


@pytest.fixture(scope="module")
def corpus(tmp_path_factory) -> Path:
    """TINY_TEXT three times in text.txt, shared by one module's runs (a module may define its own)."""
    p = tmp_path_factory.mktemp("corpus") / "text.txt"
    p.write_text(TINY_TEXT * 3, encoding="utf-8")
    return p


# English and Chinese sentences, longer than TINY_TEXT: evaluation and scoring tests read it in windows.
_EN = ("the quick brown fox jumps over the lazy dog. pack my box with five dozen liquor jugs!\n"
       "how vexingly quick daft zebras jump; sphinx of black quartz, judge my vow.\n")
_ZH = "床前明月光，疑是地上霜。举头望明月，低头思故乡。今天天气很好，我们去公园散步吧。\n"
CONTEXT_TEXT = (_EN + _ZH) * 30


# ----------------------------------------------------------------------------- models

def make_model(vocab: int, cell: str = "lstm", layers: int = 1, hidden: int = 32, emb: int = 16, seed: int = 0,
               dropout: float = 0.0, **config) -> RNNLM:
    """A tiny untrained RNNLM in eval mode, its weights fixed by SEED."""
    torch.manual_seed(seed)
    return RNNLM(ModelConfig(vocab_size=vocab, cell=cell, layers=layers, hidden=hidden, emb=emb, dropout=dropout,
                             **config)).eval()


def context_model(V: int, seed: int = 0, hidden: int = 32, sharpen: float = 6.0, memory: float = 2.0) -> RNNLM:
    """A random tiny model whose predictions depend strongly on context.

    The head is scaled up (peaked predictions) and so are the recurrent weights (a long memory),
    so resetting or not carrying the state changes the loss visibly.
    """
    model = make_model(V, layers=2, hidden=hidden, emb=16, seed=seed)
    with torch.no_grad():
        model.head.weight.mul_(sharpen)
        model.head.bias.normal_(0, 1.0)
        for name, p in model.rnn.named_parameters():
            if name.startswith("weight_hh"):
                p.mul_(memory)
    return model


# ----------------------------------------------------------------------------- checks

def weights_hash(path) -> str:
    """SHA-256 of a checkpoint's weights (names and bytes): equal hashes are bit-identical weights."""
    sd = load_checkpoint(str(path))["model"]
    h = hashlib.sha256()
    for k in sorted(sd):
        h.update(k.encode())
        h.update(sd[k].numpy().tobytes())
    return h.hexdigest()


def wait_for(path, proc, timeout=60.0) -> bool:
    """Wait until ``path`` exists (True) or the process ends (False)."""
    t0 = time.time()
    while not os.path.exists(path):
        if proc.poll() is not None:
            return False
        if time.time() - t0 > timeout:
            raise AssertionError(f"{path} did not appear within {timeout}s")
        time.sleep(0.02)
    return True


def nan_after(monkeypatch, n: int) -> None:
    """Every loss after the first N calls of cross_entropy is NaN."""
    import torch.nn.functional as F

    real, calls = F.cross_entropy, {"n": 0}

    def fake(*a, **k):
        calls["n"] += 1
        loss = real(*a, **k)
        return loss * float("nan") if calls["n"] > n else loss

    monkeypatch.setattr(F, "cross_entropy", fake)


def fading_model(V: int, hidden: int = 16, forget: float = 0.95, sharpen: float = 10.0) -> RNNLM:
    """A one-layer LSTM whose memory provably fades: no recurrent weights, and a constant forget gate f,
    so its cell state is a decaying sum of input features (|c| <= 1 / (1 - f)) and two states that
    read the same text drift together by a factor f per token. Its head is sharp: context matters."""
    model = make_model(V, "lstm", layers=1, hidden=hidden, emb=16, seed=0, dropout=0.0)
    with torch.no_grad():
        model.head.weight.mul_(sharpen)
        model.rnn.weight_hh_l0.zero_()
        model.rnn.bias_hh_l0.zero_()
        model.rnn.weight_ih_l0[hidden:2 * hidden].zero_()  # gates i, f, g, o: f does not depend on the input
        model.rnn.bias_ih_l0.normal_(0, 1.0)
        model.rnn.bias_ih_l0[hidden:2 * hidden].fill_(math.log(forget / (1 - forget)))
    return model.eval()


# -- the --max-time planner with a fake probe (test_budget.py, test_budget_small.py)

FAKE_COMPUTE_MODEL = {"E": 0.5, "A": 0.5, "alpha": 0.5, "B": 10.0, "beta": 0.5, "C": 1.0, "gamma": 0.1}  # made up
TINY_CANDIDATES = [(1, 16, 4, 16), (1, 32, 4, 16), (2, 32, 8, 16)]


def install_fake_probe(monkeypatch, seconds_per_unit: float) -> list:
    """probe.measure answers from a speed table (no timing): a step costs seconds_per_unit x hidden^2 x
    layers x batch x window. The tiny candidates and the made-up compute model are used; every call is
    recorded as (layers, hidden, batch, window) in the list returned."""
    from charrnn.training import budget, probe

    calls = []

    def measure(mc, batch, window, eval_streams, device, precision, deadline=None):
        calls.append((mc.layers, mc.hidden, batch, window))
        step_s = seconds_per_unit * mc.hidden ** 2 * mc.layers * batch * window
        return {"step_s": step_s, "tok_s": batch * window / step_s, "eval_tok_s": 1e6, "measured": "test"}

    monkeypatch.setattr(probe, "measure", measure)
    monkeypatch.setitem(budget.CANDIDATES, "cpu", TINY_CANDIDATES)
    monkeypatch.setattr(budget, "COMPUTE_MODEL", FAKE_COMPUTE_MODEL)
    return calls
