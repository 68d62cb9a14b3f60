"""charrnn inspect and charrnn runs: parameter counts in closed form, the training summary, the runs table."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from charrnn.model.checkpoint import load_checkpoint
from charrnn.system.fileio import atomic_save
from charrnn.model.sizes import rnn_layer_count
from charrnn.reports.inspect import parameter_table, regularisers
from charrnn.reports.runs import list_runs
from charrnn.model.network import REGULARISERS
from charrnn.settings import TRAIN, by_name
from tests.conftest import TINY_TEXT, train_tiny, make_model

pytestmark = pytest.mark.usefixtures("one_thread")  # tiny models: one thread, no stalls

ROOT = Path(__file__).resolve().parents[1]
GATES = {"lstm": 4, "gru": 3, "rnn": 1}


def _layer_numel(model, i):
    return sum(p.numel() for n, p in model.rnn.named_parameters() if n.endswith(f"_l{i}"))


@pytest.mark.parametrize("cell", ["lstm", "gru", "rnn"])
@pytest.mark.parametrize("emb,hidden,layers", [(5, 7, 1), (16, 32, 2), (64, 24, 3), (3, 3, 4)])
def test_layer_counts_match_the_closed_form_and_the_real_tensors(cell, emb, hidden, layers):
    model = make_model(11, cell=cell, layers=layers, hidden=hidden, emb=emb, dropout=0.0)
    rows = parameter_table(model)
    rnn_rows = [r for r in rows if r["part"].startswith(cell)]
    assert len(rnn_rows) == layers
    for i, r in enumerate(rnn_rows):
        m = emb if i == 0 else hidden
        textbook_plus_bias = GATES[cell] * (m * hidden + hidden * hidden + hidden) + GATES[cell] * hidden
        assert r["count"] == _layer_numel(model, i) == r["closed_form"] == rnn_layer_count(cell, m, hidden)
        assert r["count"] == textbook_plus_bias  # one extra bias vector per gate over the textbook formula
        assert "2h" in r["formula"]
    assert rows[0]["count"] == 11 * emb == model.embed.weight.numel()
    assert rows[-1]["count"] == hidden * 11 + 11
    assert sum(r["count"] for r in rows) == model.num_parameters()


def test_tied_and_adaptive_heads_count_their_parts():
    tied = make_model(13, layers=1, hidden=8, emb=8, dropout=0.1, tie_weights=True)
    rows = parameter_table(tied)
    assert rows[-1]["count"] == rows[-1]["closed_form"] == 13  # the bias; the weight is the embedding's
    assert sum(r["count"] for r in rows) == tied.num_parameters()

    ada = make_model(3000, layers=1, hidden=64, emb=16, dropout=0.1, head="adaptive", cutoffs=(512, 2048))
    rows = parameter_table(ada)
    head = [r for r in rows if r["part"].startswith("adaptive")]
    assert len(head) == 3  # shortlist + 2 tail clusters
    assert head[0]["count"] == head[0]["closed_form"] == (64 + 1) * (512 + 2)
    assert head[1]["count"] == head[1]["closed_form"] == 64 * 16 + 16 * (2048 - 512)
    assert head[2]["count"] == head[2]["closed_form"] == 64 * 4 + 4 * (3000 - 2048)
    assert sum(r["count"] for r in rows) == ada.num_parameters()


def test_inspect_report_and_json(cli, trained_run):
    run_dir, corpus, ckdir = trained_run
    r = cli("inspect", run_dir)
    assert r.code == 0, r.err
    assert "lstm 1x32, embedding 16" in r.out
    assert "4(mh + h² + 2h)" in r.out and "4(16·32 + 32² + 2·32)" in r.out
    assert "b_ih and b_hh" in r.out and "4(mh + h² + h)" in r.out
    assert "= model.num_parameters" in r.out
    assert "steps       40" in r.out and "bits/char" in r.out

    r = cli("inspect", "--json", "--checkpoint-dir", ckdir)  # the latest run
    info = json.loads(r.out)
    p = info["parameters"]
    assert p["total"] == p["num_parameters"] == sum(row["count"] for row in p["rows"])
    assert info["model"] == {"cell": "lstm", "layers": 1, "hidden": 32, "embedding": 16,
                             "vocab_size": len(set(TINY_TEXT)), "head": "full", "cutoffs": [], "tie_weights": False,
                             "dropout": 0.1, **{k: by_name(TRAIN)[k].default for k in REGULARISERS}, "attention": 0}
    assert info["tokenizer"]["kind"] == "char" and info["tokenizer"]["preview"].startswith("\\n␣!")
    tr = info["training"]
    assert tr["steps"] == 40 and tr["tokens"] == 40 * 4 * 16 and tr["best_step"] in (20, 40)
    vals = [m["bpc"] for m in map(json.loads, (run_dir / "metrics.jsonl").open()) if m["split"] == "val"]
    assert tr["best_val_bpc"] == pytest.approx(min(vals), rel=1e-5)  # metrics.jsonl rounds to 6 digits
    assert tr["corpus"] == str(corpus) and tr["init_from"] is None


def test_inspect_shows_resolved_device_and_where_the_run_came_from(cli, run_copy, tmp_path):
    run_dir, _, _ = run_copy
    ckpt = load_checkpoint(str(run_dir / "last.pt"))
    ckpt["train_state"].update(device="cpu", precision="fp32")
    ckpt["run_config"]["init_from"] = "checkpoints/base/best.pt"
    atomic_save(ckpt, str(tmp_path / "x.pt"))
    r = cli("inspect", tmp_path / "x.pt")
    assert r.code == 0, r.err
    assert "device      cpu, fp32\n" in r.out
    assert "started from checkpoints/base/best.pt" in r.out
    r = cli("inspect", run_dir / "last.pt")  # today's checkpoints record what "auto" resolved to
    assert "device      cpu, fp32\n" in r.out and "does not record what they resolved to" not in r.out


def test_inspect_errors_are_one_line(cli, tmp_path):
    r = cli("inspect", tmp_path / "nope.pt")
    assert r.code == 2 and r.err.count("\n") == 1 and "does not exist" in r.err
    r = cli("inspect", "--checkpoint-dir", tmp_path)
    assert r.code == 2 and "no trained model found" in r.err


def test_runs_lists_runs_newest_first(cli, run_copy, tmp_path):
    run_dir, _, ckdir = run_copy
    old = run_dir.stat().st_mtime - 3600
    for f in run_dir.iterdir():
        os.utime(f, (old, old))
    train_tiny(tmp_path, "second", "--max-steps", "20")  # same checkpoint dir, newer
    (ckdir / "empty").mkdir()  # no checkpoint: not a run
    r = cli("runs", "--checkpoint-dir", ckdir)
    assert r.code == 0, r.err
    lines = r.out.splitlines()
    assert lines[0].split() == ["name", "corpus", "tokenizer", "model", "steps", "time", "best", "val", "bpc",
                                "updated"]
    assert [ln.split()[0] for ln in lines[1:]] == ["second", "tiny"]
    assert "second.txt" in lines[1] and "lstm 1x32" in lines[1] and " 20 " in lines[1]

    runs = json.loads(cli("runs", "--json", "--checkpoint-dir", ckdir).out)
    assert [r["name"] for r in runs] == ["second", "tiny"]  # .cache and empty/ are skipped
    assert runs[1]["steps"] == 40 and runs[1]["tokenizer"] == "char" and runs[1]["corpus"] == "tiny.txt"
    vals = [json.loads(x) for x in (run_dir / "metrics.jsonl").open()]
    assert runs[1]["best_val_bpc"] == min(v["bpc"] for v in vals if v["split"] == "val")
    assert runs[0]["updated_ts"] > runs[1]["updated_ts"]


def test_runs_falls_back_to_the_checkpoint_without_metrics(run_copy):
    run_dir, _, ckdir = run_copy
    (run_dir / "metrics.jsonl").unlink()
    (run_dir / "config.json").unlink()
    (row,) = list_runs(str(ckdir))
    assert row["steps"] == 40 and row["model"] == "lstm 1x32" and row["best_val_bpc"] is not None


def test_runs_without_a_checkpoint_dir(cli, tmp_path):
    r = cli("runs", "--checkpoint-dir", tmp_path / "none")
    assert r.code == 2 and "does not exist" in r.err
    r = cli("runs", "--checkpoint-dir", tmp_path)
    assert r.code == 0 and "no runs under" in r.err


@pytest.mark.integration
def test_the_see_commands_do_not_import_torch():
    code = "import sys, charrnn.cli.see; assert 'torch' not in sys.modules, 'torch imported'"
    subprocess.run([sys.executable, "-c", code], cwd=ROOT, check=True)
    code = "import sys, charrnn.reports.inspect, charrnn.reports.plot as p; print('ok')"  # importable; plot needs torch via fileio
    assert subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True).stdout == "ok\n"


def test_closed_form_flags_a_model_that_is_not_what_its_config_says():
    model = make_model(5, layers=1, hidden=4, emb=3, dropout=0.1)
    model.rnn.bias_hh_l0 = torch.nn.Parameter(torch.zeros(4))  # a damaged model: wrong bias size
    row = parameter_table(model)[1]
    assert row["count"] != row["closed_form"]


def test_report_names_the_regularisers_beyond_dropout():
    assert regularisers({"locked_dropout": False, "weight_drop": 0.0, "embed_dropout": 0.0}) == ""
    assert regularisers({}) == ""  # a report made from an older checkpoint's summary
    assert (regularisers({"locked_dropout": True, "weight_drop": 0.25, "embed_dropout": 0.1})
            == " (locked), weight drop 0.25, embedding dropout 0.1")
