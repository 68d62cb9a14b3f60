"""`charrnn score [MODEL] FILE...`: bits per character of every line of a text, a table or JSON lines.

The model comes first, as in every command (rundir.resolve_checkpoint); one argument alone is a
FILE scored with the latest run. ``--checkpoint MODEL``, the old spelling, still works for one
release (hidden, with a note). No torch at import.
"""

from __future__ import annotations

import json
import math
import os
import sys

import click

from charrnn.cli.options import Command, CKPT_DIR, log, model_doc, options
from charrnn.errors import CharrnnError
from charrnn.settings import DEVICES, SCORE


@click.command(name="score", cls=Command, groups={"as_json": "output", "device": "device"})
@click.argument("args", nargs=-1, metavar="[MODEL] FILE...")
@click.option("--checkpoint", "checkpoint", default=None, hidden=True,
              help="Deprecated: the model, now the first argument (charrnn score MODEL FILE).")
@click.option("--json", "as_json", is_flag=True, default=False,
              help="One JSON object per line of FILE on stdout (line, text, chars, nll, bpc; file, with several).")
@options(SCORE[:-1])
@click.option("--device", type=click.Choice(DEVICES), default="auto", show_default=True,
              help="auto: CUDA, then Apple MPS, then the CPU.")
@options(SCORE[-1:])
@CKPT_DIR
@model_doc
def score_cmd(args, checkpoint, as_json, device, checkpoint_dir, **opts):
    """Bits per character of every line of each FILE ('-': standard input) under MODEL (its best.pt
    when a run is given).

    {MODEL_HELP}. One argument alone is a FILE scored with the latest run (charrnn score
    notes.txt), unless it is a run name, run directory or checkpoint and no text file: then the
    FILE is missing. A text file is never taken for the model.

    The text is read as one stream, as 'charrnn eval --file' reads it: the lines' nll add up to its
    total, and the first character (nothing predicts it) is context only. A table by default; --json
    gives one object per line.
    """
    from charrnn import api
    from charrnn.settings import check_values

    model_arg, files = _score_arguments(args, checkpoint, checkpoint_dir)
    check_values(SCORE, opts)
    if opts["per_char"] and not as_json:
        raise CharrnnError("--per-char adds a list of surprisals to every JSON line; add --json")
    model = api.load(model_arg, device=device, checkpoint_dir=checkpoint_dir)
    for i, file in enumerate(files):
        if len(files) > 1 and not as_json:
            click.echo(("\n" if i else "") + f"==> {file} <==")
        _score_file(model, file, as_json, opts, len(files) > 1)


def _score_arguments(args, checkpoint, checkpoint_dir) -> tuple:
    """(model argument or None for the latest run, files) from score's arguments."""
    from charrnn.system.rundir import find_checkpoint

    if checkpoint is not None:
        log("note: --checkpoint is deprecated and goes away in the next release; give the model first: "
             f"charrnn score {checkpoint} FILE...")
        if not args:
            raise click.UsageError("give a FILE to score ('-': standard input)")
        return checkpoint, list(args)
    if not args:
        raise click.UsageError("give the text to score: charrnn score [MODEL] FILE... ('-': standard input)")
    if len(args) > 1:
        if args[0] == "-" or _text_file(args[0]):
            raise click.UsageError(f"'{args[0]}' is a text file, not a model; the model comes first: "
                                   "charrnn score MODEL FILE... (charrnn runs lists the runs)")
        return args[0], list(args[1:])
    if args[0] != "-" and not _text_file(args[0]) and find_checkpoint(args[0], checkpoint_dir):
        raise click.UsageError(f"'{args[0]}' is a model; give the FILE to score after it: "
                               f"charrnn score {args[0]} FILE")
    return None, list(args)


def _text_file(path: str) -> bool:
    """A file that is no checkpoint: not .pt, and neither a zip (torch.save) nor a pickle inside; or a
    pipe (charrnn score <(...))."""
    if os.path.exists(path) and not os.path.isfile(path) and not os.path.isdir(path):
        return True
    if not os.path.isfile(path) or path.endswith(".pt"):
        return False
    try:
        with open(path, "rb") as f:
            head = f.read(2)
    except OSError:
        return True  # reading it as text names the problem
    return head != b"PK" and head[:1] != b"\x80"


def _score_file(model, file: str, as_json: bool, opts: dict, several: bool) -> None:
    """Print each line's record as it comes (Model.score_lines): a file of any size in bounded memory;
    standard input is first copied, a MiB at a time, to a temporary file read the same way."""
    if file != "-":
        return _print_records(model, model.score_lines(file=file, **opts), file, as_json, opts, several)
    import shutil
    import tempfile

    with tempfile.NamedTemporaryFile(prefix="charrnn-stdin-", suffix=".txt") as tmp:
        shutil.copyfileobj(sys.stdin.buffer, tmp, 1 << 20)
        tmp.flush()
        if not tmp.tell():
            raise CharrnnError("standard input is empty; pipe some text into 'charrnn score -'")
        try:
            records = model.score_lines(file=tmp.name, **opts)
        except CharrnnError as e:  # name what was read, not the copy
            raise CharrnnError(str(e).replace(f"file '{tmp.name}'", "input '<stdin>'")) from None
        _print_records(model, records, file, as_json, opts, several)


def _print_records(model, records, file: str, as_json: bool, opts: dict, several: bool) -> None:
    n_lines, chars, nll, skipped = len(records), 0, 0.0, 0
    width = max(4, len(str(n_lines)))
    if not as_json:
        click.echo(f"{'line':>{width}}  {'chars':>6}  {'bpc':>6}  text")
    for r in records:
        chars, nll, skipped = chars + r["chars"], nll + r["nll"], skipped + r.get("skipped", 0)
        if as_json:
            click.echo(json.dumps({**r, "file": file} if several else r, ensure_ascii=False))
        else:
            bpc = f"{r['bpc']:6.3f}" if r["bpc"] is not None else f"{'-':>6}"
            click.echo(f"{r['line']:>{width}}  {r['chars']:>6}  {bpc}  {_shorten(r['text'], 60)}")
    log(f"scored {n_lines:,} lines of {'standard input' if file == '-' else file} with {model.path}"
        + (" (each line on its own)" if opts["independent"] else ""))
    if opts["skip_unknown"]:
        log(f"skipped {skipped:,} characters the model never saw")
    total = f"{nll / math.log(2) / chars:.4f} bits/char" if chars else "no characters scored"
    if as_json:
        log(f"total: {chars:,} characters, {total}")
        return
    click.echo(f"total: {n_lines:,} lines, {chars:,} characters, {total} (nll {nll:,.2f} nats)")


def _shorten(text: str, width: int) -> str:
    """A line for the table: control characters escaped, cut to width with an ellipsis."""
    text = "".join(c if c.isprintable() or c == " " else repr(c)[1:-1] for c in text)
    return text if len(text) <= width else text[:width - 1] + "…"
