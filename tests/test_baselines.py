"""charrnn eval's yardsticks (evaluation/baselines.py): gzip -9, bz2 -9, xz -9 and order-0 bits/char of
the very text the model is scored on, checked against the compressors called directly."""

from __future__ import annotations

import bz2
import gzip
import json
import lzma
import math
from collections import Counter

import charrnn
import charrnn.evaluation.baselines as baselines
from charrnn.data.corpus import split_text
from charrnn.evaluation.baselines import compression_baselines, order0_bits


def _direct(data: bytes) -> dict:
    chars = len(data.decode("utf-8"))
    counts = Counter(data.decode("utf-8"))
    return {"gzip": 8 * len(gzip.compress(data, 9, mtime=0)) / chars, "bz2": 8 * len(bz2.compress(data, 9)) / chars,
            "xz": 8 * len(lzma.compress(data, preset=9)) / chars,
            "order0": -sum(c / chars * math.log2(c / chars) for c in counts.values())}


def _close(a: dict, b: dict) -> None:
    for k in ("gzip", "bz2", "xz"):
        assert a[k] == b[k]  # the same byte counts over the same character count: equal, not near
    # order-0: two summation orders of ~50 terms of size <= 8 bits: a few ulps of 8
    assert abs(a["order0"] - b["order0"]) <= 1e-12


def test_eval_file_reports_the_compressors_of_that_file(trained_run, cli):
    run_dir, corpus, _ = trained_run
    r = cli("eval", run_dir, "--file", corpus, "--json", "--device", "cpu")
    assert r.code == 0
    b = json.loads(r.out)["baselines"]
    _close(b, _direct(corpus.read_bytes()))
    assert b["sampled"] is False and b["chars"] == len(corpus.read_text(encoding="utf-8"))
    text = cli("eval", run_dir, "--file", corpus, "--device", "cpu").out
    assert "baselines on the whole text:" in text
    for label, key in (("gzip -9", "gzip"), ("bz2 -9", "bz2"), ("xz -9", "xz"), ("order-0", "order0")):
        assert f"{label:<12}{b[key]:.4f} bits/char" in text


def test_the_run_split_is_measured_on_its_own_text(trained_run):
    run_dir, corpus, _ = trained_run
    m = charrnn.load(run_dir, device="cpu").evaluate(split="val")
    _, val, _ = split_text(corpus.read_text(encoding="utf-8"), 0.05, 0.05)  # the run's default fractions
    assert len(val) == m["chars"] + 1  # the first character is context only
    _close(m["baselines"], _direct(val.encode("utf-8")))


def test_a_long_text_is_measured_on_a_bounded_sample_and_says_so(trained_run, cli, monkeypatch):
    run_dir, corpus, _ = trained_run
    monkeypatch.setattr(baselines, "BOUND", 1000)
    monkeypatch.setattr(compression_baselines, "__defaults__", (1000,))
    r = cli("eval", run_dir, "--file", corpus, "--device", "cpu")
    data = corpus.read_bytes()[:1000].decode("utf-8", "ignore").encode("utf-8")
    assert f"baselines on the first {len(data):,} bytes" in r.out
    b = json.loads(cli("eval", run_dir, "--file", corpus, "--json", "--device", "cpu").out)["baselines"]
    assert b["sampled"] is True and b["bytes"] == len(data) <= 1000
    _close(b, _direct(data))


def test_order0_of_a_uniform_text_is_log2_of_its_alphabet():
    assert order0_bits("abcd" * 100) == 2.0
    assert order0_bits("aaaa") == 0.0


def test_no_baselines_skips_the_compressors(trained_run, cli):
    run_dir, _, _ = trained_run
    r = cli("eval", run_dir, "--device", "cpu", "--json", "--no-baselines")
    assert r.code == 0 and "baselines" not in json.loads(r.out)
    r = cli("eval", run_dir, "--device", "cpu", "--json")
    assert r.code == 0 and set(json.loads(r.out)["baselines"]) >= {"gzip", "bz2", "xz"}
