"""Every setting defined once: the declarative tables behind the CLI flags (grouped by topic in
``--help``), the API's keywords, validation, the resume rule and the flag tables of docs/cli/.
Imports no torch (fast ``--help``).

Adding a training setting is one ``Setting(...)`` entry in TRAIN below; the click option, the
``charrnn.train(...)`` keyword, its validation and whether ``--resume`` may change it all follow.
"""

from __future__ import annotations

import difflib
import importlib.util
import inspect
import math
import os
import re
from dataclasses import asdict, dataclass, field, make_dataclass, replace as _replace
from typing import Any

from charrnn.errors import CharrnnError

# Registries: the names each stage of the pipeline implements (the implementations key off these).
TOKENIZERS = ("char", "byte", "bpe", "unigram")   # tokenizers.fit_tokenizer
CELLS = ("lstm", "gru", "rnn")                     # model: nn.LSTM / nn.GRU / nn.RNN
HEADS = ("auto", "full", "adaptive")               # model.resolve_head / heads.py
PRECISIONS = ("auto", "fp32", "bf16")              # system.device.resolve_precision
DEVICES = ("auto", "cpu", "cuda", "mps")           # system.device.resolve_device
SPLITS = ("val", "test")                           # data.Corpus parts that can be evaluated
DEFAULT_MAX_EPOCHS = 10                            # when no limit at all is given
CHECKPOINT_DIR = "checkpoints"                     # --checkpoint-dir: where the runs are (every command)


@dataclass(frozen=True)
class Setting:
    """One setting: its type, default, allowed values and help (shown by --help and docs/cli)."""

    name: str
    type: type                   # int, float, str or bool
    default: Any
    help: str
    choices: tuple | None = None
    min: float | None = None     # lowest allowed value (inclusive unless min_open)
    max: float | None = None     # highest allowed value (inclusive unless max_open)
    min_open: bool = False
    max_open: bool = False
    optional: bool = False       # None is allowed (and is the default)
    resumable: bool = False      # may change on --resume
    negatable: bool = False      # bool flag with a --no- form
    metavar: str | None = None
    rule: str | None = None      # wording of the allowed range, where the generic one reads badly
    multiple: bool = False       # repeatable: the value is a tuple of such values (default ())
    escapes: bool = False        # a string in which \n, \t, \r and \\ are read as escapes (see unescape)
    group: str | None = None     # the topic it is listed under in --help and docs/cli (a key of GROUPS)
    listed: bool = False         # a comma list of values is accepted too (a tuple: one run per value)

    @property
    def flag(self) -> str:
        return "--" + self.name.replace("_", "-")

    def check(self, value) -> Any:
        """The value, validated (ints accepted for floats); a one-line CharrnnError otherwise."""
        if self.multiple:  # a tuple of values (one value alone is accepted as a tuple of one)
            values = (value,) if isinstance(value, (str, int, float)) else value
            if not isinstance(values, (tuple, list)):
                raise CharrnnError(f"{self.flag} must be a {self.type.__name__} or a list of them (got {value!r})")
            return tuple(_replace(self, multiple=False).check(v) for v in values)
        if self.listed and isinstance(value, (tuple, list)):  # e.g. --temp 0.5,0.8,1.0
            if not value:
                raise CharrnnError(f"{self.flag} needs at least one value")
            return tuple(_replace(self, listed=False).check(v) for v in value)
        if value is None and self.optional:
            return None
        if self.type is bool:
            if not isinstance(value, bool):
                raise CharrnnError(f"{self.flag} must be true or false (got {value!r})")
            return value
        if self.type is int:
            if isinstance(value, bool) or not isinstance(value, int):
                raise CharrnnError(f"{self.flag} must be an integer (got {value!r})")
        elif self.type is float:
            if isinstance(value, bool) or not isinstance(value, (int, float)):
                raise CharrnnError(f"{self.flag} must be a number (got {value!r})")
            if not math.isfinite(value):
                raise CharrnnError(f"{self.flag} must be a finite number (got {value})")
            value = float(value)
        elif isinstance(value, os.PathLike):
            value = os.fspath(value)  # paths as pathlib.Path objects are welcome
        if self.type is str and not isinstance(value, str):
            raise CharrnnError(f"{self.flag} must be a string (got {value!r})")
        if self.escapes:
            value = unescape(self.flag, value)
        if self.choices is not None and value not in self.choices:
            raise CharrnnError(f"unknown {self.flag} {value!r}; choose one of {', '.join(self.choices)}")
        low_bad = self.min is not None and (value <= self.min if self.min_open else value < self.min)
        high_bad = self.max is not None and (value >= self.max if self.max_open else value > self.max)
        if low_bad or high_bad:
            rule = self.range_text()
            raise CharrnnError(f"{self.flag} must {'not be negative' if rule == 'not negative' else 'be ' + rule} "
                               f"(got {value:g})")
        return value

    def range_text(self) -> str:
        if self.rule:
            return self.rule
        if self.max is None and self.min == 0:
            return "positive" if self.min_open else "not negative"
        if self.type is int and self.min == 1 and self.max is None and not self.optional:
            return "a positive integer"
        if self.min is not None and self.max is not None:
            return f"in {'(' if self.min_open else '['}{self.min:g}, {self.max:g}{')' if self.max_open else ']'}"
        if self.min is not None:
            return f"{'above' if self.min_open else 'at least'} {self.min:g}"
        return f"{'below' if self.max_open else 'at most'} {self.max:g}"


ESCAPES = {"n": "\n", "t": "\t", "r": "\r", "\\": "\\"}


def unescape(flag: str, value: str) -> str:
    """A flag value with the escapes \\n (newline), \\t (tab), \\r and \\\\ (backslash) read, so that
    ``--records '\\n'`` works in a shell; any other backslash sequence is refused."""
    def one(m):
        if m.group(1) not in ESCAPES:
            what = f"unknown escape '\\{m.group(1)}'" if m.group(1) else "a lone backslash at the end"
            raise CharrnnError(f"{flag} '{value}' has {what}; use \\n, \\t, \\r or \\\\ (a backslash)")
        return ESCAPES[m.group(1)]
    return re.sub(r"\\(.?)", one, value, flags=re.S)


# The topics of --help and of docs/cli/*.md, in the order they are listed: key -> heading ("Data options").
GROUPS = {
    "data": "Data", "model": "Model", "regularisation": "Regularisation", "optimisation": "Optimisation",
    "budget": "Budget and device",                                          # charrnn train
    "prime": "Prime", "sampling": "Sampling", "stopping": "Stopping",       # charrnn sample
    "text": "Text", "dynamic": "Dynamic evaluation", "scoring": "Scoring",  # charrnn eval, charrnn score
    "output": "Output", "device": "Device",                                 # all of them
}


def grouped(*entries) -> tuple[Setting, ...]:
    """A table from settings and group names: each name (a key of GROUPS) puts the settings after it
    under its heading (a setting made with its own group keeps it)."""
    group, table = None, []
    for e in entries:
        if isinstance(e, str):
            if e not in GROUPS:
                raise ValueError(f"unknown settings group {e!r}")
            group = e
        else:
            table.append(e if e.group else _replace(e, group=group))
    return tuple(table)


S = Setting
POS = dict(type=int, min=1)
TRAIN = grouped(
    "data",  # and the tokenizer
    S("corpus", str, "pystdlib", "The text to train on: a UTF-8 file, or the built-in 'pystdlib' corpus.",
      resumable=True),
    S("tokenizer", str, "char", "char: Unicode characters; byte: UTF-8 bytes; bpe/unigram: sentencepiece.",
      choices=TOKENIZERS),
    S("vocab_size", default=512, help="Vocabulary size of a bpe/unigram tokenizer.", **POS),
    S("val_frac", float, 0.05, "Fraction of the text (after train) held out for validation.", min=0, max=1,
      max_open=True),
    S("test_frac", float, 0.05, "Fraction of the text (at the end) held out for testing.", min=0, max=1,
      max_open=True),
    S("val_file", str, None, "Validate on this file instead of a slice of the corpus.", optional=True,
      resumable=True, metavar="PATH"),
    S("records", str, None, "The corpus is independent records, each ending in SEP (e.g. `\\n`: one per line; the "
      "escapes `\\n`, `\\t`, `\\\\` are read): each is modelled from a fresh state, its ending SEP included.",
      optional=True, metavar="SEP", escapes=True),
    S("batch_size", default=32, help="Parallel streams per step (B).", **POS),
    S("seq_len", default=128, help="Window length T of truncated backprop through time.", **POS),
    "model",
    S("cell", str, "lstm", "Recurrent cell.", choices=CELLS),
    S("layers", default=2, help="Stacked recurrent layers.", **POS),
    S("hidden", default=512, help="Hidden units per layer.", **POS),
    S("emb", default=64, help="Embedding size.", **POS),
    "regularisation",
    S("dropout", float, 0.1, "Dropout on embeddings, between layers and before the output layer.", min=0, max=1,
      max_open=True),
    S("locked_dropout", bool, False, "Make --dropout locked (variational): one mask per sequence, shared across "
      "time, on the embedding output, between layers and before the output layer.", negatable=True),
    S("weight_drop", float, 0.0, "DropConnect on the recurrent weights W_hh (AWD-LSTM): each is dropped with this "
      "probability per step (the fused kernel is kept; training only).", min=0, max=1, max_open=True, metavar="P"),
    S("embed_dropout", float, 0.0, "Drop whole rows of the embedding matrix (every occurrence of a token in a step) "
      "with this probability.", min=0, max=1, max_open=True, metavar="P"),
    "model",
    S("tie_weights", bool, False, "Share embedding and output weights (needs --emb equal to --hidden).",
      negatable=True),
    S("head", str, "auto", "Output layer: full softmax, or adaptive softmax (cheap for big vocabularies, e.g. "
      "Chinese); auto: adaptive above 1024 tokens.", choices=HEADS),
    S("init_from", str, None, "Fine-tune: start a new run from this checkpoint's weights and tokenizer (a run "
      "directory: its best.pt); the architecture comes from it.", optional=True, metavar="CKPT|RUN_DIR"),
    S("extend_vocab", bool, False, "With --init-from: add the characters the model never saw to its vocabulary."),
    S("skip_unknown", bool, False, "With --init-from: drop the characters the model never saw from the text."),
    "optimisation",
    S("lr", float, 3e-3, "Peak learning rate (AdamW).", min=0, min_open=True),
    S("min_lr_frac", float, 0.1, "Final learning rate as a fraction of --lr (cosine decay).", min=0, max=1),
    S("warmup", int, 30, "Linear warmup steps.", min=0),
    S("weight_decay", float, 0.01, "AdamW weight decay on weight matrices.", min=0),
    S("grad_clip", float, 1.0, "Clip the global gradient norm to this (0: off).", min=0),
    "regularisation",
    S("ema", float, 0.0, "Keep an exponential moving average of the weights with this decay (e.g. 0.999; 0: off); "
      "evaluations and best.pt use the averaged weights.", min=0, max=1, max_open=True, metavar="DECAY"),
    S("variable_len", bool, False, "Randomized truncation (AWD-LSTM): each step's window length is drawn around "
      "--seq-len (up to 1.2x), and the learning rate scaled by length / --seq-len.", negatable=True),
    "budget",  # when to stop, and on what
    S("max_steps", int, None, "Stop after this many steps.", min=1, optional=True, resumable=True),
    S("max_epochs", float, None, f"Stop after this many passes over the training text ({DEFAULT_MAX_EPOCHS} if no "
      "limit is given).", min=0, min_open=True, optional=True, resumable=True),
    S("max_time", float, None, "Stop within this wall time for the whole run, from its start to its last file "
      "(start-up, the budget's probe, evaluations and saves included); the LR schedule fits the budget.",
      min=0, min_open=True, optional=True, resumable=True, metavar="SECONDS"),
    S("budget", bool, True, "With --max-time: choose the layers, hidden size, batch, window and evaluation "
      "interval not given, for this machine and this budget (a short probe, cached per machine; --no-budget: the "
      "fixed defaults).", negatable=True, resumable=True),
    S("patience", int, 0, "Stop after this many evaluations without improvement (0: never).", min=0,
      resumable=True),
    "output",
    S("eval_every", default=200, help="Evaluate on the validation split (--eval-tokens of it) every N steps.",
      resumable=True, **POS),
    S("eval_tokens", int, 131072, "Periodic evaluations score this many tokens of the validation split, the same "
      "ones each time, spread over it (0: all); the run's final evaluation and `charrnn eval` score every token.",
      min=0, resumable=True, metavar="N"),
    S("save_every", default=200, help="Write last.pt every N steps (also at the end and on Ctrl-C).",
      resumable=True, **POS),
    S("sample_every", int, None, "Every N steps print a short sample beside the evaluation line and record it in "
      "metrics.jsonl (split \"sample\"); the same seed each time, so successive samples show what the model "
      "learned (a records run: a few records, one per line). Off unless given.", min=1, optional=True,
      resumable=True, metavar="N"),
    S("sample_length", int, 200, "Tokens of each --sample-every sample (a records run: at most this many per "
      "record).", min=1, resumable=True, metavar="N"),
    S("sample_prime", str, "", "Text the --sample-every samples start from (default: a new line; the escapes "
      "`\\n`, `\\t`, `\\\\` are read).", resumable=True, metavar="TEXT", escapes=True),
    S("keep_checkpoints", int, None, "Also keep the K most recent evaluated checkpoints as "
      "step-<n>-val-<loss>.pt (the oldest removed first; list them with charrnn runs RUN).", min=1,
      optional=True, resumable=True, metavar="K", rule="a positive integer (how many to keep)"),
    S("tensorboard", bool, False, "Write TensorBoard event files to RUN/tensorboard: losses, bits/char, learning "
      "rate, gradient norm, tokens/s and the --sample-every samples (needs pip install 'charrnn[tensorboard]').",
      resumable=True),
    S("log_every", default=50, help="Record train loss to metrics.jsonl every N steps.", resumable=True, **POS),
    "optimisation",
    S("seed", int, 1337, "Random seed."),
    "budget",
    S("device", str, "auto", "auto: CUDA if present, else Apple's MPS, else the CPU.", choices=DEVICES,
      resumable=True),
    S("precision", str, "auto", "auto: bf16 autocast on CPUs with AMX, fp32 (TF32 matmuls) elsewhere.",
      choices=PRECISIONS, resumable=True),
    "optimisation",
    S("skip_nonfinite", bool, False, "Skip (and count) batches with a non-finite loss or gradient instead of "
      "stopping.", resumable=True),
    "output",
    S("name", str, None, "Run name (default: from the corpus file name).", optional=True, resumable=True),
    S("checkpoint_dir", str, CHECKPOINT_DIR, "Directory that holds the runs: a new run goes to DIR/<name>/; --resume looks up a run NAME, "
      "or the latest run, here.",
      resumable=True, metavar="DIR"),
    S("cache_max_gb", float, 20.0, "Encoded corpora kept in DIR/.cache (see `charrnn cache`) up to this size; the "
      "least recently used are evicted first.", min=0, min_open=True, resumable=True, metavar="GB"),
)

SAMPLE = grouped(
    "sampling",
    S("temp", float, 0.8, "Sampling temperature; 0 is greedy (always the most likely token). A comma list "
      "(0.5,0.8,1.0) gives one labelled sample per temperature.", min=0, rule="0 (greedy) or positive",
      listed=True),
    "stopping",
    S("length", int, 1000, "Tokens to generate (per sample; an upper bound when a sample may stop earlier).",
      min=0),
    "prime",
    S("prime_file", str, None, "Start from the text of this UTF-8 file (used verbatim) instead of --prime.",
      optional=True, metavar="PATH"),
    "sampling",
    S("top_k", int, 0, "Sample among the k most likely (0: all).", min=0),
    S("top_p", float, 1.0, "Nucleus sampling: among the most likely tokens whose probabilities add up to P "
      "(1: off); applied after --temp and --top-k.", min=0, max=1, min_open=True, metavar="P"),
    S("seed", int, None, "Random seed: the same seed gives the same text.", optional=True),
    S("num_samples", int, 1, "Generate N samples at once, as N parallel streams of one batch.", min=1, metavar="N"),
    "stopping",
    S("stop", str, (), "End a sample right after it generates this text (repeatable; a newline in bash: "
      "$'\\n').", multiple=True, metavar="TEXT"),
    S("strip_stop", bool, False, "Leave the stop text out of the sample."),
    S("max_lines", int, None, "End a sample after it generates N line breaks.", min=1, optional=True,
      metavar="N"),
    S("line_starts", str, None, "Begin each line with the next of these characters (acrostic; the first line "
      "too when the prime is empty or ends a line); end after the last one's line.", optional=True,
      metavar="CHARS"),
    "sampling",
    S("beam", int, None, "Beam search with K beams: the most likely text of --length tokens (deterministic; "
      "--num-samples up to K best).", min=1, optional=True, metavar="K"),
    "device",
    S("precision", str, "fp32", "Matrix products of each step. fp32: a seed gives the same text for a checkpoint "
      "on every CPU. bf16: inputs rounded to bfloat16 (states and output layer fp32), 1.5-1.8x faster on CPUs "
      "that multiply bf16 in hardware (measured with AVX512-BF16: docs/BENCHMARKS.md); the same samples in "
      "distribution, not the same text; elsewhere it says so and samples in fp32. auto: fp32.",
      choices=("fp32", "bf16", "auto")),
    "prime",
    S("skip_unknown", bool, False, "Drop prime characters the model never saw."),
    S("novel", bool, False, "A records run: keep only the samples that are not a record of the training split "
      "(exact match); --json marks every sample \"in_train\" either way."),
)

SCORING_PRECISION = S("precision", str, "auto", "auto: the precision the run trained with on this device.",
                      choices=PRECISIONS, group="device")
EVAL = grouped(
    "text",
    S("split", str, "val", "Which held-out part of the run's corpus to score.", choices=SPLITS),
    SCORING_PRECISION,
    S("skip_unknown", bool, False, "Drop characters of --file the model never saw."),
    S("baselines", bool, True, "Also the bits/char of gzip -9, bz2 -9, xz -9 and the order-0 entropy on the same "
      "text (its first 4 MiB; a few seconds), to say how good the model's figure is.", negatable=True),
    "dynamic",
    S("dynamic", bool, False, "Dynamic evaluation: after scoring each segment, one SGD step on it, so the model "
      "adapts to the text (weights restored afterwards; the checkpoint is not changed)."),
    S("dyn_lr", float, 0.1, "Learning rate of the --dynamic SGD steps (on a segment's mean nll).", min=0),
    S("dyn_seq", int, 50, "Tokens per --dynamic segment: each is scored, then trained on.", min=1),
    S("dyn_decay", float, 0.0, "Pull towards the trained weights per --dynamic step: theta += decay * (theta_0 "
      "- theta).", min=0, max=1),
)
DYNAMIC = ("dyn_lr", "dyn_seq", "dyn_decay")  # the settings that only act with --dynamic

SCORE = grouped(
    "scoring",
    S("independent", bool, False, "Score every line on its own, from a fresh state after a newline (to rank "
      "candidate lines); default: the text as one continuous stream."),
    S("per_char", bool, False, "Add each character's surprisal in bits (\"surprisal\": [...] per line, with --json)."),
    S("skip_unknown", bool, False, "Drop characters the model never saw (counted per line as \"skipped\")."),
    SCORING_PRECISION,
)


def by_name(table) -> dict[str, Setting]:
    return {s.name: s for s in table}


def check_values(table, values: dict, what: str = "setting") -> dict:
    """Validate keyword values against a table: unknown names get a 'did you mean' line."""
    known = by_name(table)
    out = {}
    for k, v in values.items():
        if k not in known:
            near = difflib.get_close_matches(k, known, n=1, cutoff=0.5)
            raise CharrnnError(f"unknown {what} {k!r}" + (f"; did you mean {near[0]!r}?" if near else
                                                          "; see the list with help() or --help"))
        out[k] = known[k].check(v)
    return out


def defaults(table) -> dict:
    return {s.name: s.default for s in table}


def signature(table, *leading: inspect.Parameter) -> inspect.Signature:
    """A keyword-only signature built from a table: notebooks tab-complete every setting."""
    params = [inspect.Parameter(s.name, inspect.Parameter.KEYWORD_ONLY, default=s.default) for s in table]
    return inspect.Signature([*leading, *params])


def help_lines(table) -> str:
    return "\n".join(f"    {s.name} ({s.default!r}): {s.help}" for s in table)


# ----------------------------------------------------------------------------- a run's settings

def _to_dict(self) -> dict:
    return asdict(self)


TrainConfig = make_dataclass(
    "TrainConfig", [(s.name, s.type if not s.optional else s.type | None, field(default=s.default)) for s in TRAIN],
    namespace={"to_dict": _to_dict, "__doc__": "A run's settings: one field per entry of settings.TRAIN."})


def make_config(**values) -> "TrainConfig":
    """Validated settings from keywords (each checked against its table entry and the others)."""
    cfg = TrainConfig(**check_values(TRAIN, values))
    check_combination(cfg)
    return cfg


def config_from_saved(saved: dict) -> "TrainConfig":
    """A run's settings as recorded in a checkpoint or config.json; settings it predates keep their
    defaults, entries this version no longer knows are ignored."""
    known = by_name(TRAIN)
    return TrainConfig(**{**PREDATED, **{k: v for k, v in saved.items() if k in known}})


# what a run saved before these settings existed did (their defaults may differ)
PREDATED = {"locked_dropout": False, "weight_drop": 0.0, "embed_dropout": 0.0, "ema": 0.0, "variable_len": False}


def check_combination(cfg) -> None:
    """Rules between settings (each value alone was checked by its table entry)."""
    if cfg.val_frac + cfg.test_frac >= 1:
        raise CharrnnError(f"--val-frac and --test-frac must sum below 1 (got {cfg.val_frac}, {cfg.test_frac})")
    if cfg.val_file is None and cfg.val_frac <= 0:
        raise CharrnnError("--val-frac 0 leaves no validation text; give a positive --val-frac or a --val-file")
    if cfg.tie_weights and cfg.head == "adaptive":
        raise CharrnnError("--tie-weights needs the full softmax head; use --head full (or auto)")
    if cfg.tie_weights and cfg.emb != cfg.hidden:
        raise CharrnnError(f"--tie-weights needs --emb equal to --hidden (got {cfg.emb} and {cfg.hidden})")
    if cfg.name is not None and (not cfg.name or "/" in cfg.name or cfg.name in (".", "..")):
        raise CharrnnError(f"--name {cfg.name!r} must be a plain directory name")
    if cfg.records == "":
        raise CharrnnError("--records '' is empty; give the separator that ends each record, e.g. --records '\\n' "
                           "(one record per line) or '\\n\\n' (paragraphs)")
    for flag, on in (("--extend-vocab", cfg.extend_vocab), ("--skip-unknown", cfg.skip_unknown)):
        if on and cfg.init_from is None:
            raise CharrnnError(f"{flag} only applies when fine-tuning; add --init-from CKPT (or drop {flag})")
    if cfg.variable_len and cfg.records:
        raise CharrnnError("--variable-len does not apply to --records (each record has its own windows); "
                           "drop --variable-len")
    if cfg.tensorboard and not installed("tensorboard"):
        raise CharrnnError(NEEDS_TENSORBOARD)
    if cfg.extend_vocab and cfg.skip_unknown:
        raise CharrnnError("--extend-vocab and --skip-unknown exclude each other: add the unseen characters or "
                           "drop them, not both")


NEEDS_TENSORBOARD = ("--tensorboard needs the tensorboard package; install it with: "
                     "pip install 'charrnn[tensorboard]' (or pip install tensorboard)")


def installed(package: str) -> bool:
    """Whether an optional package can be imported (found, not imported: no cost)."""
    return importlib.util.find_spec(package) is not None


def apply_changes(cfg, changes: dict):
    """A resumed run's settings: only settings marked resumable may differ from the saved ones."""
    table = by_name(TRAIN)
    for k, v in check_values(TRAIN, changes).items():
        if not table[k].resumable and getattr(cfg, k) != v:
            raise CharrnnError(f"cannot change {table[k].flag} when resuming (the run has {getattr(cfg, k)!r}); "
                               "start a new run to change it")
        setattr(cfg, k, v)
    check_combination(cfg)
    return cfg


def with_default_limit(cfg):
    if not (cfg.max_steps or cfg.max_epochs or cfg.max_time):
        cfg.max_epochs = DEFAULT_MAX_EPOCHS
    return cfg
