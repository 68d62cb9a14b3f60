"""Training curves from metrics.jsonl: bits per character against steps and wall time, learning rate,
and the gradient norm before clipping with the clipped intervals marked; several runs overlaid.

matplotlib is an optional extra (``pip install 'charrnn[plot]'``), imported only here and only when
a plot is drawn, through its object-oriented Agg canvas (no pyplot, no global backend change).
``figure(runs)`` returns the matplotlib Figure (``charrnn.plot``, ``TrainResult.plot``; a notebook
shows it inline through its ``_repr_png_``); its ``save(path)`` writes the PNG (``charrnn plot``).
"""

from __future__ import annotations

import io
import os

from charrnn.errors import CharrnnError
from charrnn.system import rundir
from charrnn.system.fileio import atomic_write_bytes

NO_MATPLOTLIB = "plotting needs matplotlib: pip install 'charrnn[plot]'"


_FIGURE = []  # the Figure class below, made on first use (matplotlib is optional)


def _matplotlib():
    """(RunsFigure, FigureCanvasAgg): a matplotlib Figure that a notebook shows inline as a PNG."""
    try:
        from matplotlib.backends.backend_agg import FigureCanvasAgg
        from matplotlib.figure import Figure
    except ImportError:
        raise CharrnnError(NO_MATPLOTLIB) from None
    if not _FIGURE:
        class RunsFigure(Figure):
            """The runs' curves (``run_dirs``); ``_repr_png_`` lets IPython/Jupyter show it without pyplot."""

            run_dirs: list[str] = []

            def _repr_png_(self) -> bytes:
                return png_bytes(self)

            def save(self, path=None) -> str:
                """Write the PNG atomically to ``path`` (default: RUN/plot.png for one run, runs.png in the
                current directory for several); returns the path."""
                one = len(self.run_dirs) == 1
                path = os.fspath(path) if path else os.path.join(self.run_dirs[0], "plot.png") if one else "runs.png"
                atomic_write_bytes(png_bytes(self), path)
                return path

        _FIGURE.append(RunsFigure)
    return _FIGURE[0], FigureCanvasAgg


def png_bytes(fig) -> bytes:
    buf = io.BytesIO()
    fig.savefig(buf, format="png")
    return buf.getvalue()


def load_run(run_dir: str) -> dict:
    """A run's metrics split into train and val lines, plus its --grad-clip (None if unknown)."""
    path = os.path.join(run_dir, rundir.METRICS)
    if not os.path.isfile(path):
        raise CharrnnError(f"run directory '{run_dir}' has no {rundir.METRICS}; give a run directory written by "
                           "charrnn train (see charrnn runs)")
    rows = rundir.read_metrics(run_dir)
    train = [r for r in rows if r.get("split") == "train"]
    val = [r for r in rows if r.get("split") == "val"]
    if not train and not val:
        raise CharrnnError(f"'{path}' has no metrics yet; train longer than --log-every steps and plot again")
    clip = (rundir.read_config(run_dir) or {}).get("grad_clip")
    return {"dir": run_dir, "train": train, "val": val, "grad_clip": clip}


def run_labels(run_dirs: list[str]) -> list[str]:
    """Short legend labels: the run names, with their parent directory where names repeat."""
    names = [os.path.basename(os.path.normpath(d)) for d in run_dirs]
    if len(set(names)) == len(names):
        return names
    return [os.path.join(os.path.basename(os.path.dirname(os.path.normpath(d))), n) for d, n in zip(run_dirs, names)]


def _xy(rows, x, y):
    pts = [(r[x], r[y]) for r in rows if isinstance(r.get(x), (int, float)) and isinstance(r.get(y), (int, float))]
    return [p[0] for p in pts], [p[1] for p in pts]


def grad_points(train: list[dict]) -> dict:
    """Gradient-norm series of a run's train lines: mean and max pre-clip norm per log interval, and
    the clipping events (step, the interval's max norm, how many of its steps were clipped)."""
    steps, mean = _xy(train, "step", "grad_norm")
    max_steps, mx = _xy(train, "step", "grad_norm_max")
    clipped = [(r["step"], r.get("grad_norm_max", r.get("grad_norm")), int(r["clipped"])) for r in train
               if isinstance(r.get("clipped"), (int, float)) and r["clipped"] > 0
               and isinstance(r.get("grad_norm_max", r.get("grad_norm")), (int, float))]
    return {"steps": steps, "mean": mean, "max_steps": max_steps, "max": mx, "clipped": clipped}


def draw(runs: list[dict], labels: list[str], title: str | None = None):
    """The four-panel matplotlib Figure of loaded runs (``load_run``)."""
    Figure, FigureCanvasAgg = _matplotlib()
    fig = Figure(figsize=(12, 8), dpi=90, layout="constrained")
    FigureCanvasAgg(fig)
    ax_step, ax_time, ax_lr, ax_gn = fig.subplots(2, 2).ravel()
    colors = [f"C{i % 10}" for i in range(len(runs))]
    t_max = max((r.get("elapsed", 0) for run in runs for r in run["train"] + run["val"]), default=0)
    t_div, t_unit = (60.0, "min") if t_max > 600 else (1.0, "s")
    have_gn = False
    for run, label, c in zip(runs, labels, colors):
        for ax, x, div in ((ax_step, "step", 1.0), (ax_time, "elapsed", t_div)):
            xs, ys = _xy(run["train"], x, "bpc")
            ax.plot([v / div for v in xs], ys, color=c, alpha=0.45, lw=1, label=f"{label} train")
            xs, ys = _xy(run["val"], x, "bpc")
            ax.plot([v / div for v in xs], ys, color=c, lw=2, marker="o", ms=3, label=f"{label} val")
        ax_lr.plot(*_xy(run["train"], "step", "lr"), color=c, lw=1.5, label=label)
        g = grad_points(run["train"])
        if g["steps"]:
            have_gn = True
            ax_gn.plot(g["steps"], g["mean"], color=c, lw=1.5, label=f"{label} mean")
            if g["max_steps"]:
                ax_gn.plot(g["max_steps"], g["max"], color=c, lw=0.8, ls=":", label=f"{label} max")
            if g["clipped"]:
                ax_gn.scatter([p[0] for p in g["clipped"]], [p[1] for p in g["clipped"]], marker="x", color=c, s=25,
                              zorder=3, label=f"{label} clipped ({sum(p[2] for p in g['clipped'])} steps)")
            if run["grad_clip"]:
                ax_gn.axhline(run["grad_clip"], color=c, lw=0.8, ls="--", alpha=0.7)
    ax_step.set(title="bits per character vs steps", xlabel="step", ylabel="bits/char")
    ax_time.set(title="bits per character vs wall time", xlabel=f"training time ({t_unit})", ylabel="bits/char")
    ax_lr.set(title="learning rate", xlabel="step", ylabel="lr")
    ax_gn.set(title="gradient norm before clipping (x: intervals with clipped steps, --: --grad-clip)",
              xlabel="step", ylabel="global L2 norm")
    ax_gn.title.set_fontsize(9)
    if have_gn:
        lo, hi = ax_gn.get_ylim()
        if lo > 0 and hi / lo > 20:  # early spikes: a log scale keeps the rest readable
            ax_gn.set_yscale("log")
        ax_gn.legend(fontsize=7)
        ax_gn.grid(alpha=0.3)
    else:
        ax_gn.text(0.5, 0.5, "no gradient norms recorded\n(runs trained before charrnn logged grad_norm)",
                   ha="center", va="center", transform=ax_gn.transAxes, color="0.4")
        ax_gn.set_xticks([])
        ax_gn.set_yticks([])
    for ax in (ax_step, ax_time):
        ax.legend(fontsize=7)
        ax.grid(alpha=0.3)
        _clip_top(ax, runs)
    ax_lr.grid(alpha=0.3)
    if len(runs) > 1:
        ax_lr.legend(fontsize=7)
    fig.suptitle(title or ", ".join(labels))
    return fig


def _clip_top(ax, runs) -> None:
    """The first log points (around ln V bits) would squash the interesting part: cap the y range."""
    ys = [r["bpc"] for run in runs for r in run["train"] + run["val"] if isinstance(r.get("bpc"), (int, float))]
    if len(ys) > 4:
        lo, hi = min(ys), sorted(ys)[int(0.9 * (len(ys) - 1))]
        if hi > lo:
            ax.set_ylim(lo - 0.05 * (hi - lo), hi + 0.3 * (hi - lo))


def figure(run_dirs: list[str], title: str | None = None):
    """The runs' curves as a matplotlib Figure (bpc vs steps and vs time, learning rate, gradient norm);
    ``.save(path)`` writes it as a PNG."""
    if not run_dirs:
        raise CharrnnError("no runs to plot; give run directories or train one first (charrnn train)")
    _matplotlib()  # fail fast, before reading anything
    fig = draw([load_run(d) for d in run_dirs], run_labels(run_dirs), title)
    fig.run_dirs = list(run_dirs)
    return fig
