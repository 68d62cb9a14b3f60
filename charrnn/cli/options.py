"""click options made from the settings table (settings.py): one option per Setting, its type,
default, choices and help taken from the table, and the shared --checkpoint-dir. No torch."""

from __future__ import annotations

import math

import click

from charrnn.settings import CHECKPOINT_DIR, Setting


class FiniteFloat(click.ParamType):
    name = "number"

    def convert(self, value, param, ctx):
        if isinstance(value, float):
            v = value
        else:
            try:
                v = float(value)
            except (TypeError, ValueError):
                self.fail(f"{value!r} is not a number", param, ctx)
        if not math.isfinite(v):
            self.fail(f"{value!r} is not a finite number", param, ctx)
        return v


NUMBER = FiniteFloat()


def checkpoint_dir_option(help: str):
    """--checkpoint-dir (default settings.CHECKPOINT_DIR), with what it does in this command."""
    return click.option("--checkpoint-dir", default=CHECKPOINT_DIR, show_default=True, metavar="DIR", help=help)


# the commands that read a model: MODEL (a run name, run directory or .pt file) is looked up here
CKPT_DIR = checkpoint_dir_option("Directory that holds the runs: where a run NAME is looked up, and the latest "
                                 "run found when no MODEL is given.")
MODEL_HELP = ("MODEL is a run name (see 'charrnn runs'), a run directory or a .pt file; "
              "default: the latest run under --checkpoint-dir")


def model_doc(f):
    """Put the shared sentence on MODEL ({MODEL_HELP}) into a command's help."""
    f.__doc__ = f.__doc__.replace("{MODEL_HELP}", MODEL_HELP)
    return f


def option(s: Setting):
    """The click option of one setting: type, default, choices and help all come from the table."""
    if s.type is bool:
        decl = f"{s.flag}/--no-{s.flag[2:]}" if s.negatable else s.flag
        return click.option(decl, s.name, is_flag=True, default=s.default, show_default=s.negatable,
                            help=s.help)
    kind = click.Choice(s.choices) if s.choices else {int: int, float: NUMBER, str: str}[s.type]
    return click.option(s.flag, s.name, type=kind, default=s.default, show_default=s.default not in (None, ()),
                        metavar=s.metavar, help=s.help, multiple=s.multiple)


def options(table, skip=()):
    def decorate(f):
        for s in reversed([s for s in table if s.name not in skip]):
            f = option(s)(f)
        return f
    return decorate
