"""`nanobook status` says why a run is not current, in the user's terms."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from nanolib.cli import main
from nanolib.config import load_book
from nanolib.files import sha256_file as file_hash
from nanolib.runs import nanolib_hash, run_state

ROOT = Path(__file__).resolve().parent.parent
BOOK = load_book(ROOT / "book.yml")


@pytest.fixture
def runs(tmp_path, monkeypatch) -> Path:
    monkeypatch.setenv("NANOBOOK_RUNS", str(tmp_path))
    return tmp_path / "smoke"


def fake_run(
    runs: Path, slug: str, params: dict | None = None, overrides: dict | None = None, **extra
) -> None:
    """A finished run of a chapter at smoke, as `nanobook run` leaves it."""
    params = BOOK.resolve(slug, "smoke") if params is None else params
    d = runs / slug
    d.mkdir(parents=True)
    (d / f"{slug}.ipynb").write_text("{}")
    manifest = {
        "status": "ok",
        "params": params,
        "chapter_hash": file_hash(BOOK.chapter(slug).file),
        "nanolib_hash": nanolib_hash(),
        "start": "2026-01-01T00:00:00+00:00",
        "end": "2026-01-01T00:01:00+00:00",
    }
    if overrides is not None:
        manifest["overrides"] = overrides
    manifest.update(extra)
    (d / "manifest.json").write_text(json.dumps(json.loads(json.dumps(manifest, default=str))))


def test_an_override_is_named_as_one(runs, capsys):
    params = {**BOOK.resolve("02", "smoke"), "depth": 3}
    fake_run(runs, "02_model", params, overrides={"depth": 3})
    st = run_state(BOOK, "02", "smoke")
    assert st.status == "stale" and st.reasons == ("parameters overridden: depth=3",)
    assert main(["status", "--preset", "smoke"]) == 0
    row = next(line for line in capsys.readouterr().out.splitlines() if line.startswith("02"))
    assert row.endswith("stale — parameters overridden: depth=3")


def test_a_changed_preset_is_named_as_one(runs):
    params = {**BOOK.resolve("02", "smoke"), "depth": 3}
    fake_run(runs, "02_model", params, overrides={})
    st = run_state(BOOK, "02", "smoke")
    assert st.reasons == ("the preset's parameters changed since the run: depth 3 → 2",)


def test_a_failed_first_run_is_failed_not_missing(runs):
    assert run_state(BOOK, "02", "smoke").status == "missing"
    runs.mkdir(parents=True)
    (runs / "02_model.failed.ipynb").write_text("{}")
    st = run_state(BOOK, "02", "smoke")
    assert st.status == "failed" and "02_model.failed.ipynb" in st.reasons[0]


def test_status_into_a_closed_pipe_is_quiet(runs):
    status = subprocess.Popen(
        [sys.executable, "-m", "nanolib.cli", "status", "--preset", "smoke"],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        env=dict(os.environ, PYTHONPATH=str(ROOT)),
        cwd=ROOT,
    )
    status.stdout.close()  # like `| head` that has read all it wants before anything is written
    err = status.stderr.read().decode()
    status.wait(timeout=60)
    assert "Traceback" not in err and "BrokenPipeError" not in err, err
    assert status.returncode == 141


def test_staleness_follows_the_artifacts_a_chapter_read(runs):
    late = {"start": "2026-01-02T00:00:00+00:00", "end": "2026-01-02T00:01:00+00:00"}
    fake_run(runs, "01_tokenizer", artifacts={"tokenizer": "t1"})
    fake_run(runs, "03_pretraining", artifacts={"checkpoint": "c1"})
    fake_run(runs, "04_scaling", consumed={"tokenizer": {"chapter": "01_tokenizer", "hash": "t1"}})
    fake_run(
        runs,
        "05_core",
        consumed={
            "tokenizer": {"chapter": "01_tokenizer", "hash": "t1"},
            "checkpoint": {"chapter": "03_pretraining", "hash": "c1"},
        },
    )
    assert run_state(BOOK, "04", "smoke").status == "ok"
    # chapter 03 re-runs and makes another checkpoint: 05 read it, 04 did not
    (runs / "03_pretraining").rename(runs.parent / "old03")
    fake_run(runs, "03_pretraining", artifacts={"checkpoint": "c2"}, **late)
    assert run_state(BOOK, "04", "smoke").status == "ok"
    st = run_state(BOOK, "05", "smoke")
    assert st.status == "stale" and st.reasons == (
        "its checkpoint (chapter 03) changed since the run",
    )
    # chapter 01 re-runs with the same result (training is deterministic): nothing is stale
    (runs / "01_tokenizer").rename(runs.parent / "old01")
    fake_run(runs, "01_tokenizer", artifacts={"tokenizer": "t1"}, **late)
    assert run_state(BOOK, "04", "smoke").status == "ok"


def test_a_run_shows_where_it_will_live_not_its_work_folder(runs):
    from nanolib.runs import Run, partial_dir

    run = Run(BOOK, "02_model", "smoke", {}, partial_dir("02_model", "smoke"), "cpu", 1)
    assert f"run dir  {runs / '02_model'}" in run.summary()
    assert ".partial" not in run.summary()


def test_a_change_to_a_module_the_run_never_imported_leaves_it_current(runs, tmp_path):
    """Runs record the nanolib modules their kernel imported; only those can make them stale."""
    from nanolib import runs as runs_module

    imported = runs_module.module_hashes()
    assert "runs.py" in imported and "config.py" in imported
    not_imported = {**imported, "tokenizer.py": "0" * 64}  # as if tokenizer.py had changed
    fake_run(runs, "02_model", nanolib_hash="old", nanolib_modules=imported)
    assert run_state(BOOK, "02", "smoke").status == "ok"  # the whole-library hash is not used
    (runs / "02_model").rename(runs / "old")
    fake_run(runs, "02_model", nanolib_modules=not_imported)
    st = run_state(BOOK, "02", "smoke")
    assert st.status == "stale" and st.reasons == ("nanolib/tokenizer.py changed since the run",)
