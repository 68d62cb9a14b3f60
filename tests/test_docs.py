"""The README stays true to the command line: every flag is documented with its real default."""

from __future__ import annotations

from pathlib import Path

import pytest

from charrnn.cli import cli

README = (Path(__file__).resolve().parents[1] / "README.md").read_text(encoding="utf-8")


@pytest.mark.parametrize("command", ["train", "sample", "eval"])
def test_every_flag_is_in_the_readme_table_with_its_default(command):
    section = README.split(f"**`charrnn {command}`**", 1)[1].split("\n\n", 2)[1]
    for p in cli.commands[command].params:
        if p.param_type_name != "option" or p.name == "help":
            continue
        row = next((line for line in section.splitlines() if line.startswith(f"| `{p.opts[0]}`")), None)
        assert row is not None, f"{p.opts[0]} of charrnn {command} is missing from the README"
        if isinstance(p.default, (int, float, str)) and p.default not in ("", False) and p.name != "resume":
            assert f"`{p.default}`" in row, f"README shows a stale default for {p.opts[0]}"


def test_readme_set_up_commands_are_the_ones_ci_runs():
    ci = (Path(__file__).resolve().parents[1] / ".ci" / "run").read_text()
    assert "pip install '.[test]' && python3 -m pytest -q" in README
    assert "pip install '.[test]' && python3 -m pytest -q" in ci
    main_job = "pip install . && charrnn train --max-time 300 && charrnn sample --temp 0.8"
    assert main_job in README and main_job in ci
