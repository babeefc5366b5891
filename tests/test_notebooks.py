"""The notebooks run top to bottom, so they never rot."""

import pathlib

import pytest

NOTEBOOKS = pathlib.Path(__file__).resolve().parents[1] / "notebooks"


@pytest.mark.timeout(1200)
@pytest.mark.parametrize(("name", "expected"), [pytest.param("walkthrough.ipynb", "identified", marks=pytest.mark.slow),
                                               ("structure.ipynb", "first peak")])
def test_notebook_executes(name, expected):
    nbformat = pytest.importorskip("nbformat")
    nbclient = pytest.importorskip("nbclient")
    nb = nbformat.read(NOTEBOOKS / name, as_version=4)
    client = nbclient.NotebookClient(nb, timeout=1200, kernel_name="python3",
                                     resources={"metadata": {"path": str(NOTEBOOKS)}})
    client.execute()
    outputs = "".join(o.get("text", "") for c in nb.cells if c.cell_type == "code" for o in c.get("outputs", []))
    assert expected in outputs
