"""cli_options: a click option per setting, with the table's type, default and choices; finite numbers only."""

from __future__ import annotations

import click
import pytest
from click.testing import CliRunner

from charrnn.cli.options import NUMBER, options
from charrnn.settings import TRAIN, by_name


def _command():
    table = [by_name(TRAIN)[n] for n in ("cell", "lr", "max_steps", "tie_weights")]

    @click.command()
    @options(table)
    def cmd(**kw):
        click.echo(repr(sorted(kw.items())))
    return cmd


def test_options_take_type_default_and_choices_from_the_table():
    out = CliRunner().invoke(_command(), []).output
    assert out.strip() == repr(sorted({"cell": "lstm", "lr": 3e-3, "max_steps": None, "tie_weights": False}.items()))
    r = CliRunner().invoke(_command(), ["--cell", "gru", "--lr", "1e-4", "--max-steps", "7", "--tie-weights"])
    assert "('cell', 'gru')" in r.output and "('lr', 0.0001)" in r.output and "('max_steps', 7)" in r.output
    assert CliRunner().invoke(_command(), ["--cell", "transformer"]).exit_code == 2


@pytest.mark.parametrize("value", ["nan", "inf", "-inf", "abc"])
def test_numbers_must_be_finite(value):
    with pytest.raises(click.BadParameter):
        NUMBER.convert(value, None, None)
    assert NUMBER.convert("2.5", None, None) == 2.5
