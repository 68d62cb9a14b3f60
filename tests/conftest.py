"""Shared fixtures: an in-process CLI runner and a tiny trained run."""

from __future__ import annotations

import os
import shutil
from dataclasses import dataclass
from pathlib import Path

import pytest
import torch

from charrnn.cli import main

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
