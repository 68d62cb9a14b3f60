"""A setting and the helpers of a table of them: ``Setting`` (its type, default, bounds or choices, help,
topic and resume rule, and the check of a value), the registries of names the pipeline implements,
the topics of ``--help``, and validating keywords against a table. No torch."""

from __future__ import annotations

import difflib
import inspect
import math
import os
import re
from dataclasses import dataclass, replace as _replace
from typing import Any

from charrnn.errors import CharrnnError

# Registries: the names each stage of the pipeline implements (the implementations key off these).
TOKENIZERS = ("char", "byte", "bpe", "unigram")   # tokenizers.fit_tokenizer
CELLS = ("lstm", "gru", "rnn",                     # model: nn.LSTM / nn.GRU / nn.RNN,
         "qrnn", "sru", "indrnn", "janet", "lstm-peephole")  # model/cells/
NO_WEIGHT_DROP = ("qrnn", "sru", "indrnn")         # cells without a recurrent matrix W_hh
HEADS = ("auto", "full", "adaptive")               # model.resolve_head / heads.py
PRECISIONS = ("auto", "fp32", "bf16")              # system.device.resolve_precision
DEVICES = ("auto", "cpu", "cuda", "mps")           # system.device.resolve_device
SPLITS = ("val", "test")                           # data.Corpus parts that can be evaluated
DEFAULT_MAX_EPOCHS = 10                            # when no limit at all is given
AUTO_PATIENCE = 4                                  # --patience when not given, under --max-time
ADAPTIVE_DROPOUT = {"gap": 0.15, "step": 0.1, "max": 0.5}  # --adaptive-dropout (training/adapt.py): nats/token
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
