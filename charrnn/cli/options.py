"""click options made from the settings table (settings.py): one option per Setting, its type,
default, choices and help taken from the table, and the shared --checkpoint-dir. No torch."""

from __future__ import annotations

import math

import click

from charrnn.settings import TRAIN, Setting, by_name


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


class CommaList(click.ParamType):
    """One number, or a comma list of them (``0.5,0.8,1.0``: a tuple) for settings marked ``listed``."""

    name = "number[,number...]"

    def __init__(self, item: click.ParamType):
        self.item = click.types.convert_type(item)

    def convert(self, value, param, ctx):
        if not isinstance(value, str):
            return value
        parts = value.split(",")
        if len(parts) == 1:
            return self.item.convert(value, param, ctx)
        if any(not p.strip() for p in parts):
            self.fail(f"{value!r} is not a comma list of numbers (e.g. 0.5,0.8,1.0)", param, ctx)
        values = []
        for p in parts:
            try:
                values.append(self.item.convert(p.strip(), param, ctx))
            except click.BadParameter as e:
                self.fail(f"in the list {value!r}: {e.message}", param, ctx)
        return tuple(values)
CKPT_DIR = click.option("--checkpoint-dir", default=by_name(TRAIN)["checkpoint_dir"].default, show_default=True,
                        metavar="DIR", help=by_name(TRAIN)["checkpoint_dir"].help)


def option(s: Setting):
    """The click option of one setting: type, default, choices and help all come from the table."""
    if s.type is bool:
        decl = f"{s.flag}/--no-{s.flag[2:]}" if s.negatable else s.flag
        return click.option(decl, s.name, is_flag=True, default=s.default, show_default=s.negatable,
                            help=s.help)
    kind = click.Choice(s.choices) if s.choices else {int: int, float: NUMBER, str: str}[s.type]
    if s.listed:
        kind = CommaList(kind)
    return click.option(s.flag, s.name, type=kind, default=s.default, show_default=s.default not in (None, ()),
                        metavar=s.metavar, help=s.help, multiple=s.multiple)


def options(table, skip=()):
    def decorate(f):
        for s in reversed([s for s in table if s.name not in skip]):
            f = option(s)(f)
        return f
    return decorate
