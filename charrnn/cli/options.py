"""click options made from the settings table (settings.py): one option per Setting, its type,
default, choices, help and topic taken from the table, and the shared --checkpoint-dir; ``Command``,
whose --help lists the options in one section per topic ("Data options:", "Model options:", ...),
as docs/cli/*.md do (tools/gen_docs.py). No torch."""

from __future__ import annotations

import math

import click

from charrnn.settings import CHECKPOINT_DIR, GROUPS, Setting


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


class Option(click.Option):
    """A click option that knows its topic (a key of settings.GROUPS, or None)."""

    def __init__(self, *args, group: str | None = None, **kwargs):
        super().__init__(*args, **kwargs)
        self.group = group


class Command(click.Command):
    """A click command whose --help has one section of options per topic, in the order of
    settings.GROUPS; options without a topic come last under "Other options" (--help itself is
    listed in the last section). ``groups`` gives the topic of options not made from a Setting."""

    def __init__(self, *args, groups: dict[str, str] | None = None, **kwargs):
        super().__init__(*args, **kwargs)
        self.groups = dict(groups or {})
        unknown = set(self.groups.values()) - set(GROUPS)
        if unknown:
            raise ValueError(f"unknown option groups {sorted(unknown)}")

    def format_options(self, ctx, formatter):
        for title, params in sections(self, self.get_params(ctx)):
            rows = [r for r in (p.get_help_record(ctx) for p in params) if r]
            if rows:
                with formatter.section(title):
                    formatter.write_dl(rows)


def log(msg: str) -> None:
    """A diagnostic line on stderr (generated text and --json go to stdout)."""
    click.echo(msg, err=True)


def sections(command: click.Command, params) -> list[tuple[str, list]]:
    """The options among ``params`` under their headings, as --help lists them: [("Data options",
    [...]), ...]; one "Options" section for a command without topics."""
    groups = getattr(command, "groups", {})
    by_group: dict = {}
    help_opt = None
    for p in params:
        if not isinstance(p, click.Option) or p.hidden:  # hidden: a deprecated alias
            continue
        if p.name == "help" and groups.get("help") is None:
            help_opt = p
            continue
        by_group.setdefault(getattr(p, "group", None) or groups.get(p.name), []).append(p)
    if set(by_group) <= {None}:
        out = [("Options", by_group.get(None, []))]
    else:
        out = [(f"{GROUPS[g]} options", by_group[g]) for g in GROUPS if g in by_group]
        if None in by_group:
            out.append(("Other options", by_group[None]))
    if help_opt is not None:
        out[-1][1].append(help_opt)
    return out


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
                            help=s.help, cls=Option, group=s.group)
    kind = click.Choice(s.choices) if s.choices else {int: int, float: NUMBER, str: str}[s.type]
    if s.listed:
        kind = CommaList(kind)
    return click.option(s.flag, s.name, type=kind, default=s.default, show_default=s.default not in (None, ()),
                        metavar=s.metavar, help=s.help, multiple=s.multiple, cls=Option, group=s.group)


def options(table, skip=()):
    def decorate(f):
        for s in reversed([s for s in table if s.name not in skip]):
            f = option(s)(f)
        return f
    return decorate
