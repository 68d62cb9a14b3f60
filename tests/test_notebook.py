"""examples/quickstart.ipynb runs headless from top to bottom (nbclient), with a short budget."""

from __future__ import annotations

from pathlib import Path

import pytest

NOTEBOOK = Path(__file__).resolve().parents[1] / "examples" / "quickstart.ipynb"


@pytest.mark.integration
def test_quickstart_notebook_runs_without_a_cell_error(tmp_path):
    nbformat = pytest.importorskip("nbformat", reason="pip install '.[test]' installs nbformat")
    nbclient = pytest.importorskip("nbclient", reason="pip install '.[test]' installs nbclient")
    pytest.importorskip("ipykernel", reason="pip install '.[test]' installs ipykernel")
    nb = nbformat.read(NOTEBOOK, as_version=4)
    params = [c for c in nb.cells if "parameters" in c.get("metadata", {}).get("tags", [])]
    assert len(params) == 1 and "budget = " in params[0].source
    params[0].source = "budget = 4  # seconds: the test's short run"
    nbclient.NotebookClient(nb, timeout=300, kernel_name="python3",
                            resources={"metadata": {"path": str(tmp_path)}}).execute()  # raises on a cell error
    outputs = [o for c in nb.cells if c.cell_type == "code" for o in c.outputs]
    text = "".join(o.get("text", "") + str(o.get("data", {}).get("text/plain", "")) for o in outputs)
    assert "<charrnn.TrainResult" in text and "<charrnn.Model" in text and "'bpc':" in text
    assert any("image/png" in o.get("data", {}) for o in outputs)  # the learning curve was drawn
    assert (tmp_path / "checkpoints" / "pystdlib" / "best.pt").is_file()
