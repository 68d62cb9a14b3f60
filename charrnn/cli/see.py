"""The "see inside" commands: inspect, runs, plot and viz (click only; the library is imported lazily,
so loading these commands costs nothing until one of them runs).

charrnn.cli registers them with ``cli.add_command``; each calls the Python API's function for it
(charrnn.inspect, charrnn.runs, charrnn.plot, Model.viz) and prints what it returns.
"""

from __future__ import annotations

import json
import os

import click

from charrnn.cli.options import CKPT_DIR, checkpoint_dir_option, log

JSON = click.option("--json", "as_json", is_flag=True, default=False, help="Print JSON on stdout instead of a report.")


@click.command(name="inspect")
@click.argument("checkpoint", required=False, metavar="[MODEL]")
@JSON
@CKPT_DIR
def inspect_cmd(checkpoint, as_json, checkpoint_dir):
    """What is inside MODEL: model, tokenizer, parameters layer by layer (with the closed-form count),
    and how it was trained.

    MODEL is a run name (see 'charrnn runs'), a run directory or a .pt file; default: the latest run
    under --checkpoint-dir. For a run, last.pt is read, since it holds the whole training history.
    """
    from charrnn.reports.calls import inspect

    info = inspect(checkpoint, checkpoint_dir=checkpoint_dir)
    click.echo(json.dumps(info, ensure_ascii=False, indent=2) if as_json else str(info))


@click.command(name="runs")
@click.argument("run", required=False, metavar="[RUN]")
@JSON
@checkpoint_dir_option("Directory whose runs are listed (and where a RUN name is looked up).")
def runs_cmd(run, as_json, checkpoint_dir):
    """A table of the runs under --checkpoint-dir, most recently updated first; with RUN (a run
    directory or name), that run and its checkpoint files: best.pt, last.pt and those kept by
    --keep-checkpoints (step-<n>-val-<loss>.pt, each usable wherever a checkpoint is taken).
    """
    from charrnn.reports.calls import runs

    if run is not None:
        from charrnn.reports.runs import format_checkpoints, format_runs, run_summary
        from charrnn.system.rundir import resolve_run_dir
        from charrnn.training.keep import list_checkpoints

        d = resolve_run_dir(run, checkpoint_dir)
        info, files = run_summary(d), list_checkpoints(d)
        if as_json:
            click.echo(json.dumps({**info, "checkpoints": files}, ensure_ascii=False, indent=2))
        else:
            click.echo(format_runs([info]) + "\n\n" + format_checkpoints(files))
        return
    table = runs(checkpoint_dir)
    if as_json:
        click.echo(json.dumps(table, ensure_ascii=False, indent=2))
    elif not table:
        log(f"no runs under '{checkpoint_dir}/' yet; start one with: charrnn train")
    else:
        click.echo(str(table))


@click.command(name="plot")
@click.argument("runs", nargs=-1, metavar="[MODEL ...]")
@click.option("-o", "--out", "out", type=str, default=None, metavar="FILE.png",
              help="Where to write the PNG. Default: RUN/plot.png for one run, runs.png in the current "
                   "directory for several.")
@CKPT_DIR
def plot_cmd(runs, out, checkpoint_dir):
    """Training curves of each MODEL's run (a run name, see 'charrnn runs', a run directory or a .pt
    file; default: the latest run under --checkpoint-dir): bits per character against steps and
    against wall time, the learning rate, and the gradient norm before clipping with clipping events
    marked. Several runs are overlaid.

    Needs matplotlib: pip install 'charrnn[plot]'.
    """
    from charrnn.reports.calls import plot

    log(f"wrote {plot(*runs, checkpoint_dir=checkpoint_dir).save(out)}")


@click.command(name="viz")
@click.argument("checkpoint", required=False, metavar="[MODEL]")
@click.option("--file", "file", type=str, default=None, metavar="PATH", help="Show this text file.")
@click.option("--text", "text", type=str, default=None, help="Show this text.")
@click.option("-o", "--out", "out", type=str, default="viz.html", show_default=True, metavar="PAGE.html",
              help="Where to write the page.")
@click.option("--max-chars", type=int, default=2000, show_default=True,
              help="Show only the first N characters (the page embeds every unit's activation per character).")
@click.option("--layer", type=int, default=None, help="Open the page on this layer (counted from 1).")
@click.option("--unit", type=int, default=None, help="Open the page on this hidden unit (counted from 0).")
@click.option("--state", type=click.Choice(["h", "c"]), default="h", show_default=True,
              help="Hidden state h, or the LSTM cell state c (c alone opens layer 1, unit 0).")
@click.option("--skip-unknown", is_flag=True, default=False, help="Drop characters the model never saw.")
@CKPT_DIR
def viz_cmd(checkpoint, file, text, out, max_chars, layer, unit, state, skip_unknown, checkpoint_dir):
    """Write one self-contained HTML page showing TEXT coloured by the model's surprisal at each
    character, or by the activation of any hidden unit, with the next-character predictions on hover
    and the units most correlated with quotes, brackets and line position.

    MODEL is a run name (see 'charrnn runs'), a run directory (its best.pt) or a .pt file; default:
    the latest run under --checkpoint-dir. Open the page in any browser (no network needed); the address selects the view, e.g. viz.html#layer=2&unit=37&state=c.
    """
    from charrnn import api
    from charrnn.errors import CharrnnError

    if (file is None) == (text is None):
        raise CharrnnError("give the text to show with exactly one of --file PATH or --text TEXT")
    model = api.load(checkpoint, device="cpu", checkpoint_dir=checkpoint_dir)
    page = model.viz(text, file=file, max_chars=max_chars, layer=layer, unit=unit, state=state,
                     skip_unknown=skip_unknown)
    page.save(out)
    for note in page.notes:
        log(f"note: {note}")
    log(f"wrote {out} ({page.bytes / 1e6:.1f} MB, {page.chars:,} characters, {page.bpc:.3f} bits/char "
         f"from {model.path})")
    if page.corr:
        best = max(page.corr, key=lambda c: abs(c["r"]))
        log(f"most correlated: layer {best['layer']} {best['state']}[{best['unit']}] with {best['feature']} "
             f"(r = {best['r']:+.2f})")
    log(f"open file://{os.path.abspath(out)}")
