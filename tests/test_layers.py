"""The package's layering (setup.cfg's [importlinter] contract): cli > api > reports > training >
generation | evaluation > model > data > system > settings > errors, each importing only layers below it."""
import os

import pytest

importlinter_cli = pytest.importorskip("importlinter.cli", reason="import-linter is in the [test] extra")

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def test_the_pipeline_layers_are_kept(capsys):
    code = importlinter_cli.lint_imports(config_filename=os.path.join(ROOT, "setup.cfg"), no_cache=True)
    out = capsys.readouterr().out
    assert code == 0, out[-3000:]
    assert "1 kept, 0 broken" in out
