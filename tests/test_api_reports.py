"""The CLI as Python calls: charrnn.inspect, runs, plot, corpora, cache, Model.viz, TrainResult.plot
return the data the CLI prints; train(text=...) / train(texts=[...]); an interrupted Python run says
how to resume it from Python."""

from __future__ import annotations

import html
import json
import os
import re
import signal
import subprocess
import sys
from pathlib import Path

import pytest

import charrnn
from charrnn import api
from charrnn.data.records import records_separator
from tests.conftest import TINY_TEXT
from tests.test_plot import make_run
from tests.test_viz import page_json

ROOT = Path(__file__).resolve().parents[1]
TINY = dict(layers=1, hidden=32, emb=16, batch_size=4, seq_len=16, precision="fp32", eval_every=10, save_every=10,
            log_every=5, verbose=False)
NAMES = ["anna", "bob", "carla", "dmitri", "eve", "frank", "gina", "hugo", "ines", "jack"] * 12


@pytest.fixture
def mpl():
    return pytest.importorskip("matplotlib", reason="plot tests need matplotlib (pip install 'charrnn[plot]')")


def test_the_new_calls_are_public_and_the_package_import_stays_torch_free():
    for name in ("inspect", "runs", "plot", "corpora", "fetch_corpus", "cache"):
        assert name in charrnn.__all__ and callable(getattr(charrnn, name))
        assert getattr(charrnn, name) is getattr(api, name)  # api.py is the front door
    code = "import sys, charrnn; charrnn.corpora(); print('torch' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, check=True).stdout
    assert out == "False\n"


# ----------------------------------------------------------------------------- runs and checkpoints

def test_inspect_returns_what_the_cli_prints(trained_run, cli):
    run_dir, _, ckdir = trained_run
    info = charrnn.inspect(run_dir)
    assert json.loads(cli("inspect", "--json", run_dir).out) == json.loads(json.dumps(info))
    assert cli("inspect", run_dir).out == str(info) + "\n"
    assert info["checkpoint"] == str(run_dir / "last.pt")  # a run: its full history
    assert info["parameters"]["num_parameters"] == charrnn.load(run_dir).num_parameters  # a property, not a call
    assert "= model.num_parameters\n" in str(info)
    model = charrnn.load(run_dir, device="cpu")
    assert charrnn.inspect(model)["checkpoint"] == model.path == str(run_dir / "best.pt")  # a model: its own file
    assert charrnn.inspect(checkpoint_dir=ckdir)["checkpoint"] == str(run_dir / "last.pt")  # None: the latest run
    assert charrnn.inspect("tiny", checkpoint_dir=ckdir) == info  # a run name under checkpoint_dir


def test_runs_returns_what_the_cli_prints(run_copy, cli):
    _, _, ckdir = run_copy
    table = charrnn.runs(ckdir)
    assert [r["name"] for r in table] == ["tiny"] and table[0]["steps"] == 40
    assert json.loads(cli("runs", "--json", "--checkpoint-dir", ckdir).out) == json.loads(json.dumps(table))
    assert cli("runs", "--checkpoint-dir", ckdir).out == str(table) + "\n"
    with pytest.raises(charrnn.CharrnnError, match="does not exist"):
        charrnn.runs(ckdir / "nowhere")


# ----------------------------------------------------------------------------- plots

def _lines(ax) -> dict:
    return {line.get_label(): line for line in ax.get_lines()}


def test_plot_returns_a_figure_of_the_runs(trained_run, mpl, tmp_path):
    from matplotlib.figure import Figure

    run_dir, _, _ = trained_run
    fig = charrnn.plot(run_dir)
    assert isinstance(fig, Figure) and len(fig.axes) == 4
    by_steps, by_time, lr, grad = fig.axes
    assert [by_steps.get_xlabel(), by_steps.get_ylabel()] == ["step", "bits/char"]
    assert by_time.get_xlabel().startswith("training time") and lr.get_ylabel() == "lr"
    assert grad.get_ylabel() == "global L2 norm"
    metrics = [json.loads(line) for line in open(run_dir / "metrics.jsonl")]
    val = [m for m in metrics if m["split"] == "val"]
    train = [m for m in metrics if m["split"] == "train"]
    lines = _lines(by_steps)
    assert set(lines) == {"tiny train", "tiny val"}
    assert list(lines["tiny val"].get_xdata()) == [m["step"] for m in val]
    assert list(lines["tiny val"].get_ydata()) == [m["bpc"] for m in val]
    assert list(lines["tiny train"].get_ydata()) == [m["bpc"] for m in train]
    assert list(_lines(lr)["tiny"].get_ydata()) == [m["lr"] for m in train]
    assert set(_lines(grad)) >= {"tiny mean", "tiny max"}
    assert fig._repr_png_()[:8] == b"\x89PNG\r\n\x1a\n"  # what a notebook shows inline


def test_plot_overlays_runs_given_as_results_names_or_directories(mpl, tmp_path):
    ck = tmp_path / "checkpoints"
    a, b = make_run(ck, "a", grad=True), make_run(ck, "b", steps=250)
    fig = charrnn.plot("a", b, checkpoint_dir=ck, title="two runs")
    assert set(_lines(fig.axes[0])) == {"a train", "a val", "b train", "b val"}
    assert fig._suptitle.get_text() == "two runs"
    assert max(_lines(fig.axes[0])["b train"].get_xdata()) == 250
    assert fig.save(tmp_path / "both.png") == str(tmp_path / "both.png")
    assert (tmp_path / "both.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert charrnn.plot(checkpoint_dir=ck).run_dirs == [str(b)]  # none: the latest run
    with pytest.raises(charrnn.CharrnnError, match="no run or checkpoint 'nosuch'"):
        charrnn.plot("nosuch", checkpoint_dir=ck)


def test_plot_without_matplotlib_names_the_extra(trained_run, monkeypatch):
    for mod in ("matplotlib", "matplotlib.figure", "matplotlib.backends", "matplotlib.backends.backend_agg"):
        monkeypatch.setitem(sys.modules, mod, None)  # import raises ImportError
    monkeypatch.setattr("charrnn.reports.plot._FIGURE", [])
    with pytest.raises(charrnn.CharrnnError) as e:
        charrnn.plot(trained_run[0])
    assert str(e.value) == "plotting needs matplotlib: pip install 'charrnn[plot]'"


# ----------------------------------------------------------------------------- the viz page

def test_viz_page_shows_inline_and_saves_what_the_cli_writes(trained_run, cli, tmp_path):
    run_dir, _, _ = trained_run
    text = TINY_TEXT[:200]
    page = charrnn.load(run_dir, device="cpu").viz(text)
    data = page_json(page.html)
    assert data["segs"] == list(text) and page.chars == len(text) and page.bpc == data["bpc"] > 0
    frame = page._repr_html_()
    m = re.fullmatch(r'<iframe srcdoc="([^"]*)" sandbox="allow-scripts" style="[^"]*"></iframe>', frame)
    assert m is not None and html.unescape(m.group(1)) == page.html  # the whole page, escaped into srcdoc
    out = tmp_path / "page.html"
    assert page.save(out) == str(out) and out.read_text(encoding="utf-8") == page.html
    assert sorted(os.listdir(tmp_path)) == ["page.html"]  # written atomically: no temp file left behind
    r = cli("viz", run_dir, "--text", text, "-o", tmp_path / "cli.html")
    assert r.code == 0, r.err
    assert (tmp_path / "cli.html").read_text(encoding="utf-8") == page.html  # one implementation
    with pytest.raises(charrnn.CharrnnError, match="one of them"):
        charrnn.load(run_dir, device="cpu").viz()


# ----------------------------------------------------------------------------- named corpora and the cache

def test_corpora_returns_what_the_cli_prints(cli):
    rows = charrnn.corpora()
    assert {r["name"] for r in rows} >= {"enwik8", "text8", "tinyshakespeare"}
    for r in rows:
        assert r["downloaded"] == (r["status"] == "downloaded") and r["size"] > 0 and os.path.isabs(r["path"])
    assert json.loads(cli("corpora", "--json").out)["corpora"] == rows


def test_cache_lists_prunes_and_clears_like_the_cli(tmp_path, cli, one_thread):
    ck = tmp_path / "ck"
    charrnn.train(text=TINY_TEXT, checkpoint_dir=ck, max_steps=5, **TINY)
    cache = charrnn.cache(ck)
    (entry,) = cache.entries()
    assert entry["tokenizer"] == "char" and entry["bytes"] == cache.bytes > 0
    assert json.loads(cli("cache", "--json", "--checkpoint-dir", ck).out) == json.loads(json.dumps(cache.to_dict()))
    assert cache.prune(max_gb=1) == 0 and len(cache.entries()) == 1  # it fits: nothing evicted
    assert cache.prune(max_gb=1e-12) == entry["bytes"] and cache.entries() == []
    charrnn.train(text=TINY_TEXT, checkpoint_dir=ck, max_steps=5, **TINY)
    size = cache.bytes
    assert size > 0 and cache.clear() == (1, size) and cache.bytes == 0
    with pytest.raises(charrnn.CharrnnError, match="above 0"):
        cache.prune(max_gb=0)


# ----------------------------------------------------------------------------- training on strings

def test_train_on_a_text_keeps_it_in_the_run_and_resumes(tmp_path, one_thread):
    ck = tmp_path / "ck"
    run = charrnn.train(text=TINY_TEXT, checkpoint_dir=ck, max_steps=10, **TINY)
    assert re.fullmatch(r"text-[0-9a-f]{8}", Path(run.run_dir).name) and Path(run.run_dir).parent == ck
    kept = Path(run.run_dir) / "text.txt"
    assert kept.read_text(encoding="utf-8") == TINY_TEXT
    config = json.loads((Path(run.run_dir) / "config.json").read_text())
    assert config["corpus"] == str(kept.resolve()) and config["records"] is None
    again = charrnn.resume(run.run_dir, max_steps=20, verbose=False)
    assert again.run_dir == run.run_dir and again.steps == 20
    twice = charrnn.train(text=TINY_TEXT, checkpoint_dir=ck, max_steps=5, **TINY)
    assert twice.run_dir == run.run_dir + "-2"  # the same text again: a new run beside it
    named = charrnn.train(text="abc " * 200, checkpoint_dir=ck, name="mine", max_steps=5, **TINY)
    assert named.run_dir == str(ck / "mine") and (ck / "mine" / "text.txt").read_text() == "abc " * 200


def test_train_on_texts_reads_them_as_records(tmp_path, one_thread):
    ck = tmp_path / "ck"
    run = charrnn.train(texts=NAMES, checkpoint_dir=ck, max_steps=10, **TINY)
    assert (Path(run.run_dir) / "text.txt").read_text(encoding="utf-8") == "\n".join(NAMES) + "\n"
    model = run.model
    assert records_separator(model.config) == "\n"  # the records layout: each name from a fresh state
    assert model.evaluate()["text"].endswith("(records)")  # and scored record by record
    lines = [n + "\nsecond line" for n in NAMES]  # texts holding newlines: another separator
    run = charrnn.train(texts=lines, checkpoint_dir=ck, max_steps=5, **TINY)
    assert records_separator(run.model.config) == "\x1e"
    assert (Path(run.run_dir) / "text.txt").read_text(encoding="utf-8") == "\x1e".join(lines) + "\x1e"


@pytest.mark.parametrize("given,message", [
    (dict(text=3), "text= must be a string"),
    (dict(text=["a", "b"]), "for a list of texts use texts="),
    (dict(text=""), "text= is empty"),
    (dict(texts="abc"), "for one string use text="),
    (dict(texts=[]), "texts= is empty"),
    (dict(texts=["a", ""]), r"texts\[1\] is empty"),
    (dict(texts=["a", 2]), r"texts\[1\] is not a string \(got int\)"),
    (dict(text="a", texts=["b"]), "give one thing to train on"),
    (dict(texts=["a", "b"], records="\n"), "texts= are records already"),
    (dict(texts=["\n\x1e\x1f\x1d\x1c"]), "join the texts yourself"),
])
def test_bad_texts_are_refused_before_anything_is_written(tmp_path, given, message):
    with pytest.raises(charrnn.CharrnnError, match=message):
        charrnn.train(checkpoint_dir=tmp_path / "ck", **given)
    assert not (tmp_path / "ck").exists()


def test_a_corpus_and_a_text_are_refused_together(tmp_path):
    with pytest.raises(charrnn.CharrnnError, match="give one thing to train on"):
        charrnn.train("corpus.txt", text="abc", checkpoint_dir=tmp_path)


# ----------------------------------------------------------------------------- interrupting from Python

def test_an_interrupted_python_run_names_the_python_call_to_resume_it(tmp_path, one_thread, capsys):
    def interrupt(record):  # as Jupyter's "interrupt the kernel" does: SIGINT to this process
        if record["step"] == 10:
            os.kill(os.getpid(), signal.SIGINT)

    ck = tmp_path / "ck"
    with pytest.raises(charrnn.Interrupted) as e:
        charrnn.train(text=TINY_TEXT, checkpoint_dir=ck, max_steps=1000, on_log=interrupt, **TINY)
    run_dir = e.value.run_dir
    assert f"Resume with: charrnn.resume({run_dir!r})" in str(e.value) and "charrnn train" not in str(e.value)
    assert e.value.shell_message.endswith(f"Resume with: charrnn train --resume {run_dir}")
    assert e.value.exit_code == 130 and (Path(run_dir) / "last.pt").is_file() and (Path(run_dir) / "text.txt").is_file()
    done = charrnn.resume(run_dir, max_steps=20, verbose=False)
    assert done.steps == 20 and done.run_dir == run_dir

    from charrnn.cli import _report  # the command line keeps the shell command
    capsys.readouterr()
    with pytest.raises(SystemExit) as exit_:
        _report(e.value)
    assert exit_.value.code == 130 and capsys.readouterr().err == e.value.shell_message + "\n"
