"""`charrnn corpora`: the named corpora, whether they are downloaded and where; --fetch downloads one.
The rows come from charrnn.corpora() (reports/calls.py); this prints them."""

from __future__ import annotations

import json
import os

import click

from charrnn.data import named as corpora
from charrnn.reports.calls import corpora as corpus_rows, fetch_corpus


def _split_label(split: dict) -> str:
    val, test = split["val_frac"], split["test_frac"]
    return "/".join(f"{100 * f:g}" for f in (1 - val - test, val, test))


@click.command("corpora")
@click.option("--json", "as_json", is_flag=True, help="Print one JSON object on stdout.")
@click.option("--fetch", "fetch_name", metavar="NAME", help="Download corpus NAME now (it is kept for later runs).")
def corpora_cmd(as_json, fetch_name):
    """List the named corpora: 'charrnn train NAME' downloads one on first use.

    \b
    Files live in the data directory: $CHARRNN_DATA, else the user cache
    ($XDG_CACHE_HOME/charrnn or ~/.cache/charrnn). A file put there by hand
    is used when its SHA-256 matches.
    """
    if fetch_name:
        path = fetch_corpus(fetch_name)
        if not as_json:
            click.echo(path)
            return
    rows = corpus_rows()
    if as_json:
        click.echo(json.dumps({"data_dir": corpora.data_dir(), "corpora": rows}, indent=2))
        return
    shown = {"downloaded": "downloaded", "unverified": "present, not yet verified", "missing": "not downloaded"}
    table = [("name", "size", "train/val/test %", "tokenizer", "file", "status")]
    table += [(r["name"], f"{r['size'] / 1e6:,.1f} MB", _split_label(r["split"]), r["tokenizer"],
               os.path.basename(r["path"]), shown[r["status"]]) for r in rows]
    widths = [max(len(row[i]) for row in table) for i in range(len(table[0]))]
    for row in table:
        click.echo("  ".join(cell.ljust(w) for cell, w in zip(row, widths)).rstrip())
    click.echo(f"\ndata directory: {corpora.data_dir()} (CHARRNN_DATA changes it)")
    click.echo("'charrnn train NAME' downloads a corpus on first use; 'charrnn corpora --fetch NAME' does it now.")
