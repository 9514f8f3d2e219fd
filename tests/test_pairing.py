"""Each chapter's .ipynb is exactly what jupytext makes from its .py, and holds no outputs."""

import shutil
import subprocess
import sys
from pathlib import Path

import nbformat
import pytest

ROOT = Path(__file__).resolve().parent.parent
CHAPTERS = sorted((ROOT / "chapters").glob("[0-9][0-9]_*.py"))


@pytest.mark.parametrize("py", CHAPTERS, ids=lambda p: p.stem)
def test_ipynb_is_regenerated_unchanged(py, tmp_path):
    nb = py.with_suffix(".ipynb")
    assert nb.exists(), f"{nb.name} missing: run `jupytext --to ipynb --update {py}`"
    shutil.copy(py, tmp_path / py.name)
    shutil.copy(nb, tmp_path / nb.name)
    shutil.copy(ROOT / "jupytext.toml", tmp_path / "jupytext.toml")
    subprocess.run(
        [sys.executable, "-m", "jupytext", "--to", "ipynb", "--update", py.name],
        cwd=tmp_path,
        check=True,
        capture_output=True,
    )
    assert (tmp_path / nb.name).read_text() == nb.read_text(), (
        f"{nb.name} is out of date: run `jupytext --to ipynb --update chapters/{py.name}`"
    )


@pytest.mark.parametrize("py", CHAPTERS, ids=lambda p: p.stem)
def test_committed_notebook_has_no_outputs(py):
    nb = nbformat.read(py.with_suffix(".ipynb"), as_version=4)
    for cell in nb.cells:
        if cell.cell_type == "code":
            assert cell.outputs == [] and cell.execution_count is None
    assert nb.metadata["kernelspec"]["name"] == "python3"
    tags = [c.metadata.get("tags", []) for c in nb.cells]
    assert sum("parameters" in t for t in tags) == 1
