"""charrnn export: a trained model as ONNX, as one web page that writes in the browser, or as a
weights-only checkpoint (click only; the work is charrnn.export, reached through api.Model.export)."""

from __future__ import annotations

import os

import click

from charrnn.cli.options import CKPT_DIR

EXTENSIONS = {"onnx": ".onnx", "html": ".html", "pt": "-weights.pt"}


@click.command(name="export")
@click.argument("model", required=False, metavar="[MODEL]")
@click.option("--format", "fmt", type=click.Choice(sorted(EXTENSIONS)), default="onnx", show_default=True,
              help="onnx: for onnxruntime (one step or a whole text); html: one self-contained page that "
                   "generates text in the browser; pt: weights only (no optimizer or training state).")
@click.option("-o", "--output", default=None, metavar="PATH",
              help="Where to write (default: the run's name with .onnx, .html or -weights.pt, here).")
@click.option("--quantize", type=click.Choice(["fp16", "int8"]), default=None,
              help="html: store the weights in half precision or as int8 with a scale per row (a smaller page).")
@click.option("--half", is_flag=True, default=False, help="pt: store the weights in half precision.")
@click.option("--force", is_flag=True, default=False, help="Overwrite PATH if it exists.")
@CKPT_DIR
def export_cmd(model, fmt, output, quantize, half, force, checkpoint_dir):
    """Write MODEL (a run directory or .pt file; default: the latest run) as ONNX, a web page or a
    weights-only checkpoint. Subword models export to onnx and pt, not to a page."""
    from charrnn import api
    from charrnn.export import check_request

    check_request(output, fmt, force, quantize, half)  # before loading anything
    m = api.load(model, device="cpu", checkpoint_dir=checkpoint_dir)
    if output is None:
        base = os.path.basename(os.path.dirname(os.path.abspath(m.path)))
        if os.path.basename(m.path) not in ("best.pt", "last.pt"):
            base = os.path.splitext(os.path.basename(m.path))[0]
        output = base + EXTENSIONS[fmt]
    done = m.export(output, fmt, force=force, quantize=quantize, half=half)
    click.echo(f"exported {m.path} as {fmt} ({done['bytes'] / 2 ** 20:.2f} MiB) -> {done['path']}", err=True)
