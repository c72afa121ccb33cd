"""Execute every tutorial notebook in fast mode (``GEXBERT_FAST=1``); any cell error fails."""

from __future__ import annotations

import os
from pathlib import Path

import nbclient
import nbformat
import pytest

ROOT = Path(__file__).resolve().parents[1]
NOTEBOOKS = sorted((ROOT / "tutorials").glob("*.ipynb"))
CELL_TIMEOUT_S = 600


def test_tutorials_found():
    assert NOTEBOOKS, "no notebook in tutorials/"


@pytest.mark.notebook
@pytest.mark.parametrize("path", NOTEBOOKS, ids=[p.stem for p in NOTEBOOKS])
def test_tutorial_runs(path: Path, monkeypatch: pytest.MonkeyPatch, tmp_path: Path):
    # The kernel inherits this process's environment: fast mode, and the source tree on the
    # path so that an uninstalled checkout imports its own gexbert_sc.
    monkeypatch.setenv("GEXBERT_FAST", "1")
    pythonpath = [str(ROOT), os.environ.get("PYTHONPATH", "")]
    monkeypatch.setenv("PYTHONPATH", os.pathsep.join(filter(None, pythonpath)))
    # anything a notebook writes (Lightning logs, ...) stays out of the repository
    monkeypatch.chdir(tmp_path)
    notebook = nbformat.read(path, as_version=4)
    client = nbclient.NotebookClient(
        notebook,
        timeout=CELL_TIMEOUT_S,
        kernel_name="python3",
        resources={"metadata": {"path": str(tmp_path)}},
        allow_errors=False,
    )
    try:
        client.execute()
    except nbclient.exceptions.CellExecutionError as err:
        pytest.fail(f"{path.name}: a cell raised an error\n{err}", pytrace=False)
    errors = [
        output
        for cell in notebook.cells
        if cell.cell_type == "code"
        for output in cell.get("outputs", [])
        if output.get("output_type") == "error"
    ]
    assert not errors, f"{path.name}: {errors[0].get('ename')}: {errors[0].get('evalue')}"
