"""charrnn plot: training curves of one or several runs from metrics.jsonl, written as a PNG."""

from __future__ import annotations

import json
import os
import struct
import sys

import pytest

from charrnn.reports.plot import NO_MATPLOTLIB, grad_points

PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"


def make_run(ckdir, name, steps=400, grad=False, log_every=25, eval_every=100, bpc0=4.0):
    """A run directory as charrnn train writes it (config.json, metrics.jsonl, a last.pt stand-in)."""
    d = ckdir / name
    d.mkdir(parents=True)
    (d / "config.json").write_text(json.dumps({"corpus": f"/data/{name}.txt", "grad_clip": 1.0, "cell": "lstm",
                                               "layers": 1, "hidden": 32, "tokenizer": "char"}))
    lines = []
    for s in range(log_every, steps + 1, log_every):
        bpc = 1.5 + bpc0 / (1 + s / 50)
        row = {"step": s, "split": "train", "epoch": s / 100, "loss": bpc * 0.69, "bpc": bpc,
               "lr": 3e-3 * (1 - s / (steps + 1)), "tok_s": 20000, "elapsed": s * 0.2, "skipped": 0}
        if grad:
            row.update(grad_norm=2.0 / (1 + s / 100), grad_norm_max=3.0 / (1 + s / 200),
                       clipped=5 if s <= 100 else 0)
        lines.append(row)
        if s % eval_every == 0:
            lines.append({"step": s, "split": "val", "loss": bpc * 0.7, "perplexity": 3.0, "bpc": bpc + 0.05,
                          "bpb": bpc + 0.05, "tokens": 1000, "chars": 1000, "bytes": 1000, "elapsed": s * 0.2})
    (d / "metrics.jsonl").write_text("".join(json.dumps(r) + "\n" for r in lines) + '{"step": 4')  # torn last line
    (d / "last.pt").write_bytes(b"")
    return d


def png_size(data: bytes) -> tuple[int, int]:
    assert data[:8] == PNG_SIGNATURE, "not a PNG"
    assert data[12:16] == b"IHDR"
    return struct.unpack(">II", data[16:24])


@pytest.fixture
def mpl():
    return pytest.importorskip("matplotlib", reason="plot tests need matplotlib (pip install 'charrnn[plot]')")


@pytest.mark.slow
def test_plot_one_run_writes_a_png_into_the_run(cli, mpl, tmp_path):
    ck = tmp_path / "checkpoints"
    run = make_run(ck, "old", grad=False)
    r = cli("plot", "--checkpoint-dir", ck)  # the latest run: old (the only one)
    assert r.code == 0, r.err
    data = (run / "plot.png").read_bytes()
    w, h = png_size(data)
    assert (w, h) == (1080, 720) and len(data) > 30_000
    assert f"wrote {run / 'plot.png'}" in r.err
    mask = os.umask(0)
    os.umask(mask)
    assert (run / "plot.png").stat().st_mode & 0o777 == 0o666 & ~mask  # not the temp file's private 0600


@pytest.mark.slow
def test_plot_two_runs_overlaid(cli, mpl, tmp_path, monkeypatch):
    ck = tmp_path / "checkpoints"
    make_run(ck, "a", grad=True)
    make_run(ck, "b", steps=250, grad=False, bpc0=6.0)
    monkeypatch.chdir(tmp_path)
    r = cli("plot", "a", "b", "--checkpoint-dir", ck)  # run names under --checkpoint-dir
    assert r.code == 0, r.err
    assert png_size((tmp_path / "runs.png").read_bytes()) == (1080, 720)
    r = cli("plot", ck / "a", ck / "b" / "last.pt", "-o", tmp_path / "out.png")  # directories or checkpoints
    assert r.code == 0, r.err
    data = (tmp_path / "out.png").read_bytes()
    assert len(data) > 30_000
    assert cli("plot", ck / "a", "-o", tmp_path / "a.png").code == 0
    assert (tmp_path / "a.png").read_bytes() != data  # the second run is drawn too


def _lines(ax) -> dict:
    return {line.get_label(): (list(line.get_xdata()), list(line.get_ydata())) for line in ax.get_lines()}


def test_the_figure_draws_each_runs_curves_on_four_labelled_panels(mpl, tmp_path):
    from charrnn.reports.plot import draw, load_run

    runs = [load_run(str(make_run(tmp_path, "a", grad=True))), load_run(str(make_run(tmp_path, "b", steps=250)))]
    fig = draw(runs, ["a", "b"])
    ax_step, ax_time, ax_lr, ax_gn = fig.axes
    assert [ax.get_title() for ax in fig.axes][:3] == ["bits per character vs steps", "bits per character vs wall time",
                                                       "learning rate"]
    assert ax_gn.get_title().startswith("gradient norm before clipping")
    assert (ax_step.get_xlabel(), ax_step.get_ylabel()) == ("step", "bits/char")
    assert ax_time.get_xlabel() == "training time (s)"  # 80 s of training: seconds, not minutes
    assert fig.get_suptitle() == "a, b"
    steps = _lines(ax_step)
    assert set(steps) == {"a train", "a val", "b train", "b val"}
    a_train, a_val = runs[0]["train"], runs[0]["val"]
    assert steps["a train"] == ([r["step"] for r in a_train], [r["bpc"] for r in a_train])
    assert steps["a val"] == ([100, 200, 300, 400], [r["bpc"] for r in a_val])
    assert steps["b train"][0][-1] == 250  # the shorter run ends where it stopped
    assert _lines(ax_time)["a val"][0] == [r["elapsed"] for r in a_val]
    assert _lines(ax_lr)["a"] == ([r["step"] for r in a_train], [r["lr"] for r in a_train])
    gn = _lines(ax_gn)
    assert gn["a mean"][1] == [r["grad_norm"] for r in a_train] and "a max" in gn
    assert not any(label.startswith("b ") for label in gn)  # b recorded no gradient norms
    clip_line = [line for line in ax_gn.get_lines() if line.get_linestyle() == "--"]
    assert [line.get_ydata()[0] for line in clip_line] == [1.0]  # a's --grad-clip
    (marks,) = ax_gn.collections
    assert marks.get_label() == "a clipped (20 steps)" and len(marks.get_offsets()) == 4
    assert [t.get_text() for t in ax_step.get_legend().get_texts()] == ["a train", "a val", "b train", "b val"]


@pytest.mark.slow
def test_a_run_without_gradient_norms_says_so_on_that_panel(mpl, tmp_path):
    from charrnn.reports.plot import draw, load_run

    fig = draw([load_run(str(make_run(tmp_path, "old", steps=4000)))], ["old"], title="mine")
    ax_gn = fig.axes[3]
    assert ax_gn.get_lines() == [] and ax_gn.get_legend() is None
    assert [t.get_text() for t in ax_gn.texts] == [
        "no gradient norms recorded\n(runs trained before charrnn logged grad_norm)"]
    assert fig.axes[1].get_xlabel() == "training time (min)"  # 4000 steps x 0.2 s = 800 s > 600 s: minutes
    assert fig.get_suptitle() == "mine"


def test_gradient_norms_and_clipping_events_are_read_when_recorded(tmp_path):
    from charrnn.reports.plot import load_run

    with_gn = load_run(str(make_run(tmp_path, "new", grad=True)))
    g = grad_points(with_gn["train"])
    assert g["steps"] == list(range(25, 401, 25)) and len(g["mean"]) == len(g["max"]) == 16
    assert [c[0] for c in g["clipped"]] == [25, 50, 75, 100] and all(c[2] == 5 for c in g["clipped"])
    assert g["clipped"][0][1] == pytest.approx(3.0 / (1 + 25 / 200))  # marked at the interval's max norm
    assert with_gn["grad_clip"] == 1.0
    old = load_run(str(make_run(tmp_path, "old", grad=False)))
    assert grad_points(old["train"]) == {"steps": [], "mean": [], "max_steps": [], "max": [], "clipped": []}


def test_plot_without_matplotlib_says_how_to_get_it(cli, tmp_path, monkeypatch):
    ck = tmp_path / "checkpoints"
    make_run(ck, "a")
    for mod in ("matplotlib", "matplotlib.figure", "matplotlib.backends", "matplotlib.backends.backend_agg"):
        monkeypatch.setitem(sys.modules, mod, None)  # import raises ImportError
    r = cli("plot", "--checkpoint-dir", ck)
    assert r.code == 2
    assert r.err == f"error: {NO_MATPLOTLIB}\n"
    assert NO_MATPLOTLIB == "plotting needs matplotlib: pip install 'charrnn[plot]'"
    assert not (ck / "a" / "plot.png").exists()


def test_plot_errors(cli, mpl, tmp_path):
    ck = tmp_path / "checkpoints"
    r = cli("plot", "--checkpoint-dir", ck)
    assert r.code == 2 and "no trained model found under" in r.err
    (ck / "bare").mkdir(parents=True)
    (ck / "bare" / "best.pt").write_bytes(b"")
    r = cli("plot", "bare", "--checkpoint-dir", ck)
    assert r.code == 2 and "has no metrics.jsonl" in r.err and r.err.count("\n") == 1
    (ck / "bare" / "metrics.jsonl").write_text("")
    r = cli("plot", ck / "bare")
    assert r.code == 2 and "has no metrics yet" in r.err
    r = cli("plot", "nosuchrun", "--checkpoint-dir", ck)
    assert r.code == 2 and "no run or checkpoint 'nosuchrun'" in r.err and "runs: bare" in r.err


@pytest.mark.slow
def test_plot_of_a_real_run(cli, mpl, run_copy, tmp_path):
    run_dir, _, _ = run_copy
    r = cli("plot", run_dir, "-o", tmp_path / "real.png")
    assert r.code == 0, r.err
    assert png_size((tmp_path / "real.png").read_bytes()) == (1080, 720)
