"""One grammar for every command that reads a model (MODEL first: a run name, a run directory or a
.pt file; none: the latest run), and one best validation figure reported alike everywhere."""

from __future__ import annotations

import contextlib
import io
import json
import re
import shutil

import pytest

import charrnn
from charrnn.system import rundir
from tests.conftest import TINY_MODEL, train_tiny

# --eval-tokens below the validation split (TINY_TEXT's 5% is ~220 tokens): periodic evaluations are
# estimates and the run's figure is best.pt scored on the whole split at the end
SETTINGS = [*TINY_MODEL, "--max-steps", "20", "--eval-tokens", "64", "--eval-every", "10"]


@pytest.fixture(scope="module")
def runs(tmp_path_factory, one_thread):
    """Two runs, 'alpha' (trained by the CLI) then 'beta' (by the API, so the latest): a name that
    works is looked up, not the latest run. Returns (checkpoint_dir, corpus, alpha's train stderr, beta)."""
    base = tmp_path_factory.mktemp("grammar")
    err = io.StringIO()
    with contextlib.redirect_stderr(err):  # no progress bar (not a terminal): the evaluation lines
        corpus, ckdir = train_tiny(base, "alpha", *SETTINGS)
    beta = charrnn.train(corpus, checkpoint_dir=str(ckdir), name="beta", layers=1, hidden=48, emb=16, batch_size=4,
                         seq_len=16, precision="fp32", eval_every=20, save_every=20, log_every=10, max_steps=20,
                         eval_tokens=64, progress=False, verbose=False)
    return ckdir, corpus, err.getvalue(), beta


def test_a_run_name_works_in_every_command(runs, cli, tmp_path, monkeypatch):
    ckdir, corpus, _, _ = runs
    monkeypatch.chdir(tmp_path)  # the name is no path from here
    alpha = ckdir / "alpha"
    r = cli("sample", "alpha", "--checkpoint-dir", ckdir, "--length", "5", "--seed", "1")
    assert r.code == 0 and f"sampling from {alpha / 'best.pt'}" in r.err
    r = cli("eval", "alpha", "--checkpoint-dir", ckdir, "--device", "cpu", "--json")
    assert r.code == 0 and json.loads(r.out)["checkpoint"] == str(alpha / "best.pt")
    r = cli("score", "alpha", corpus, "--checkpoint-dir", ckdir, "--device", "cpu")
    assert r.code == 0 and f"with {alpha / 'best.pt'}" in r.err
    r = cli("inspect", "alpha", "--checkpoint-dir", ckdir, "--json")
    assert r.code == 0 and json.loads(r.out)["checkpoint"] == str(alpha / "last.pt")
    r = cli("viz", "alpha", "--checkpoint-dir", ckdir, "--text", "the quick fox", "-o", tmp_path / "v.html")
    assert r.code == 0 and f"from {alpha / 'best.pt'}" in r.err
    pytest.importorskip("matplotlib")
    r = cli("plot", "alpha", "--checkpoint-dir", ckdir)
    assert r.code == 0 and (alpha / "plot.png").is_file()
    assert charrnn.load("alpha", checkpoint_dir=ckdir, device="cpu").path == str(alpha / "best.pt")


def test_every_form_names_the_same_checkpoint(runs):
    ckdir, _, _, _ = runs
    alpha = str(ckdir / "alpha")
    for arg in ("alpha", alpha, f"{alpha}/best.pt", "alpha/best.pt"):
        assert rundir.resolve_checkpoint(arg, str(ckdir)) == f"{alpha}/best.pt"
    assert rundir.resolve_checkpoint(None, str(ckdir)) == str(ckdir / "beta" / "best.pt")  # the latest


def test_a_train_result_or_a_model_is_a_model_argument_too(runs):
    """What train() and load() return goes wherever a model is taken, as in charrnn.inspect(run)."""
    ckdir, _, _, beta = runs
    model = charrnn.load(beta, device="cpu")
    assert model.path == str(ckdir / "beta" / "best.pt")
    assert charrnn.load(model, device="cpu").path == model.path
    assert charrnn.inspect(beta)["checkpoint"] == str(ckdir / "beta" / "last.pt")


def test_score_takes_the_model_first_and_a_lone_file_with_the_latest_run(runs, cli, tmp_path):
    ckdir, _, _, _ = runs
    f = tmp_path / "two.txt"
    f.write_text("the lazy dog.\npack my box\n", encoding="utf-8")
    named = cli("score", "alpha", f, "--checkpoint-dir", ckdir, "--device", "cpu", "--json")
    assert named.code == 0 and [json.loads(x)["line"] for x in named.out.splitlines()] == [1, 2]
    latest = cli("score", f, "--checkpoint-dir", ckdir, "--device", "cpu", "--json")
    assert latest.code == 0 and f"with {ckdir / 'beta' / 'best.pt'}" in latest.err
    assert latest.out != named.out  # another model (beta is wider), so other numbers
    several = cli("score", "alpha", f, f, "--checkpoint-dir", ckdir, "--device", "cpu", "--json")
    rows = [json.loads(x) for x in several.out.splitlines()]
    assert several.code == 0 and [r["file"] for r in rows] == [str(f)] * 4
    assert [r["nll"] for r in rows] == [json.loads(x)["nll"] for x in named.out.splitlines()] * 2
    r = cli("score", "alpha", "--checkpoint-dir", ckdir)
    assert r.code == 2 and "give the FILE to score after it" in r.err and r.err.count("\n") == 1
    r = cli("score", f, f, "--checkpoint-dir", ckdir)
    assert r.code == 2 and "is a text file, not a model" in r.err and r.err.count("\n") == 1


def test_the_old_checkpoint_option_still_works_with_a_note(runs, cli, tmp_path):
    ckdir, _, _, _ = runs
    f = tmp_path / "one.txt"
    f.write_text("the lazy dog.\n", encoding="utf-8")
    new = cli("score", "alpha", f, "--checkpoint-dir", ckdir, "--device", "cpu", "--json")
    old = cli("score", f, "--checkpoint", ckdir / "alpha", "--device", "cpu", "--json")
    assert old.code == 0 and old.out == new.out
    notes = [line for line in old.err.splitlines() if "deprecated" in line]
    assert len(notes) == 1 and "charrnn score" in notes[0]
    assert "--checkpoint " not in cli("score", "--help").out  # hidden from the help


@pytest.mark.parametrize("command", ["sample", "eval", "score", "inspect", "viz", "plot"])
def test_an_unknown_name_lists_the_runs_in_one_line(runs, cli, command, tmp_path, monkeypatch):
    ckdir, corpus, _, _ = runs
    monkeypatch.chdir(tmp_path)
    extra = {"score": [corpus], "viz": ["--text", "abc"]}.get(command, [])
    r = cli(command, "ctrlc", *extra, "--checkpoint-dir", ckdir)
    assert r.code == 2 and r.out == "" and "Traceback" not in r.err
    assert r.err == f"error: no run or checkpoint 'ctrlc' in '{ckdir}/'; runs: alpha, beta (charrnn runs lists them)\n"


def test_an_unknown_name_in_the_api(runs):
    ckdir, _, _, _ = runs
    with pytest.raises(charrnn.CharrnnError, match=r"no run or checkpoint 'gamma' .*runs: alpha, beta"):
        charrnn.load("gamma", checkpoint_dir=ckdir)


def _figures(cli, ckdir, name: str) -> dict:
    """The best validation bpc as eval (of the run's val split), runs and inspect print it."""
    ev = cli("eval", name, "--checkpoint-dir", ckdir, "--device", "cpu", "--split", "val")
    table = cli("runs", "--checkpoint-dir", ckdir)
    report = cli("inspect", name, "--checkpoint-dir", ckdir)
    assert ev.code == table.code == report.code == 0
    row = next(line for line in table.out.splitlines() if line.startswith(name + " "))
    return {"eval": re.search(r"bits/char\s+(\d+\.\d{4})\n", ev.out).group(1),
            "runs": re.search(r"\s(\d+\.\d{4})\s+\d{4}-", row).group(1),
            "inspect": re.search(r"best val\s+(\d+\.\d{4}) bits/char", report.out).group(1)}


def test_one_best_validation_figure_everywhere(runs, cli):
    ckdir, _, train_err, beta = runs
    full = [r for r in rundir.read_metrics(ckdir / "alpha") if r.get("scope") == "all"]
    assert len(full) == 1  # the run's figure: best.pt on the whole split, written at the end
    assert re.search(r"^about \d+ (s|min) for 20 steps of lstm 1x32, batch 4 x 16 .*; use --max-time SECONDS to "
                     r"bound it$", train_err, re.M)  # no --max-time: the expected duration, said once
    lines = [line for line in train_err.splitlines() if line.startswith("step ")]
    # both evaluations are estimates on the same 64 tokens; then best.pt alone is scored on the whole split
    assert len(lines) == 2 and all("val~ (est. on 64 tokens)" in line for line in lines)
    said = re.search(r"best val: loss \d+\.\d{4} nats/token, (\d+\.\d{4}) bits/char", train_err).group(1)
    assert said == f"{full[0]['bpc']:.4f}"
    assert _figures(cli, ckdir, "alpha") == {"eval": said, "runs": said, "inspect": said}
    # the API's TrainResult.best is the same figure of its run
    assert beta.best.get("scope") == "all"
    assert _figures(cli, ckdir, "beta") == dict.fromkeys(("eval", "runs", "inspect"), f"{beta.best['bpc']:.4f}")


def test_the_full_figure_wins_even_when_an_estimate_was_lower(tmp_path):
    """runs once took the lowest val line, estimates included; the best evaluation's full score counts."""
    run = tmp_path / "r"
    run.mkdir()
    for rec in ({"step": 10, "split": "val", "loss": 3.0, "bpc": 4.4887},
                {"step": 20, "split": "val", "loss": 3.2, "bpc": 4.6},
                {"step": 10, "split": "val", "scope": "all", "loss": 3.1, "bpc": 4.5111}):
        rundir.append_metrics(str(run), rec)
    assert rundir.best_from_metrics(str(run))["bpc"] == 4.5111
    assert rundir.full_best(str(run), {"step": 20, "bpc": 4.6})["bpc"] == 4.6  # no full line for step 20


def test_a_figure_max_time_left_unscored_is_an_estimate_wherever_shown(runs, cli, tmp_path, monkeypatch):
    """When --max-time leaves no time to score best.pt on the whole split, the run's figure is its best
    periodic estimate, written as such ("scope": "estimate") and shown with its mark by runs and inspect."""
    ckdir, _, _, _ = runs
    shutil.copytree(ckdir / "alpha", tmp_path / "ck" / "alpha")
    run = tmp_path / "ck" / "alpha"
    kept = [r for r in rundir.read_metrics(run) if r.get("scope") != "all"]
    (run / "metrics.jsonl").write_text("".join(json.dumps(r) + "\n" for r in kept))
    best = rundir.best_from_metrics(run)
    rundir.append_metrics(str(run), {**best, "scope": "estimate"})
    assert rundir.best_from_metrics(run)["scope"] == "estimate"
    r = cli("runs", "--checkpoint-dir", tmp_path / "ck")
    assert r.code == 0 and f"{best['bpc']:.4f}~" in r.out and "~ an estimate on part of the validation" in r.out
    r = cli("inspect", "alpha", "--checkpoint-dir", tmp_path / "ck")
    assert r.code == 0 and f"{best['bpc']:.4f} bits/char" in r.out and f"est. on {best['tokens']:,} tokens" in r.out


def test_resume_takes_a_run_name_and_a_finished_run_keeps_its_figure(runs, cli, tmp_path):
    ckdir, _, train_err, _ = runs
    shutil.copytree(ckdir / "alpha", tmp_path / "ck" / "alpha")  # resume rewrites metrics.jsonl and config.json
    r = cli("train", "--resume", "alpha", "--checkpoint-dir", tmp_path / "ck")
    assert r.code == 0 and "nothing to train" in r.err
    said = re.search(r"best val: .*, (\d+\.\d{4}) bits/char", train_err).group(1)
    assert re.search(r"best val: .*, (\d+\.\d{4}) bits/char", r.err).group(1) == said
