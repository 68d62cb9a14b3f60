"""End to end through the command line: train -> sample -> eval, for every tokenizer."""

from __future__ import annotations

import json
import math
import os
import shutil
import subprocess
import sys

import pytest

from charrnn.model.checkpoint import load_checkpoint
from charrnn.data.corpus import pystdlib_files
from charrnn.settings import TOKENIZERS
from charrnn.data.tokenizers import tokenizer_from_state
from tests.conftest import SHARED, TINY_MODEL, TINY_TEXT


def last_val(run_dir) -> dict:
    with open(run_dir / "metrics.jsonl") as f:
        rows = [json.loads(line) for line in f]
    return [r for r in rows if r["split"] == "val"][-1]


@pytest.mark.integration
def test_installed_console_script_train_sample_eval(tmp_path):
    exe = shutil.which("charrnn")
    if exe is None:
        pytest.skip("the charrnn console script is not installed (pip install .)")
    corpus = tmp_path / "story.txt"
    corpus.write_text(TINY_TEXT, encoding="utf-8")
    env = dict(os.environ, PYTHONUNBUFFERED="1")
    run = lambda *a: subprocess.run([exe, *map(str, a)], cwd=tmp_path, env=env, capture_output=True,  # noqa: E731
                                    text=True, timeout=300)
    r = run("train", corpus, *TINY_MODEL, "--max-steps", 30)
    assert r.returncode == 0, r.stderr
    assert "parameters" in r.stderr and "best val" in r.stderr
    assert (tmp_path / "checkpoints" / "story" / "best.pt").is_file()
    assert json.loads((tmp_path / "checkpoints" / "story" / "config.json").read_text())["max_steps"] == 30
    r = run("sample", "--length", 50, "--seed", 3)
    assert r.returncode == 0, r.stderr
    assert len(r.stdout.rstrip("\n")) >= 40 and "sampling from" in r.stderr
    r = run("eval", "--json")
    assert r.returncode == 0, r.stderr
    m = json.loads(r.stdout)
    # the training log keeps 6 significant digits; eval runs in a fresh process whose kernels may block the
    # float32 sums differently (~1e-6)
    assert m["bpc"] == pytest.approx(last_val(tmp_path / "checkpoints" / "story")["bpc"], rel=1e-4)


@pytest.mark.slow
@pytest.mark.parametrize("tokenizer", TOKENIZERS)
def test_every_tokenizer_trains_samples_and_evaluates(tokenizer, tmp_path, cli):
    corpus = tmp_path / "mixed.txt"
    corpus.write_text(TINY_TEXT * 2, encoding="utf-8")
    ck = tmp_path / "ck"
    r = cli("train", corpus, "--checkpoint-dir", ck, "--tokenizer", tokenizer, "--vocab-size", 300,
            *TINY_MODEL, "--max-steps", 25)
    assert r.code == 0, r.err
    run_dir = ck / "mixed"
    # the checkpoint alone is enough: move it away from its run and corpus
    alone = tmp_path / "elsewhere" / "model.pt"
    alone.parent.mkdir()
    shutil.copy(run_dir / "best.pt", alone)
    assert load_checkpoint(str(alone))["tokenizer"]["kind"] == tokenizer
    r = cli("sample", alone, "--prime", "床前", "--length", 40, "--seed", 1)
    assert r.code == 0, r.err
    assert r.out.startswith("床前") and "\ufffd" not in r.out[:2]
    text = "the lazy dog sleeps.\n疑是地上霜。\n"
    other = tmp_path / "other.txt"
    other.write_text(text, encoding="utf-8")
    r = cli("eval", alone, "--file", other, "--json")
    assert r.code == 0, r.err
    m = json.loads(r.out)
    tok = tokenizer_from_state(load_checkpoint(str(alone))["tokenizer"])
    ids = tok.encode(text)
    assert m["tokenizer"] == tokenizer and m["tokens"] == len(ids) - 1  # every token but the first is scored
    assert m["chars"] == len(text) - len(tok.decode(ids[:1]))
    assert m["bpc"] == pytest.approx(m["loss"] * m["tokens"] / math.log(2) / m["chars"])
    # the run's own validation split: matches the last evaluation in the training log
    r = cli("eval", run_dir / "last.pt", "--json")
    assert r.code == 0, r.err
    # the log's 6-digit rounding plus float32 reordering between the trainer's evaluation and eval's
    assert json.loads(r.out)["bpc"] == pytest.approx(last_val(run_dir)["bpc"], rel=1e-4)


@pytest.mark.slow
def test_same_seed_same_sample_and_greedy_is_deterministic(trained_run, cli):
    run_dir, _, ck = trained_run
    a = cli("sample", run_dir, "--seed", 5, "--length", 80, "--temp", 1.0)
    b = cli("sample", run_dir, "--seed", 5, "--length", 80, "--temp", 1.0)
    c = cli("sample", run_dir, "--seed", 6, "--length", 80, "--temp", 1.0)
    assert a.code == b.code == c.code == 0
    assert a.out == b.out and a.out != c.out
    g1 = cli("sample", run_dir, "--temp", 0, "--length", 60)
    g2 = cli("sample", run_dir, "--temp", 0, "--length", 60)
    assert g1.out == g2.out


def test_sample_defaults_to_latest_run(trained_run, tmp_path, cli, monkeypatch):
    run_dir, corpus, _ = trained_run
    monkeypatch.chdir(tmp_path)
    shutil.copytree(run_dir, tmp_path / "checkpoints" / "old")
    os.utime(tmp_path / "checkpoints" / "old" / "last.pt", (1, 1))
    os.utime(tmp_path / "checkpoints" / "old" / "best.pt", (1, 1))
    shutil.copytree(run_dir, tmp_path / "checkpoints" / "new")
    r = cli("sample", "--length", 10, "--seed", 1)
    assert r.code == 0, r.err
    assert os.path.join("checkpoints", "new", "best.pt") in r.err


@pytest.mark.slow
def test_second_run_gets_its_own_directory_and_test_split_evaluates(tmp_path, cli):
    corpus = tmp_path / "t.txt"
    corpus.write_text(TINY_TEXT, encoding="utf-8")
    for _ in range(2):
        assert cli("train", corpus, "--checkpoint-dir", tmp_path / "ck", *TINY_MODEL, "--max-steps", 3).code == 0
    assert (tmp_path / "ck" / "t" / "best.pt").exists() and (tmp_path / "ck" / "t-2" / "best.pt").exists()
    r = cli("eval", tmp_path / "ck" / "t-2", "--split", "test", "--json")
    assert r.code == 0, r.err
    m = json.loads(r.out)
    assert m["text"].startswith("test split") and m["chars"] == round(len(TINY_TEXT) * 0.05) - 1


def test_val_file_and_chinese_corpus(tmp_path, cli):
    corpus, val = tmp_path / "poems.txt", tmp_path / "val.txt"
    corpus.write_text("床前明月光，疑是地上霜。\n举头望明月，低头思故乡。\n" * 60, encoding="utf-8")
    val.write_text("春眠不觉晓，处处闻啼鸟。\n", encoding="utf-8")  # characters the corpus lacks are fine
    r = cli("train", corpus, "--val-file", val, "--checkpoint-dir", tmp_path / "ck", *TINY_MODEL,
            "--max-steps", 5, "--test-frac", 0)
    assert r.code == 0, r.err
    r = cli("sample", tmp_path / "ck" / "poems", "--prime", "明月", "--length", 20, "--seed", 0)
    assert r.code == 0 and r.out.startswith("明月")
    assert set(r.out.strip()) <= set("床前明月光，疑是地上霜。\n举头望明月低头思故乡春眠不觉晓处闻啼鸟")


@pytest.mark.slow
def test_builtin_pystdlib_corpus(tmp_path, cli):
    assert pystdlib_files(), "no stdlib sources found"
    r = cli("train", "pystdlib", "--checkpoint-dir", tmp_path, *TINY_MODEL, "--max-steps", 2, "--eval-every", 1000)
    assert r.code == 0, r.err
    cfg = json.loads((tmp_path / "pystdlib" / "config.json").read_text())
    assert cfg["corpus"] == "pystdlib"
    r = cli("sample", tmp_path / "pystdlib", "--prime", "def ", "--length", 5, "--seed", 0)
    assert r.code == 0 and r.out.startswith("def ")


@pytest.mark.slow
def test_tinyshakespeare_split_is_nanogpts(tmp_path, cli):
    path = SHARED / "tinyshakespeare.txt"
    if not path.exists():
        pytest.skip(f"{path} is absent (the shared corpora live in ../shared/corpora)")
    r = cli("train", path, "--val-frac", 0.1, "--test-frac", 0, "--checkpoint-dir", tmp_path, *TINY_MODEL,
            "--max-steps", 2)
    assert r.code == 0, r.err
    assert "1,003,854 train / 111,540 val tokens" in r.err  # nanoGPT: first 90% train, last 10% val
    ckpt = load_checkpoint(str(tmp_path / "tinyshakespeare" / "last.pt"))
    assert ckpt["model_config"]["vocab_size"] == 65


@pytest.mark.integration
def test_python_dash_m_entry_point(tmp_path):
    r = subprocess.run([sys.executable, "-m", "charrnn", "--version"], capture_output=True, text=True, timeout=120)
    assert r.returncode == 0 and "charrnn" in r.stdout


def test_no_arguments_prints_help_and_succeeds(cli):
    r = cli()
    assert r.code == 0 and "charrnn train corpus.txt" in r.out and "error" not in r.err
