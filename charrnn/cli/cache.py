"""`charrnn cache`: the encoded corpora kept in CHECKPOINT_DIR/.cache (data/store.py): list them,
clear them, or evict the least recently used down to a size, through charrnn.cache() (reports/calls.py);
this prints. No torch at import."""

from __future__ import annotations

import datetime
import json

import click

from charrnn.cli.options import NUMBER, checkpoint_dir_option
from charrnn.settings import TRAIN, by_name

_CAP = by_name(TRAIN)["cache_max_gb"]


def _mb(n: int) -> str:
    return f"{n / 1e6:,.1f} MB"


@click.command("cache")
@click.option("--list", "do_list", is_flag=True, help="List the encoded corpora, least recently used first (the default).")
@click.option("--clear", is_flag=True, help="Remove every encoded corpus (runs re-encode their corpus when next used).")
@click.option("--prune", is_flag=True, help="Evict the least recently used encoded corpora until the cache fits "
              "--cache-max-gb.")
@click.option(_CAP.flag, _CAP.name, type=NUMBER, default=_CAP.default, show_default=True, metavar=_CAP.metavar,
              help="The size --prune evicts down to (training applies it after writing a new entry).")
@checkpoint_dir_option("Directory whose .cache/ holds the encoded corpora.")
@click.option("--json", "as_json", is_flag=True, help="Print one JSON object on stdout.")
def cache_cmd(do_list, clear, prune, cache_max_gb, checkpoint_dir, as_json):
    """The encoded-corpus cache: each corpus a run trained on, encoded once and memory-mapped.

    \b
    Entries are keyed by the corpus's content and the encoding settings, so a
    changed file or tokenizer never reuses an old entry.
    """
    from charrnn.errors import CharrnnError
    from charrnn.reports.calls import cache

    if clear and prune:
        raise CharrnnError("--clear and --prune do different things; give one of them")
    if cache_max_gb <= 0:
        raise CharrnnError(f"--cache-max-gb must be > 0 (got {cache_max_gb:g})")
    the_cache = cache(checkpoint_dir)
    where = the_cache.path
    if clear:
        n, size = the_cache.clear()
        click.echo(f"removed {n} encoded corpora ({_mb(size)}) from {where}", err=True)
    elif prune:
        freed = the_cache.prune(cache_max_gb, log=lambda m: click.echo(m, err=True))
        click.echo(f"freed {_mb(freed)}; the cache is within {cache_max_gb:g} GB", err=True)
    listing = the_cache.to_dict()
    if as_json:
        click.echo(json.dumps(listing, indent=2))
        return
    es = listing["entries"]
    if clear or prune:
        return
    if not es:
        click.echo(f"no encoded corpora in {where}")
        return
    table = [("entry", "corpus", "tokenizer", "tokens", "size", "last used")]
    for e in es:
        used = datetime.datetime.fromtimestamp(e["used"]).strftime("%Y-%m-%d %H:%M")
        table.append((e["name"][:12], str(e.get("source") or "(older format)"), str(e.get("tokenizer") or "-"),
                      f"{e['tokens']:,} {e['dtype']}" if "tokens" in e else "-", _mb(e["bytes"]), used))
    widths = [max(len(row[i]) for row in table) for i in range(len(table[0]))]
    for row in table:
        click.echo("  ".join(cell.ljust(w) for cell, w in zip(row, widths)).rstrip())
    click.echo(f"\n{len(es)} entries, {_mb(listing['bytes'])} in {where} "
               "('charrnn cache --clear' removes them; runs re-encode when needed)")
