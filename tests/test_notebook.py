"""notebooks/quickstart.ipynb runs headlessly on CPU, so it cannot rot."""

import os

import nbformat
import pytest
from nbclient import NotebookClient

from tests import helpers


@pytest.mark.slow
def test_quickstart_notebook_executes(monkeypatch):
    path = os.path.join(helpers.ROOT, "notebooks", "quickstart.ipynb")
    nb = nbformat.read(path, as_version=4)
    # The kernel inherits this environment: one CPU device, as in Colab, and
    # the suite's compile cache.
    for key, value in helpers.cli_env(devices=1).items():
        monkeypatch.setenv(key, value)
    client = NotebookClient(
        nb,
        timeout=600,
        kernel_name="python3",
        resources={"metadata": {"path": helpers.ROOT}},
    )
    client.execute()  # raises CellExecutionError on any failing cell
    outputs = [o for cell in nb.cells for o in cell.get("outputs", [])]
    text = "".join(o.get("text", "") for o in outputs)
    for family in ("vae", "diffusion", "gan", "lm"):  # init/apply/loss/sample ran
        assert any(line.startswith(family) for line in text.splitlines()), text
    assert any("image/png" in o.get("data", {}) for o in outputs)  # the sample grid
    assert text.rstrip().endswith("done")
