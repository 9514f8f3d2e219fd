"""Each chapter's .ipynb is exactly what jupytext makes from its .py, and holds no outputs."""

import shlex
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


def _strip_flags() -> list[str]:
    """The nbstripout flags `make hooks` installs as the git clean filter."""
    line = next(x for x in (ROOT / "Makefile").read_text().splitlines() if x.startswith("NBSTRIP"))
    return shlex.split(line.split("nbstripout", 1)[1])


@pytest.fixture
def lab_copy(tmp_path):
    """A copy of the chapters and jupytext.toml, as JupyterLab sees them from the root."""
    shutil.copytree(ROOT / "chapters", tmp_path / "chapters")
    shutil.copy(ROOT / "jupytext.toml", tmp_path / "jupytext.toml")
    return tmp_path


@pytest.mark.parametrize("py", CHAPTERS[:2], ids=lambda p: p.stem)
def test_lab_save_then_git_filter_gives_no_diff(py, lab_copy):
    from jupytext import TextFileContentsManager

    cm = TextFileContentsManager(root_dir=str(lab_copy))
    name = f"chapters/{py.stem}.ipynb"
    model = cm.get(name)
    nb = model["content"]
    nb["metadata"]["language_info"] = {"name": "python", "version": "3.11"}  # what a kernel adds
    code = next(c for c in nb["cells"] if c["cell_type"] == "code")
    code["metadata"]["execution"] = {"iopub.status.busy": "2026-01-01T00:00:00Z"}
    code["outputs"] = [{"output_type": "stream", "name": "stdout", "text": "hello\n"}]
    code["execution_count"] = 1
    cm.save(model, name)
    assert (lab_copy / "chapters" / py.name).read_text() == py.read_text()
    saved = (lab_copy / name).read_bytes()
    cleaned = subprocess.run(
        [sys.executable, "-m", "nbstripout", *_strip_flags(), "-t"],
        input=saved,
        capture_output=True,
        check=True,
    ).stdout
    assert cleaned.decode() == py.with_suffix(".ipynb").read_text()


def test_jupytext_sync_gives_no_diff(lab_copy):
    names = [f"chapters/{p.name}" for p in CHAPTERS]
    subprocess.run(
        [sys.executable, "-m", "jupytext", "--sync", *names],
        cwd=lab_copy,
        check=True,
        capture_output=True,
    )
    for py in CHAPTERS:
        for path in (py, py.with_suffix(".ipynb")):
            changed = (lab_copy / "chapters" / path.name).read_text() != path.read_text()
            assert not changed, f"`jupytext --sync` rewrote {path.name}"
