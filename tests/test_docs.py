"""The docs stay true to the command line: docs/cli/*.md hold the flag tables tools/gen_docs.py makes from
the commands, in the sections of --help; the README stays a short front page whose links all lead
somewhere and whose set-up commands are the ones CI runs."""

from __future__ import annotations

import importlib.util
import re
from pathlib import Path

import click
from click.testing import CliRunner
import pytest

from charrnn.cli import cli
from charrnn.settings import GROUPS, SAMPLE, TRAIN

ROOT = Path(__file__).resolve().parents[1]
README = (ROOT / "README.md").read_text(encoding="utf-8")
COMMANDS = sorted(cli.commands)

_spec = importlib.util.spec_from_file_location("gen_docs", ROOT / "tools" / "gen_docs.py")
gen_docs = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(gen_docs)


def _page(command: str) -> str:
    path = ROOT / "docs" / "cli" / f"{command}.md"
    assert path.exists(), f"docs/cli/{command}.md is missing; run python3 tools/gen_docs.py"
    return path.read_text(encoding="utf-8")


def _help(command: str) -> str:
    result = CliRunner().invoke(cli, [command, "--help"], terminal_width=100)
    assert result.exit_code == 0, result.output
    return result.output


def _help_sections(text: str) -> list[tuple[str, str]]:
    """(section heading, first flag) for every option line of --help output."""
    out, section = [], None
    for line in text.splitlines():
        if re.fullmatch(r"\S.*options:|Options:", line):
            section = line[:-1]
        elif section and (m := re.match(r"  (--?[\w-]+)", line)):
            out.append((section, m.group(1)))
    return out


def _doc_sections(page: str) -> list[tuple[str, str]]:
    """(section heading, first flag) for every row of a page's flag tables."""
    out, section = [], None
    part = page.split(gen_docs.BEGIN, 1)[1].split(gen_docs.END, 1)[0]
    for line in part.splitlines():
        if line.startswith("### "):
            section = line[4:]
        elif m := re.match(r"\| `(--?[\w-]+)`", line):
            out.append((section, m.group(1)))
    return out


@pytest.mark.parametrize("command", COMMANDS)
def test_cli_page_is_what_the_generator_writes(command):
    page = _page(command)
    assert page == gen_docs.render(command, page), \
        f"docs/cli/{command}.md is stale; run python3 tools/gen_docs.py"


@pytest.mark.parametrize("command", COMMANDS)
def test_cli_page_lists_the_flags_of_help_in_its_sections(command):
    in_help = [(s, f) for s, f in _help_sections(_help(command)) if f not in ("-h", "--help")]
    assert in_help, f"no options parsed from charrnn {command} --help"
    assert _doc_sections(_page(command)) == in_help


@pytest.mark.parametrize("command", COMMANDS)
def test_every_flag_is_in_its_page_with_its_default(command):
    page = _page(command)
    for p in cli.commands[command].params:
        if not isinstance(p, click.Option) or p.hidden:
            continue
        row = next((line for line in page.splitlines() if line.startswith(f"| `{p.opts[0]}`")), None)
        assert row is not None, f"{p.opts[0]} of charrnn {command} is missing from docs/cli/{command}.md"
        if isinstance(p.default, bool):  # flags read on/off
            assert f"| `{'on' if p.default else 'off'}` |" in row, p.opts[0]
        elif isinstance(p.default, (int, float, str)) and p.default != "" and p.name != "resume":
            assert f"| `{p.default}` |" in row, f"docs/cli/{command}.md shows a stale default for {p.opts[0]}"


def test_every_train_and_sample_setting_has_a_topic():
    for s in (*TRAIN, *SAMPLE):
        assert s.group in GROUPS, f"{s.flag} has no group (give it one in charrnn/settings.py)"


def test_train_help_is_grouped_by_topic():
    headings = [s for s, _ in _help_sections(_help("train"))]
    for topic in ("Data", "Model", "Regularisation", "Optimisation", "Budget and device", "Output"):
        assert f"{topic} options" in headings
    assert ("Data options", "--seq-len") in _help_sections(_help("train"))
    assert ("Budget and device options", "--max-time") in _help_sections(_help("train"))


def test_readme_is_a_short_front_page():
    n = len(README.splitlines())
    assert n <= 250, f"README.md has {n} lines; move reference material into docs/"


def _markdown_files() -> list[Path]:
    return [ROOT / "README.md", *sorted((ROOT / "docs").rglob("*.md"))]


@pytest.mark.parametrize("path", _markdown_files(), ids=lambda p: str(p.relative_to(ROOT)))
def test_every_relative_link_leads_to_a_file(path):
    text = path.read_text(encoding="utf-8")
    text = re.sub(r"```.*?```", "", text, flags=re.S)  # links inside code blocks are not links
    for target in re.findall(r"\]\(([^)\s]+)(?:\s+\"[^\"]*\")?\)", text):
        if re.match(r"[a-z]+:", target) or target.startswith("#"):
            continue  # a web address or an anchor on the same page
        file = (path.parent / target.split("#", 1)[0]).resolve()
        assert file.exists(), f"{path.relative_to(ROOT)} links to {target}, which does not exist"


def test_readme_links_the_guides_and_the_command_pages():
    for guide in sorted((ROOT / "docs" / "guides").glob("*.md")):
        assert f"docs/guides/{guide.name}" in README, f"README does not link docs/guides/{guide.name}"
    assert "docs/cli/" in README


def test_readme_set_up_commands_are_the_ones_ci_runs():
    ci = (ROOT / ".ci" / "run").read_text()
    assert "pip install '.[test]' && python3 -m pytest -q" in README
    assert "pip install '.[test]' && python3 -m pytest -q" in ci
    main_job = "pip install . && charrnn train --max-time 300 --sample-every 500 && charrnn sample --temp 0.8"
    assert main_job in README and main_job in ci
