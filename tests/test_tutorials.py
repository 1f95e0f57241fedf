"""The tutorial notebooks under tutorials/ run from top to bottom without an error.

Each notebook is executed in a fresh Jupyter kernel with nbclient. The kernel is the
Python running pytest (a kernelspec written to a temporary JUPYTER_PATH entry points at
``sys.executable``), so it sees the same installed ``crossq_trl`` whatever other
``python3`` kernels the machine has registered; ``pip install -e ".[dev]"`` is all it needs.
"""

from __future__ import annotations

import os
import time
from pathlib import Path

import nbformat
import pytest
from ipykernel.kernelspec import write_kernel_spec
from nbclient import NotebookClient

TUTORIALS = Path(__file__).resolve().parent.parent / "tutorials"
NOTEBOOKS = sorted(TUTORIALS.glob("*.ipynb"))
KERNEL_NAME = "crossq-trl-tutorials"
CELL_TIMEOUT_S = 300


@pytest.fixture(scope="module")
def kernel_name(tmp_path_factory: pytest.TempPathFactory) -> str:
    """A kernelspec for this very interpreter, found first through JUPYTER_PATH."""
    jupyter_dir = tmp_path_factory.mktemp("jupyter")
    write_kernel_spec(jupyter_dir / "kernels" / KERNEL_NAME, overrides={"display_name": "crossq_trl tutorials"})
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("JUPYTER_PATH", os.pathsep.join(filter(None, [str(jupyter_dir), os.environ.get("JUPYTER_PATH")])))
        # The CI cores are shared: one intra-op thread per kernel avoids the oversubscription that makes
        # small-matrix torch code an order of magnitude slower on a busy machine.
        if "OMP_NUM_THREADS" not in os.environ:
            patch.setenv("OMP_NUM_THREADS", "1")
        yield KERNEL_NAME


def test_tutorials_exist() -> None:
    names = {path.name for path in NOTEBOOKS}
    assert {
        "01_quickstart.ipynb",
        "02_components_in_your_own_loop.ipynb",
        "03_batch_renorm.ipynb",
        "04_exploration_in_your_own_loop.ipynb",
    } <= names, names
    readme = (TUTORIALS / "README.md").read_text()
    for name in names:
        assert name in readme, f"tutorials/README.md does not list {name}"


@pytest.mark.parametrize("path", NOTEBOOKS, ids=[path.stem for path in NOTEBOOKS])
def test_notebook_is_committed_without_outputs(path: Path) -> None:
    notebook = nbformat.read(path, as_version=4)
    nbformat.validate(notebook)
    for index, cell in enumerate(notebook.cells):
        if cell.cell_type == "code":
            assert not cell.outputs and cell.execution_count is None, f"{path.name}: cell {index} has outputs"


@pytest.mark.slow
@pytest.mark.parametrize("path", NOTEBOOKS, ids=[path.stem for path in NOTEBOOKS])
def test_notebook_runs(path: Path, kernel_name: str, tmp_path: Path) -> None:
    notebook = nbformat.read(path, as_version=4)
    client = NotebookClient(
        notebook,
        kernel_name=kernel_name,
        timeout=CELL_TIMEOUT_S,
        resources={"metadata": {"path": str(tmp_path)}},  # the notebook's working directory
    )
    start = time.perf_counter()
    client.execute()  # raises CellExecutionError, with the cell and its traceback, on any error
    print(f"{path.name}: {time.perf_counter() - start:.1f} s")
