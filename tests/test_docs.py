"""The README stays true to the command line: its flag tables are the CLI's own, default for default."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from charrnn.cli import cli, flag_table

README_PATH = Path(__file__).resolve().parents[1] / "README.md"
README = README_PATH.read_text(encoding="utf-8")
COMMANDS = sorted(cli.commands)


def _section(command: str) -> str:
    parts = README.split(f"**`charrnn {command}`**\n\n", 1)
    assert len(parts) == 2, f"README has no flag table for charrnn {command} (under ## Flags)"
    return parts[1].split("\n\n", 1)[0]


@pytest.mark.parametrize("command", COMMANDS)
def test_readme_flag_table_is_the_cli_table(command):
    """Regenerate with: CHARRNN_UPDATE_README=1 python3 -m pytest tests/test_docs.py"""
    if os.environ.get("CHARRNN_UPDATE_README"):
        text = README_PATH.read_text(encoding="utf-8")
        head = f"**`charrnn {command}`**\n\n"  # with its heading: an empty table's header is every table's
        README_PATH.write_text(text.replace(head + _section(command), head + flag_table(command), 1), encoding="utf-8")
        return
    assert _section(command) == flag_table(command), \
        f"README's charrnn {command} table is stale; run CHARRNN_UPDATE_README=1 python3 -m pytest tests/test_docs.py"


@pytest.mark.parametrize("command", COMMANDS)
def test_every_flag_is_in_the_readme_table_with_its_default(command):
    section = _section(command)
    for p in cli.commands[command].params:
        if p.param_type_name != "option" or p.name == "help" or p.hidden:
            continue
        row = next((line for line in section.splitlines() if line.startswith(f"| `{p.opts[0]}`")), None)
        assert row is not None, f"{p.opts[0]} of charrnn {command} is missing from the README"
        if isinstance(p.default, bool):  # flags read on/off
            assert f"`{'on' if p.default else 'off'}`" in row or not p.default and "| |" in row, p.opts[0]
        elif isinstance(p.default, (int, float, str)) and p.default != "" and p.name != "resume":
            assert f"`{p.default}`" in row, f"README shows a stale default for {p.opts[0]}"


def test_readme_set_up_commands_are_the_ones_ci_runs():
    ci = (Path(__file__).resolve().parents[1] / ".ci" / "run").read_text()
    assert "pip install '.[test]' && python3 -m pytest -q" in README
    assert "pip install '.[test]' && python3 -m pytest -q" in ci
    main_job = "pip install . && charrnn train --max-time 300 && charrnn sample --temp 0.8"
    assert main_job in README and main_job in ci
