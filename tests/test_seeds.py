"""`nanobook run CHAPTER --seeds …`: seeds run beside the canonical run, read back as spread."""

from pathlib import Path

import pytest

from nanolib import report
from nanolib.cli import main
from nanolib.config import load_book
from nanolib.files import read_json
from nanolib.runs import run_state
from nanolib.seeds import seed_dir, seed_manifests

pytestmark = pytest.mark.slow
ROOT = Path(__file__).resolve().parent.parent


def test_seeds_run_beside_the_canonical_run(tmp_path, monkeypatch, capsys):
    monkeypatch.setenv("NANOBOOK_RUNS", str(tmp_path / "runs"))
    assert main(["run", "01", "--preset", "smoke", "--seeds", "0", "1"]) == 0
    canonical = tmp_path / "runs" / "smoke" / "01_tokenizer"
    assert read_json(canonical / "manifest.json")["params"]["seed"] == 0
    assert seed_dir("01_tokenizer", "smoke", 1) == canonical / "seeds" / "1"
    (other,) = seed_manifests("smoke", "01_tokenizer")
    assert other["status"] == "ok" and other["params"]["seed"] == 1
    capsys.readouterr()

    assert main(["run", "01", "--preset", "smoke", "--seeds", "0", "1"]) == 0  # nothing to do
    assert capsys.readouterr().out.count("up to date") == 2

    book = load_book(ROOT / "book.yml")
    states = {ch.slug: run_state(book, ch.slug, "smoke") for ch in book.chapters}
    (row,) = [r for r in report.results(book, "smoke", states) if r["chapter"] == "01_tokenizer"]
    assert "(seeds: " in row["value"] and "n = 2)" in row["value"]

    assert main(["run", "01", "--preset", "smoke", "--force"]) == 0  # a new canonical run …
    assert seed_manifests("smoke", "01_tokenizer") == [other]  # … keeps the seed runs beside it
