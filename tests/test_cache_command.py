"""`charrnn cache` and the eval-tokens bound, end to end: a run leaves its encoded corpus in the
cache; the cache lists it, prunes and clears; bounded periodic evaluations and a full final one."""

from __future__ import annotations

import json
import os

import numpy as np

from charrnn.data import store as corpus_store
from charrnn.data.corpus import load_corpus
from charrnn.system import rundir
from tests.conftest import TINY_TEXT, train_tiny


def test_cache_lists_prunes_and_clears(tmp_path, cli, one_thread):
    corpus, ckdir = train_tiny(tmp_path, "tiny", "--max-steps", "2")
    r = cli("cache", "--checkpoint-dir", ckdir)
    assert r.code == 0 and "tiny.txt" in r.out and "1 entries" in r.out
    listed = json.loads(cli("cache", "--checkpoint-dir", ckdir, "--json").out)
    assert len(listed["entries"]) == 1 and listed["entries"][0]["source"].endswith("tiny.txt")
    assert listed["entries"][0]["tokens"] == len(TINY_TEXT)  # char tokens, all three splits
    # a second corpus; pruning to less than both keeps only the most recent
    other = tmp_path / "other.txt"
    other.write_text(TINY_TEXT.upper(), encoding="utf-8")
    load_corpus(str(other), cache_dir=str(ckdir / ".cache"))
    cap = 1.5 * max(e["bytes"] for e in corpus_store.entries(str(ckdir / ".cache"))) / 1e9  # room for one
    r = cli("cache", "--checkpoint-dir", ckdir, "--prune", "--cache-max-gb", f"{cap:.12f}")
    assert r.code == 0 and "evicted" in r.err
    left = corpus_store.entries(str(ckdir / ".cache"))
    assert [e["source"] for e in left] == [str(other)]
    r = cli("cache", "--checkpoint-dir", ckdir, "--clear")
    assert r.code == 0 and "removed 1" in r.err
    assert "no encoded corpora" in cli("cache", "--checkpoint-dir", ckdir).out
    # the run still resumes: its corpus is encoded again
    r = cli("train", "--resume", ckdir / "tiny", "--max-steps", "3")
    assert r.code == 0, r.err


def test_cache_refuses_contradictions(tmp_path, cli):
    r = cli("cache", "--checkpoint-dir", tmp_path, "--clear", "--prune")
    assert r.code != 0 and r.err.count("\n") == 1 and "--clear and --prune" in r.err


def test_eval_tokens_bounds_evaluations_and_best_pt_is_scored_on_all(tmp_path, one_thread):
    corpus, ckdir = train_tiny(tmp_path, "tiny", "--max-steps", "40", "--eval-tokens", "64", "--val-frac", "0.2")
    lines = [json.loads(x) for x in (ckdir / "tiny" / "metrics.jsonl").read_text().splitlines()]
    vals = [x for x in lines if x["split"] == "val"]
    periodic, last, final = vals[:-2], vals[-2], vals[-1]
    c = load_corpus(str(corpus), val_frac=0.2, cache_dir=str(ckdir / ".cache"))
    assert len(periodic) == 1 and all(v["tokens"] <= 64 and "scope" not in v for v in periodic)
    # the last evaluation scores the periodic ones' tokens, so best.pt is chosen like with like
    assert last["step"] == 40 and last["tokens"] == periodic[0]["tokens"] and "scope" not in last
    assert final["scope"] == "all" and final["tokens"] == len(c.val.ids) - 1
    best = min(periodic + [last], key=lambda v: v["loss"])
    assert final["step"] == best["step"]  # best.pt, then scored on the whole split
    assert isinstance(c.train.ids, np.memmap)
    assert os.path.exists(ckdir / ".cache" / c.digest / "meta.pt")


def test_an_evaluation_on_fewer_tokens_neither_replaces_best_pt_nor_counts(tmp_path, one_thread, monkeypatch,
                                                                          capsys):
    """An evaluation --max-time cut short scores other tokens than best.pt's: its figure, however low, is
    not compared with best.pt's (like with like), and it does not count towards the early stop."""
    from charrnn.training import validation

    real, calls = validation.evaluate_split, []

    def fake(*args, **kw):  # the real figures, except that the third evaluation scored half the tokens
        m = real(*args, **kw)
        calls.append(m)
        return {**m, "loss": 0.01, "tokens": m["tokens"] // 2} if len(calls) == 3 else m

    monkeypatch.setattr(validation, "evaluate_split", fake)
    _, ckdir = train_tiny(tmp_path, "tiny", "--max-steps", "30", "--eval-every", "10", "--eval-tokens", "64",
                          "--val-frac", "0.2", "--patience", "1")
    vals = [json.loads(x) for x in (ckdir / "tiny" / "metrics.jsonl").read_text().splitlines()]
    vals = [v for v in vals if v["split"] == "val"]
    assert [v["step"] for v in vals[:3]] == [10, 20, 30] and vals[2]["loss"] == 0.01
    cut = f"step 30: val (cut short by --max-time: {vals[2]['tokens']:,} of {vals[0]['tokens']:,} tokens, not compared)"
    assert f"{cut} loss 0.0100" in capsys.readouterr().err  # its line says it is not best.pt's kind of figure
    first_two = min(vals[:2], key=lambda v: v["loss"])
    assert vals[-1]["scope"] == "all" and vals[-1]["step"] == first_two["step"]  # best.pt: not step 30's
    # runs, inspect and the benchmarks read the same figure from metrics.jsonl
    assert rundir.best_from_metrics(str(ckdir / "tiny")) == vals[-1]
