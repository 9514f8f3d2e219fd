"""Every chapter executes at `smoke` with papermill; a failing chapter never replaces a good run."""

import json
import math
import os
import shutil
import subprocess
import sys
from pathlib import Path

import nbformat
import pytest

from nanolib.cli import main
from nanolib.config import load_book
from nanolib.execute import ChapterFailedError, execute_chapter
from nanolib.runs import run_state

ROOT = Path(__file__).resolve().parent.parent
BOOK = load_book(ROOT / "book.yml")

pytestmark = pytest.mark.slow


def error_cells(nb_path: Path) -> list[str]:
    nb = nbformat.read(nb_path, as_version=4)
    return [
        f"{o.get('ename')}: {o.get('evalue')}"
        for c in nb.cells
        if c.cell_type == "code"
        for o in c.get("outputs", [])
        if o.get("output_type") == "error"
    ]


@pytest.mark.parametrize("chapter", [c.slug for c in BOOK.chapters])
def test_chapter_smoke(smoke_runs, chapter):
    d = smoke_runs / "smoke" / chapter
    assert error_cells(d / f"{chapter}.ipynb") == []
    manifest = json.loads((d / "manifest.json").read_text())
    assert manifest["status"] == "ok" and manifest["preset"] == "smoke"
    for key in (
        "chapter_hash",
        "nanolib_hash",
        "nanolib_version",
        "torch",
        "device",
        "start",
        "end",
        "wall_time_s",
        "params",
        "executed_wall_time_s",
    ):
        assert key in manifest, key
    for name in BOOK.chapter(chapter).produces:
        assert (d / name).exists(), f"artifact {name} missing"
    assert not list((smoke_runs / "smoke").glob(f".{chapter}*.partial")), "partial dir left behind"


def test_up_to_date_run_is_skipped(smoke_runs, monkeypatch):
    monkeypatch.setenv("NANOBOOK_RUNS", str(smoke_runs))
    ch = BOOK.chapters[0]
    assert run_state(BOOK, ch.slug, "smoke").status == "ok"
    before = (smoke_runs / "smoke" / ch.slug / "manifest.json").read_text()
    assert execute_chapter(ch.slug, "smoke", book=BOOK).action == "skipped"
    assert (smoke_runs / "smoke" / ch.slug / "manifest.json").read_text() == before


def test_plain_papermill(tmp_path):
    nb = ROOT / "chapters" / "01_tokenizer.ipynb"
    env = dict(os.environ, NANOBOOK_RUNS=str(tmp_path / "runs"))
    subprocess.run(
        [
            sys.executable,
            "-m",
            "papermill",
            str(nb),
            str(tmp_path / "out.ipynb"),
            "-p",
            "preset",
            "smoke",
            "--execution-timeout",
            "600",
            "--no-progress-bar",
        ],
        check=True,
        cwd=tmp_path,
        env=env,
        capture_output=True,
    )
    assert error_cells(tmp_path / "out.ipynb") == []
    assert (tmp_path / "runs/smoke/01_tokenizer/tokenizer/tokenizer.tiktoken").exists()


@pytest.fixture
def book_copy(tmp_path, monkeypatch, smoke_runs):
    """A copy of the book (data linked, the smoke runs copied) whose chapters a test may break."""
    shutil.copy(ROOT / "book.yml", tmp_path / "book.yml")
    shutil.copytree(ROOT / "chapters", tmp_path / "chapters")
    shutil.copytree(smoke_runs / "smoke", tmp_path / "runs" / "smoke")
    (tmp_path / "data").symlink_to(ROOT / "data")
    monkeypatch.setenv("NANOBOOK_ROOT", str(tmp_path))
    monkeypatch.setenv("NANOBOOK_RUNS", str(tmp_path / "runs"))
    return tmp_path


def test_failed_run_keeps_good_run_and_page(book_copy, capsys):
    out = book_copy / "_book"
    assert main(["make", "--preset", "smoke", "--out", str(out)]) == 0
    assert " done in " not in capsys.readouterr().out  # the copied runs are up to date
    good = book_copy / "runs/smoke/01_tokenizer"
    snapshot = {p.name: p.read_bytes() for p in good.iterdir() if p.is_file()}
    page = (out / "01_tokenizer.html").read_bytes()

    chapter = book_copy / "chapters/01_tokenizer.py"
    chapter.write_text(
        chapter.read_text().replace(
            "tokenizer.save(run.path(",
            "raise RuntimeError('made to fail')\ntokenizer.save(run.path(",
            1,
        )
    )
    nb = chapter.with_suffix(".ipynb")
    subprocess.run(
        [sys.executable, "-m", "jupytext", "--to", "ipynb", str(chapter)],
        check=True,
        capture_output=True,
    )
    capsys.readouterr()
    assert main(["make", "--preset", "smoke", "--out", str(out)]) == 1
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "RuntimeError: made to fail" in err[0] and "untouched" in err[0]
    assert {p.name: p.read_bytes() for p in good.iterdir() if p.is_file()} == snapshot
    assert (out / "01_tokenizer.html").read_bytes() == page
    assert error_cells(book_copy / "runs/smoke/01_tokenizer.failed.ipynb")
    assert nb.exists()
    with pytest.raises(ChapterFailedError):
        execute_chapter("01", "smoke", force=True)
    assert {p.name: p.read_bytes() for p in good.iterdir() if p.is_file()} == snapshot


# Appended to chapter 04: turn every control of the live dial and record what the figure shows.
DRIVE_LIVE_DIAL = """
import json
box = live_dial()
(method, convention), (used, flops_slider) = box.children[0].children, box.children[1].children
shown = box.children[2]
def drawn():
    return [None if t.y is None else [v if v is None else float(v) for v in t.y]
            for t in shown.data]
views = {"start": (drawn(), shown.layout.xaxis.title.text)}
flops_slider.value = flops_slider.value * 10
views["slider"] = (drawn(), shown.layout.xaxis.title.text)
convention.value = "all"
views["convention"] = (drawn(), shown.layout.xaxis.title.text)
used.value = tuple(budgets[:2])
views["budgets"] = (drawn(), shown.layout.xaxis.title.text)
method.value = "Approach 2"
views["method"] = (drawn(), shown.layout.xaxis.title.text)
print("VIEWS" + json.dumps(views, default=str))
"""


def test_live_dial_redraws_on_every_control(smoke_runs, tmp_path, monkeypatch):
    """Chapter 04's ipywidgets dial in a kernel: each control changes the FigureWidget's curves."""
    import jupytext
    import papermill

    runs = tmp_path / "runs"
    shutil.copytree(smoke_runs / "smoke", runs / "smoke")  # the sweep's rows are reused
    monkeypatch.setenv("NANOBOOK_RUNS", str(runs))
    nb = jupytext.read(ROOT / "chapters" / "04_scaling.py")
    nb.cells.append(nbformat.v4.new_code_cell(DRIVE_LIVE_DIAL))
    out = papermill.execute_notebook(
        nb,
        str(tmp_path / "out.ipynb"),
        parameters={"preset": "smoke", "run_dir": str(runs / "smoke" / "04_scaling")},
        kernel_name="python3",
        cwd=str(ROOT / "chapters"),
        execution_timeout=600,
        progress_bar=False,
    )
    text = "".join(o.get("text", "") for o in out.cells[-1].outputs)
    views = json.loads(text.split("VIEWS", 1)[1])
    order = ["start", "slider", "convention", "budgets", "method"]
    for before, after in zip(order, order[1:]):
        assert views[after][0] != views[before][0], f"changing the {after} redrew nothing"
    assert (
        views["start"][1] == "N (matmul parameters)"
        and views["convention"][1] == "N (all parameters)"
    )
    predicted = views["slider"][0][-2]  # the "predicted at C" curve of the starting fit
    assert predicted and all(math.isfinite(v) for v in predicted)
