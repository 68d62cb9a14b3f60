"""The Python API, the library's front door (the CLI is a thin layer over it):

    import charrnn
    run = charrnn.train("corpus.txt", hidden=256, max_time=60)   # every CLI setting, as a keyword
    model = charrnn.load("checkpoints/corpus")                   # run dir, best.pt or last.pt
    print(model.sample("ROMEO:", length=300, temp=0.8, seed=1))  # str
    for piece in model.stream("ROMEO:", length=300): ...         # text as it is generated
    model.evaluate("other.txt")                                  # loss, perplexity, bpc, bpb, ...
    model.evaluate("other.txt", dynamic=True)                    # the model adapting as it reads
    model.score("one line\nanother\n")                          # per line: chars, nll, bpc
    model.viz("some text")                                       # the neuron page (inline in a notebook)
    charrnn.train(texts=["one record", "another"], max_time=30)  # strings: a text, or a list of records
    run.plot(); charrnn.inspect(run); charrnn.runs()             # the CLI's reports, as data (reports/calls.py)

Errors raise ``charrnn.CharrnnError`` with a one-line message. Nothing is printed to stdout;
progress lines go to stderr (``verbose=False`` silences them) and the progress bar is a notebook
widget inside Jupyter/Colab.
"""

from __future__ import annotations

import os
import sys
from inspect import Parameter as P
from typing import Callable

from charrnn.data import named
from charrnn.data.corpus import is_builtin
from charrnn.data.inline import inline_text
from charrnn.errors import CharrnnError
from charrnn.model.checkpoint import load_checkpoint
from charrnn.system import clock, rundir
from charrnn.system.device import resolve_device
from charrnn.system.launch import env_world
from charrnn.system.progress import show_progress
from charrnn.training import budget
from charrnn.training import distributed
from charrnn.training.finetune import finetune_config
from charrnn.settings import (CHECKPOINT_DIR, TRAIN, adaptive_dropout, apply_changes, config_from_saved, defaults,
                              help_lines, make_config, signature, with_default_limit)
from charrnn.training.trainer import Trainer

from charrnn.api.model import Model  # noqa: E402  (the front door's names, in their modules)
from charrnn.api.result import TrainResult  # noqa: E402
from charrnn.reports.calls import cache, corpora, fetch_corpus, inspect, plot, runs  # noqa: E402,F401  (re-exported)

CHOICE_KEY = "budget_choice"  # config.json: what was chosen and why (not a setting: resume never compares it)


def _choice(record: dict | None) -> dict:
    return {CHOICE_KEY: record} if record else {}


def _logger(verbose: bool):
    return (lambda msg: print(msg, file=sys.stderr, flush=True)) if verbose else (lambda msg: None)


def _corpus_path(corpus: str) -> str:
    """Built-in corpus names stay names; files become absolute paths (so a run resumes from anywhere)."""
    corpus = os.fspath(corpus)
    return corpus if is_builtin(corpus) else os.path.abspath(corpus)


def _named_corpus(values: dict, progress: bool | None, log) -> None:
    """A catalogue name (enwik8, text8, tinyshakespeare): fetched once; its standard split and
    tokenizer become the defaults of settings the caller did not give. A file of that name wins."""
    name = values["corpus"]
    if os.path.exists(name) or is_builtin(name):
        return
    if not named.is_named(name):
        if os.sep not in name and "." not in name:  # a bare word: meant as a name, not a file
            raise CharrnnError(f"no file '{name}' and no named corpus '{name}'; the named corpora are "
                               f"{', '.join(sorted(named.catalogue()))} (see 'charrnn corpora')")
        return
    e = named.entry(name)
    for k, v in (*e["split"].items(), ("tokenizer", e["tokenizer"])):
        values.setdefault(k, v)
    values["corpus"] = named.fetch(name, progress=show_progress(progress), log=log)


def train(corpus=None, *, text: str | None = None, texts: list[str] | None = None, progress: bool | None = None,
          on_eval: Callable | None = None, on_log: Callable | None = None, verbose: bool = True,
          **settings) -> "TrainResult":
    clock.start_run()  # --max-time counts from here (from the process's start on the command line)
    log = _logger(verbose and env_world()[1] == 0)  # under torchrun rank 0 alone speaks
    inline = inline_text(text, texts, corpus, settings.get("records"))  # a string or a list: the run keeps it
    values = {**settings, "corpus": os.fspath(corpus) if corpus is not None else defaults(TRAIN)["corpus"]}
    if inline is None:
        _named_corpus(values, progress, log)
        values["corpus"] = _corpus_path(values["corpus"])
    elif inline.records is not None:
        values["records"] = inline.records
    if values.get("val_file") is not None:
        values["val_file"] = os.path.abspath(os.fspath(values["val_file"]))
    cfg, source = (finetune_config(values, explicit=set(settings)) if values.get("init_from") is not None
                   else (make_config(**values), None))  # source: the checkpoint being fine-tuned
    cfg = with_default_limit(cfg)
    cfg.adaptive_dropout = adaptive_dropout(cfg, set(settings))  # resolved: the run's config.json says which
    with distributed.session(cfg, resolve_device(cfg.device), given=set(settings)) as dist:  # under torchrun
        log = _logger(verbose and dist.main)
        # settings not given are chosen for this machine and --max-time (never for a fine-tuned architecture);
        # impossible runs are refused (budget.py)
        planner = budget.Planner(cfg, given=set(settings), log=log, cache_dir=rundir.cache_dir(cfg.checkpoint_dir),
                                 choose_settings=source is None)
        run_dir = dist.run_dir = dist.from_main(lambda: rundir.new_run_dir(
            cfg.checkpoint_dir, inline.name if inline else cfg.corpus, cfg.name))
        if inline:  # the text goes into the run directory (before any rank reads it), the corpus of the run
            cfg.corpus = dist.from_main(lambda: inline.write(run_dir))
        if dist.world > 1:
            log(dist.describe())
        try:
            with dist.main_only(rundir.RunLock(run_dir)):  # rank 0 owns the run directory
                trainer = Trainer(cfg, run_dir, log=log, dist=dist, progress=progress if dist.main else False, on_eval=on_eval,
                                  on_log=on_log, init_ckpt=source, prepare=planner)
                dist.write(rundir.write_config, run_dir, {**trainer.run_record(), **_choice(planner.record)})
                return TrainResult(trainer.fit())
        except BaseException:
            try:
                if inline and not rundir.has_checkpoint(run_dir):
                    dist.write(os.remove, cfg.corpus)  # nothing to resume: the text goes too
                dist.write(os.rmdir, run_dir)  # only succeeds if the failed run wrote nothing there
            except OSError:
                pass
            raise


train.__doc__ = f"""Train a new model; returns a TrainResult (run directory, best metrics, the best model).

    corpus: a UTF-8 text file, the built-in 'pystdlib' corpus (the default), or a named corpus
        (enwik8, text8, tinyshakespeare: downloaded once, with its standard split and tokenizer).
    text: train on this string instead (kept as text.txt in the run directory, so the run resumes;
        the run is named text-<digest> unless name= is given).
    texts: train on a list of strings, each a record modelled from a fresh state (as records=SEP
        does, with a separator none of them contains; a sample then writes one record).
    init_from: fine-tune: start a new run from this checkpoint's weights, tokenizer and architecture
        (architecture settings given here that contradict it are refused).
    progress: draw a progress bar (None: on a terminal or in a notebook).
    on_eval(record): called after every validation with its metrics (step, loss, bpc, ...).
    on_log(record): called every log_every steps with the training metrics.
    verbose: print progress lines to stderr.

Settings (the same as `charrnn train --help`, as keywords):
{help_lines(TRAIN[1:])}
"""
train.__signature__ = signature(
    TRAIN[1:], P("corpus", P.POSITIONAL_OR_KEYWORD, default=None),
    *[P(n, P.KEYWORD_ONLY, default=d) for n, d in (("text", None), ("texts", None), ("progress", None),
                                                    ("on_eval", None), ("on_log", None), ("verbose", True))])


def resume(run=None, *, checkpoint_dir: str = CHECKPOINT_DIR, progress: bool | None = None,
           on_eval: Callable | None = None, on_log: Callable | None = None, verbose: bool = True,
           **changes) -> "TrainResult":
    """Continue a run (a run name, run directory or last.pt; None: the latest) exactly where it stopped.

    Keywords change settings that may change on resume (limits such as max_time, evaluation and save
    intervals, device, precision); changing the model, tokenizer, data or optimizer is refused.
    """
    clock.start_run()  # --max-time counts from here (from the process's start on the command line)
    if "init_from" in changes:
        raise CharrnnError("--init-from starts a new run and cannot be combined with --resume; resume the run "
                           "alone (a fine-tuned run remembers where it started from)")
    path = rundir.resolve_checkpoint(rundir.as_arg(run), checkpoint_dir, prefer=rundir.LAST)
    run_dir = os.path.dirname(os.path.abspath(path))
    ckpt = load_checkpoint(path)  # under torchrun every rank reads it (multi-node: a path all nodes see)
    if ckpt.get("weights_only"):  # charrnn export --format pt
        raise CharrnnError(f"'{path}' is a weights-only export (no optimizer or training state) and cannot be "
                           "resumed; start a new run from it with --init-from")
    if not isinstance(ckpt.get("run_config"), dict):
        raise CharrnnError(f"checkpoint '{path}' has no run configuration; it cannot be resumed")
    if "corpus" in changes:
        changes["corpus"] = _corpus_path(changes["corpus"])
    cfg = apply_changes(config_from_saved(ckpt["run_config"]), changes)
    cfg.checkpoint_dir = os.path.dirname(run_dir)
    with distributed.session(cfg, resolve_device(cfg.device), resuming=True) as dist:  # under torchrun
        log, dist.run_dir = _logger(verbose and dist.main), run_dir
        if dist.world > 1:
            log(dist.describe())
        planner = budget.Planner(cfg, given=set(), log=log, choose_settings=False)  # memory check only
        with dist.main_only(rundir.RunLock(run_dir)):
            trainer = Trainer(cfg, run_dir, log=log, dist=dist, resume_ckpt=ckpt, progress=progress if dist.main else False,
                              on_eval=on_eval, on_log=on_log, prepare=planner)
            dist.write(rundir.truncate_metrics, run_dir, trainer.step)
            kept = (rundir.read_config(run_dir) or {}).get(CHOICE_KEY)
            dist.write(rundir.write_config, run_dir, {**trainer.run_record(), **_choice(kept)})
            log(f"resuming {path} at step {trainer.step}")
            return TrainResult(trainer.fit())


def load(path=None, *, device: str = "auto", checkpoint_dir: str = CHECKPOINT_DIR) -> "Model":
    """A trained model from a run name under checkpoint_dir (what ``charrnn runs`` lists), a run
    directory (its best.pt), a .pt file, or None (the latest run): rundir.resolve_checkpoint."""
    return Model(rundir.resolve_checkpoint(rundir.as_arg(path), checkpoint_dir), device)
