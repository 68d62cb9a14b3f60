"""Records sampling (generation/novelty.py, cli/samples.py): one record per line, the "in_train" mark
checked against the training split's own records, --novel, and labelled --temp lists."""

from __future__ import annotations

import json

import numpy as np
import pytest

import charrnn
from charrnn.data.records import split_records
from charrnn.generation.novelty import TrainRecords, summary
from tests.conftest import snapshot

SEEN = ["a", "b", "aa", "ab", "ba"]  # every record of the corpus is one of these (so all are in train)


@pytest.fixture(scope="module")
def records_run(tmp_path_factory, one_thread):
    base = tmp_path_factory.mktemp("novelty")
    corpus = base / "short.txt"
    rng = np.random.default_rng(0)
    corpus.write_text("".join(SEEN[i] + "\n" for i in rng.integers(0, len(SEEN), 600)), encoding="utf-8")
    charrnn.train(corpus, checkpoint_dir=base / "ck", name="r", records="\n", max_steps=20, device="cpu",
                  verbose=False, progress=False, layers=1, hidden=32, emb=16, batch_size=4, seq_len=16,
                  precision="fp32", eval_every=20, log_every=10)
    return base / "ck" / "r", corpus


def _json(out: str) -> list[dict]:
    return [json.loads(x) for x in out.splitlines()]


def test_train_records_hold_exactly_the_training_split(records_run):
    run, corpus = records_run
    recs = charrnn.load(run, device="cpu").train_records()
    train, _, _ = split_records(corpus.read_text(encoding="utf-8"), "\n", 0.05, 0.05)  # the run's split
    assert recs.count == train.count("\n") and 500 < recs.count < 600
    assert all(r in recs for r in SEEN)
    assert all(r not in recs for r in ("", "bb", "aaa", "a\n", "abc"))


def test_json_marks_each_sample_against_the_training_records(records_run, cli):
    run, _ = records_run
    r = cli("sample", run, "--num-samples", "40", "--seed", "3", "--temp", "1.5", "--json")
    assert r.code == 0
    lines = _json(r.out)
    assert len(lines) == 40
    assert [ln["in_train"] for ln in lines] == [ln["text"] in SEEN for ln in lines]
    assert {True, False} <= {ln["in_train"] for ln in lines}  # both kinds occur at this seed
    k = sum(not ln["in_train"] for ln in lines)
    assert r.err.strip().splitlines()[-1] == f"40 samples: {k} new, {40 - k} in train"


def test_records_print_one_per_line_and_novel_keeps_the_new_ones(records_run, cli):
    run, _ = records_run
    every = _json(cli("sample", run, "--num-samples", "40", "--seed", "3", "--temp", "1.5", "--json").out)
    plain = cli("sample", run, "--num-samples", "40", "--seed", "3", "--temp", "1.5")
    assert plain.out == "".join(ln["text"] + "\n" for ln in every)  # no separator lines, one record each
    novel = cli("sample", run, "--num-samples", "40", "--seed", "3", "--temp", "1.5", "--novel")
    assert novel.out == "".join(ln["text"] + "\n" for ln in every if not ln["in_train"])
    assert novel.err.strip().splitlines()[-1] == summary([ln["in_train"] for ln in every])
    model = charrnn.load(run, device="cpu")
    new = model.sample(num_samples=40, seed=3, temp=1.5, novel=True)
    assert new == [ln["text"] for ln in every if not ln["in_train"]]


def test_a_primed_record_starts_with_the_prime_not_the_separator(records_run, cli):
    run, _ = records_run
    lines = _json(cli("sample", run, "--prime", "a", "--num-samples", "6", "--seed", "2", "--json").out)
    assert all(ln["text"].startswith("a") for ln in lines)
    assert [ln["in_train"] for ln in lines] == [ln["text"] in SEEN for ln in lines]


def test_novel_on_a_run_without_records_is_one_line(trained_run, cli, tmp_path):
    run_dir, _, _ = trained_run
    before = snapshot(run_dir)
    r = cli("sample", run_dir, "--novel", "--num-samples", "3")
    assert r.code != 0 and r.out == "" and len(r.err.strip().splitlines()) == 1
    assert "not trained with --records" in r.err
    assert snapshot(run_dir) == before
    with pytest.raises(charrnn.CharrnnError, match="not trained with --records"):
        charrnn.load(run_dir, device="cpu").sample(novel=True)


def test_temperature_list_labels_each_sample(trained_run, cli):
    run_dir, _, _ = trained_run
    r = cli("sample", run_dir, "--temp", "0.5,1.0", "--length", "20", "--seed", "4")
    assert r.code == 0
    model = charrnn.load(run_dir, device="cpu")
    want = "".join(f"--- temp {t:g} ---\n" + model.sample(length=20, seed=4, temp=t) + "\n" for t in (0.5, 1.0))
    assert r.out == want
    js = _json(cli("sample", run_dir, "--temp", "0,1", "--num-samples", "2", "--length", "10", "--json").out)
    assert [(ln["temp"], ln["index"]) for ln in js] == [(0.0, 1), (0.0, 2), (1.0, 1), (1.0, 2)]
    assert js[0]["text"] == js[1]["text"]  # temperature 0 is greedy


@pytest.mark.parametrize("value, says", [("0.5,,1", "is not a comma list of numbers"), ("0.5,x", "'x' is not a number"),
                                         ("0.5,-1", "must be 0 (greedy) or positive")])
def test_a_malformed_temperature_list_is_one_line(trained_run, cli, value, says):
    run_dir, _, _ = trained_run
    r = cli("sample", run_dir, "--temp", value)
    assert r.code != 0 and r.out == "" and says in r.err and len(r.err.strip().splitlines()) == 1


def test_train_records_are_hashes_of_whole_records():
    recs = TrainRecords(["ab", "b", "ab"])
    assert recs.count == 3 and len(recs.hashes) == 2
    assert "ab" in recs and "b" in recs and "a" not in recs and "abb" not in recs
