"""``charrnn.Model``: a trained model loaded for use (``charrnn.load``): sample, stream, generate,
evaluate, score, viz and export; each method validates its keywords against the settings tables."""

from __future__ import annotations

import os
from inspect import Parameter as P
from typing import Iterator

from charrnn.data.records import records_separator
from charrnn.data.store import IdFile
from charrnn.data.text import decode_text, read_bytes
from charrnn.errors import CharrnnError
from charrnn.evaluation.baselines import compression_baselines, text_of
from charrnn.evaluation.evaluate import evaluate_split, file_ids, split_ids, text_ids
from charrnn.evaluation.records import evaluate_run_split
from charrnn.evaluation.score import LineScores
from charrnn.generation.novelty import TrainRecords, check_records_run, mark
from charrnn.generation.sample import Job, Sample, sample_options
from charrnn.model.checkpoint import load_checkpoint, model_from_checkpoint
from charrnn.system.device import resolve_device, resolve_precision
from charrnn.system.progress import show_progress
from charrnn.settings import (DYNAMIC, EVAL, SAMPLE, SCORE, check_values, config_from_saved, defaults, help_lines,
                              signature)
from charrnn.reports.viz import MAX_CHARS, Page, make_page


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
        try:  # a file's ids are in an unnamed temporary file (store.IdFile), read a window at a time
            if len(ids) < 2:
                raise CharrnnError(f"{where} is too short to evaluate: it needs at least two tokens")
            dyn = {k[4:]: opts[k] for k in DYNAMIC} if opts["dynamic"] else None
            m = evaluate_split(self.module, tok, ids, n_chars, n_bytes, self.device, prec,
                               progress=show_progress(progress), desc="eval", dynamic=dyn)
            extra = {"dynamic": True, **{k: opts[k] for k in DYNAMIC}} if dyn else {}
            if opts["baselines"]:  # baselines.py: gzip, bz2, xz, order-0
                extra["baselines"] = compression_baselines(text_of(tok, ids))
        finally:
            if isinstance(ids, IdFile):
                ids.close()
        return {"checkpoint": self.path, "text": where, "tokenizer": tok.kind, **m, **extra}

    def score(self, text: str | None = None, *, file=None, progress: bool | None = None, **options) -> list[dict]:
        """Per line of a text (or of ``file=``): {"line", "text", "chars", "nll", "bpc"}; the text is read as
        one continuous stream (the lines' nll add up to evaluate()'s total), or each line alone after a
        newline (``independent=True``). ``per_char=True`` adds "surprisal": bits of every character."""
        return list(self.score_lines(text, file=file, progress=progress, **options))

    def score_lines(self, text: str | None = None, *, file=None, progress: bool | None = None,
                    **options) -> LineScores:
        """``score``'s records one line after another, for a file of any size: memory holds a piece of the
        text, never all of it (evaluation/score.py). ``len(...)`` is the number of lines, known at once;
        every check has been made before the first record comes."""
        opts = {**defaults(SCORE), **check_values(SCORE, options, "scoring option")}
        if (file is None) == (text is None):
            raise CharrnnError("give a text or a file to score (one of them)")
        if file is None and not isinstance(text, str):
            raise CharrnnError(f"the text to score must be a string (got {type(text).__name__})")
        if file is None and not text:
            raise CharrnnError("nothing to score: the text is empty")
        return LineScores(self.module, self.tokenizer, self.device, self._precision(opts["precision"]), text=text,
                          path=None if file is None else os.fspath(file), independent=opts["independent"],
                          per_char=opts["per_char"], skip_unknown=opts["skip_unknown"],
                          progress=show_progress(progress))

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
Model.score_lines.__signature__ = Model.score.__signature__
