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
from typing import Callable, Iterator

from charrnn.training import budget
from charrnn.data import named
from charrnn.training import distributed
from charrnn.system import clock, rundir
from charrnn.model.checkpoint import load_checkpoint, model_from_checkpoint
from charrnn.data.corpus import decode_text, is_builtin, read_bytes
from charrnn.data.inline import inline_text
from charrnn.errors import CharrnnError
from charrnn.evaluation.baselines import compression_baselines, text_of
from charrnn.evaluation.evaluate import evaluate_split, file_ids, split_ids, text_ids
from charrnn.training.finetune import finetune_config
from charrnn.data.records import records_separator
from charrnn.evaluation.records import evaluate_run_split
from charrnn.generation.novelty import TrainRecords, check_records_run, mark
from charrnn.system.device import resolve_device, resolve_precision
from charrnn.system.launch import env_world
from charrnn.system.progress import show_progress
from charrnn.generation.sample import Job, Sample, sample_options
from charrnn.evaluation.score import score_lines, scoring_text
from charrnn.settings import (CHECKPOINT_DIR, DYNAMIC, EVAL, SAMPLE, SCORE, TRAIN, apply_changes, check_values,
                              config_from_saved, defaults, help_lines, make_config, signature, with_default_limit)
from charrnn.training.trainer import Trainer
from charrnn.reports.calls import cache, corpora, fetch_corpus, inspect, plot, runs  # noqa: F401  (re-exported: the front door)
from charrnn.reports.viz import MAX_CHARS, Page, make_page

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


class Model:
    """A trained model, ready to sample from and to score text with.

    Attributes: path, config (the run's settings), tokenizer, module (the torch nn.Module),
    device, num_parameters.
    """

    def __init__(self, path: str, device: str = "auto"):
        self.path = path
        self.device = resolve_device(device)
        ckpt = load_checkpoint(path)
        self.module, self.tokenizer = model_from_checkpoint(ckpt, path)
        self.module.to(self.device).eval()
        run = ckpt.get("run_config")
        self.config = config_from_saved(run) if isinstance(run, dict) else None
        self._ckpt = {k: v for k, v in ckpt.items() if k not in ("model", "optimizer")}

    @property
    def num_parameters(self) -> int:
        return self.module.num_parameters()

    def __repr__(self) -> str:
        c = self.module.cfg
        return (f"<charrnn.Model {self.path}: {c.cell} {c.layers}x{c.hidden}, {self.tokenizer.kind} tokenizer "
                f"({c.vocab_size} tokens), {self.num_parameters:,} parameters>")

    def stream(self, prime: str = "", **options) -> Iterator:
        """Generate text piece by piece (first the prime, then new text as soon as it is final).

        With ``num_samples=N`` above 1 the N samples are generated together (one batch) and the
        pieces come as ``(index, text)`` pairs, index 1..N, the streams interleaved.
        """
        job = self._job(prime, options)  # a bad option or prime fails here, before anything is yielded
        if job.opts["novel"]:
            raise CharrnnError("novel=True keeps whole records that are new; use generate() or sample()")
        if job.opts["num_samples"] == 1:
            return job.pieces()
        return (e for e in job.events() if not isinstance(e, Sample))

    def sample(self, prime: str = "", **options) -> str | list[str]:
        """Generated text (the prime first) as one string; a list of N strings with ``num_samples=N`` > 1."""
        job = self._job(prime, options)
        texts = [s.text for s in self._samples(job)]
        return texts if job.opts["num_samples"] > 1 else texts[0]

    def generate(self, prime: str = "", **options) -> Iterator[Sample]:
        """One ``charrnn.generation.sample.Sample`` per sample (index, text, tokens, logprob, end), in index order,
        each as soon as it is finished: what ``charrnn sample --json`` prints."""
        return self._samples(self._job(prime, options))

    def _samples(self, job: Job) -> Iterator[Sample]:
        """The job's samples; with ``novel`` only records not in the training split (novelty.py)."""
        if not job.opts["novel"]:
            return job.samples()
        return mark(job.samples(), self.train_records(), records_separator(self._ckpt.get("run_config")), True)

    def train_records(self) -> TrainRecords:
        """A records run's training records (as hashes), read once: ``text in model.train_records()``."""
        if getattr(self, "_train_records", None) is None:
            check_records_run(self._ckpt.get("run_config"))
            self._train_records = TrainRecords.of_run(self._ckpt, self.path)
        return self._train_records

    def export(self, path, format: str = "onnx", *, force: bool = False, quantize: str | None = None,
               half: bool = False) -> dict:
        """Write the model as ONNX ("onnx"), one self-contained web page that generates text ("html",
        ``quantize="fp16"|"int8"`` for a smaller page) or a weights-only checkpoint ("pt", ``half=True``
        for fp16 weights); an existing path is refused unless ``force``. Returns {path, format, bytes}."""
        from charrnn.export import export

        return export(self.module, self.tokenizer, self._ckpt, os.fspath(path), format, force=force,
                      quantize=quantize, half=half, source=self.path)

    def _job(self, prime, options) -> Job:
        opts = sample_options(options)
        sep = records_separator(self._ckpt.get("run_config"))
        if opts["novel"]:
            check_records_run(self._ckpt.get("run_config"))
        if sep is not None and not opts["stop"]:  # a records model writes whole records, one each,
            opts.update(stop=(sep,), strip_stop=True)  # the separator ending it left out (--stop SEP keeps it)
        return Job(self.module, self.tokenizer, prime, opts, self.device, lead=sep or "")

    def evaluate(self, file=None, *, text: str | None = None, progress: bool | None = None, **options) -> dict:
        """Loss, perplexity, bits per character and per byte of a text file, a string (``text=``),
        or the run's own held-out split (``split="val"`` or ``"test"``, the default when no text is given).

        ``dynamic=True``: dynamic evaluation (``dyn_lr``, ``dyn_seq``, ``dyn_decay``): each segment is
        scored, then trained on with one SGD step; the weights are restored afterwards.

        ``"baselines"`` (unless ``baselines=False``): gzip -9, bz2 -9, xz -9 and order-0 bits/char of the
        same text (the first 4 MiB of a longer one: ``"sampled": True``), evaluation/baselines.py."""
        given = check_values(EVAL, options, "evaluation option")
        opts = {**defaults(EVAL), **given}
        stray = [k for k in DYNAMIC if k in given]
        if stray and not opts["dynamic"]:
            flag = "--" + stray[0].replace("_", "-")
            raise CharrnnError(f"{flag} only acts with --dynamic; add --dynamic or leave {flag} out")
        tok = self.tokenizer
        if file is not None and text is not None:
            raise CharrnnError("give a file or a text to evaluate, not both")
        prec = self._precision(opts["precision"])
        if file is None and text is None and records_separator(self._ckpt.get("run_config")) is not None:
            if opts["dynamic"]:
                raise CharrnnError("--dynamic reads a text as one stream; a --records run's split is scored "
                                   "record by record: give --file PATH for dynamic evaluation")
            m = evaluate_run_split(self.module, self._ckpt, self.path, opts["split"], self.device, prec,
                                   show_progress(progress), opts["baselines"])  # --records: each record alone
            return {"checkpoint": self.path, "text": f"{opts['split']} split of {self.config.corpus} (records)",
                    "tokenizer": tok.kind, **m}
        if file is not None:
            (ids, n_chars, n_bytes), where = file_ids(tok, os.fspath(file), opts["skip_unknown"]), os.fspath(file)
        elif text is not None:
            (ids, n_chars, n_bytes), where = text_ids(tok, text, opts["skip_unknown"]), "text"
        else:
            ids, n_chars, n_bytes = split_ids(self._ckpt, self.path, opts["split"])
            where = f"{opts['split']} split of {self.config.corpus}"
        if len(ids) < 2:
            raise CharrnnError(f"{where} is too short to evaluate: it needs at least two tokens")
        dyn = {k[4:]: opts[k] for k in DYNAMIC} if opts["dynamic"] else None
        m = evaluate_split(self.module, tok, ids, n_chars, n_bytes, self.device, prec,
                           progress=show_progress(progress), desc="eval", dynamic=dyn)
        extra = {"dynamic": True, **{k: opts[k] for k in DYNAMIC}} if dyn else {}
        if opts["baselines"]:  # baselines.py: gzip, bz2, xz, order-0
            extra["baselines"] = compression_baselines(text_of(tok, ids))
        return {"checkpoint": self.path, "text": where, "tokenizer": tok.kind, **m, **extra}

    def score(self, text: str | None = None, *, file=None, progress: bool | None = None, **options) -> list[dict]:
        """Per line of a text (or of ``file=``): {"line", "text", "chars", "nll", "bpc"}; the text is read as
        one continuous stream (the lines' nll add up to evaluate()'s total), or each line alone after a
        newline (``independent=True``). ``per_char=True`` adds "surprisal": bits of every character."""
        opts = {**defaults(SCORE), **check_values(SCORE, options, "scoring option")}
        if (file is None) == (text is None):
            raise CharrnnError("give a text or a file to score (one of them)")
        if file is not None:
            text = scoring_text(self.tokenizer, os.fspath(file))
        elif not isinstance(text, str):
            raise CharrnnError(f"the text to score must be a string (got {type(text).__name__})")
        return score_lines(self.module, self.tokenizer, text, self.device, self._precision(opts["precision"]),
                           independent=opts["independent"], per_char=opts["per_char"],
                           skip_unknown=opts["skip_unknown"], progress=show_progress(progress))

    def viz(self, text: str | None = None, *, file=None, max_chars: int = MAX_CHARS, layer: int | None = None,
            unit: int | None = None, state: str = "h", skip_unknown: bool = False) -> Page:
        """A page of ``text`` (or of ``file=``): every character coloured by the model's surprisal or by one
        hidden unit's activation (``layer``, ``unit``, ``state`` "h", or "c" for an LSTM's cell), the next
        characters it predicted on hover, and the units most correlated with quotes, brackets and line
        position. A notebook shows it inline; ``page.save("viz.html")`` writes it for any browser."""
        if (file is None) == (text is None):
            raise CharrnnError("give the text to show as a string or with file=PATH (one of them)")
        source = ""
        if file is not None:
            file = os.fspath(file)
            text, source = decode_text(read_bytes(file, "file"), file, "file"), os.path.basename(file)
        elif not isinstance(text, str):
            raise CharrnnError(f"the text to show must be a string (got {type(text).__name__})")
        name = f"{os.path.basename(os.path.dirname(os.path.abspath(self.path)))}/{os.path.basename(self.path)}"
        return make_page(self.module, self.tokenizer, text, name=name, max_chars=max_chars, skip_unknown=skip_unknown,
                         layer=layer, unit=unit, state=state, source=source)

    def _precision(self, asked: str) -> str:
        """auto: the precision the run trained with, resolved for this device."""
        trained = self.config.precision if self.config else "auto"
        return resolve_precision(asked if asked != "auto" else trained, self.device)


Model.stream.__signature__ = signature(SAMPLE, P("self", P.POSITIONAL_OR_KEYWORD),
                                       P("prime", P.POSITIONAL_OR_KEYWORD, default=""))
Model.sample.__signature__ = Model.generate.__signature__ = Model.stream.__signature__
Model.sample.__doc__ += f"""
        Options (the same as `charrnn sample --help`, as keywords):
{help_lines(SAMPLE)}
        """
Model.score.__signature__ = signature(SCORE, P("self", P.POSITIONAL_OR_KEYWORD),
                                      P("text", P.POSITIONAL_OR_KEYWORD, default=None),
                                      *[P(n, P.KEYWORD_ONLY, default=None) for n in ("file", "progress")])


class TrainResult:
    """What a training run left: its directory, why it stopped, the best and last validation metrics,
    every logged metric (``metrics``), and the best model (``model``, loaded on first use).

    ``best`` is the run's best validation figure: best.pt scored on the whole validation split (what
    ``charrnn eval``, ``runs`` and ``inspect`` report); ``last_val`` the last periodic evaluation
    (an estimate on --eval-tokens tokens when those bound it)."""

    def __init__(self, summary: dict):
        self.run_dir = summary["run_dir"]
        self.stop, self.steps, self.elapsed = summary["stop"], summary["step"], summary["elapsed"]
        self.last_val, self.skipped = summary["last_val"], summary["skipped"]
        self.best = rundir.full_best(self.run_dir, summary["best"])  # best.pt on the whole val split
        self._model = None

    @property
    def best_path(self) -> str:
        return os.path.join(self.run_dir, rundir.BEST)

    @property
    def metrics(self) -> list[dict]:
        """Every line of the run's metrics.jsonl: train records and val records (``split``)."""
        return rundir.read_metrics(self.run_dir)

    @property
    def model(self) -> Model:
        if self._model is None:
            self._model = load(self.run_dir)
        return self._model

    def plot(self, title: str | None = None):
        """The run's training curves as a matplotlib Figure (see ``charrnn.plot``, which overlays runs)."""
        return plot(self.run_dir, title=title)

    def __repr__(self) -> str:
        best = f", best val bpc {self.best['bpc']:.4f} at step {self.best['step']}" if self.best else ""
        return f"<charrnn.TrainResult {self.run_dir}: {self.steps} steps, {self.elapsed:.0f}s{best}>"
