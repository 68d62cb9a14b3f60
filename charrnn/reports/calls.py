"""The Python calls behind the "see inside" and housekeeping commands: each returns data and prints
nothing; the CLI (charrnn inspect, runs, plot, corpora, cache) prints what they return.

    charrnn.inspect(run)          an Inspection dict (str(): the report)
    charrnn.runs()                a RunTable: one dict per run (str(): the table)
    charrnn.plot(run, other)      a matplotlib Figure (shown inline in a notebook)
    charrnn.corpora()             the named corpora: name, size, downloaded?, path, ...
    charrnn.fetch_corpus(name)    download one now; its path
    charrnn.cache()               the encoded-corpus cache: entries(), clear(), prune(max_gb)

A run is a TrainResult, a Model, a run directory, a .pt file or a run name under checkpoint_dir;
charrnn.api re-exports these (it is the front door). No torch at import: a report that reads a
checkpoint (or rundir, through fileio) imports it when it runs: charrnn.corpora() stays torch-free.
"""

from __future__ import annotations

import os
import sys

from charrnn.errors import CharrnnError
from charrnn.settings import CHECKPOINT_DIR


def run_dir_of(run, checkpoint_dir: str = CHECKPOINT_DIR) -> str:
    """The run directory of ``run`` (see the module docstring; rundir.resolve_run_dir); None: the latest."""
    from charrnn.system import rundir

    return rundir.resolve_run_dir(rundir.as_arg(run), checkpoint_dir)


# ----------------------------------------------------------------------------- runs and checkpoints

def inspect(run=None, *, checkpoint_dir: str = CHECKPOINT_DIR):
    """What is inside a checkpoint: model, tokenizer, the parameter table (each part with its closed
    form), and how it was trained; as ``charrnn inspect --json`` prints it (a dict; ``print()`` it
    for the report). A run directory (or TrainResult, or None: the latest run) is read from its
    last.pt, which holds the whole training history; a Model from its own checkpoint."""
    from charrnn.reports.inspect import inspect_checkpoint
    from charrnn.system import rundir

    return inspect_checkpoint(rundir.resolve_checkpoint(rundir.as_arg(run), checkpoint_dir, prefer=rundir.LAST))


def runs(checkpoint_dir: str = CHECKPOINT_DIR):
    """One dict per run under ``checkpoint_dir``, most recently updated first: name, path, corpus,
    tokenizer, model, steps, elapsed, best_val_bpc, best_step, updated, training (still running?).
    ``print()`` it for the table of ``charrnn runs``."""
    from charrnn.reports.runs import list_runs

    return list_runs(os.fspath(checkpoint_dir))


def plot(*runs, checkpoint_dir: str = CHECKPOINT_DIR, title: str | None = None):
    """The training curves of ``runs`` (none: the latest run), overlaid, as a matplotlib Figure:
    bits per character against steps and against wall time, the learning rate, and the gradient
    norm before clipping. ``fig.savefig("curves.png")`` writes it; a notebook shows it inline.
    Needs matplotlib (``pip install 'charrnn[plot]'``)."""
    from charrnn.reports.plot import figure

    return figure([run_dir_of(r, checkpoint_dir) for r in runs or (None,)], title)


# ----------------------------------------------------------------------------- named corpora

def corpora() -> list[dict]:
    """The named corpora ('charrnn train NAME' downloads one on first use), one dict each: name,
    description, size (bytes of text), download_size, url, split, tokenizer, downloaded, status
    (downloaded, unverified or missing), path, licence, citation."""
    from charrnn.data import named

    rows = []
    for name in named.catalogue():
        e, state = named.entry(name), named.status(name)
        rows.append({"name": name, "description": e.get("description", ""), "size": e["text_size"],
                     "download_size": e["size"], "url": e["url"], "split": e["split"], "tokenizer": e["tokenizer"],
                     "downloaded": state == "downloaded", "status": state, "path": e["path"],
                     "licence": e.get("licence", ""), "citation": e.get("citation", "")})
    return rows


def fetch_corpus(name: str, *, progress: bool = True, verbose: bool = True) -> str:
    """Download and verify named corpus ``name`` now (once; later calls read the file); its path.
    ``progress``: a download bar on a terminal; ``verbose``: what happens, on stderr."""
    from charrnn.data import named

    log = (lambda msg: print(msg, file=sys.stderr, flush=True)) if verbose else None
    return named.fetch(name, progress=progress, log=log)


# ----------------------------------------------------------------------------- the encoded-corpus cache

def cache(checkpoint_dir: str = CHECKPOINT_DIR) -> "Cache":
    """The encoded-corpus cache of ``checkpoint_dir`` (its .cache folder): ``entries()``, ``bytes``,
    ``clear()``, ``prune(max_gb)``, as ``charrnn cache`` lists, clears and prunes it."""
    return Cache(os.fspath(checkpoint_dir))


class Cache:
    """Each corpus a run trained on, encoded once and memory-mapped, keyed by its content and the
    encoding settings (a changed file or tokenizer never reuses an old entry)."""

    def __init__(self, checkpoint_dir: str = CHECKPOINT_DIR):
        from charrnn.system import rundir

        self.path = rundir.cache_dir(checkpoint_dir)

    def entries(self) -> list[dict]:
        """One dict per encoded corpus, least recently used first: name, path, bytes, used (a Unix
        time), format, and (current format) source, tokenizer, tokens, dtype."""
        from charrnn.data import store

        return store.entries(self.path)

    @property
    def bytes(self) -> int:
        return sum(e["bytes"] for e in self.entries())

    def clear(self) -> tuple[int, int]:
        """Remove every entry (runs re-encode their corpus when next used): (entries, bytes) removed."""
        from charrnn.data import store

        return store.clear(self.path)

    def prune(self, max_gb: float | None = None, *, log=None) -> int:
        """Evict the least recently used entries until the cache fits ``max_gb`` (default: the
        cache_max_gb setting); the bytes freed."""
        from charrnn.data import store
        from charrnn.settings import TRAIN, by_name

        max_gb = by_name(TRAIN)["cache_max_gb"].default if max_gb is None else max_gb
        if not isinstance(max_gb, (int, float)) or isinstance(max_gb, bool) or not max_gb > 0:
            raise CharrnnError(f"the size to prune down to must be a number of GB above 0 (got {max_gb!r})")
        return store.prune(self.path, max_gb * 1e9, log=log)

    def to_dict(self) -> dict:
        """What ``charrnn cache --json`` prints: cache_dir, bytes, entries."""
        es = self.entries()
        return {"cache_dir": self.path, "bytes": sum(e["bytes"] for e in es), "entries": es}

    def __repr__(self) -> str:
        es = self.entries()
        return f"<charrnn cache {self.path}: {len(es)} entries, {sum(e['bytes'] for e in es) / 1e6:,.1f} MB>"
