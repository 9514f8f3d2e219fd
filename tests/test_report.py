"""nanolib.report: the report card's ledger, results, bands and seed spread, from manifests."""

import json
import shutil
from pathlib import Path

import pytest

from nanolib import report
from nanolib.config import load_book
from nanolib.runs import run_state
from nanolib.seeds import SEEDS_DIR

ROOT = Path(__file__).resolve().parent.parent


@pytest.fixture
def book(tmp_path, monkeypatch):
    """The real book.yml and chapters with an empty runs/ of its own."""
    shutil.copy(ROOT / "book.yml", tmp_path / "book.yml")
    shutil.copytree(ROOT / "chapters", tmp_path / "chapters")
    shutil.copytree(ROOT / "data" / "expected", tmp_path / "data" / "expected")
    monkeypatch.setenv("NANOBOOK_ROOT", str(tmp_path))
    monkeypatch.setenv("NANOBOOK_RUNS", str(tmp_path / "runs"))
    return load_book()


def write_manifest(book, preset, slug, seed=None, **fields):
    d = book.root / "runs" / preset / slug
    if seed is not None:
        d = d / SEEDS_DIR / str(seed)
    d.mkdir(parents=True, exist_ok=True)
    m = {"status": "ok", "preset": preset, "chapter": slug, "nproc": 1, "device": "cpu", **fields}
    (d / "manifest.json").write_text(json.dumps(m))


def states(book, preset):
    return {ch.slug: run_state(book, ch.slug, preset) for ch in book.chapters}


def test_results_never_show_none_or_nan(book):
    write_manifest(
        book,
        "tiny",
        "03_pretraining",
        headline={"val_bpb": 1.5, "bigram_bpb": None, "uniform_bpb": float("nan")},
    )
    rows = {r["label"]: r for r in report.results(book, "tiny", states(book, "tiny"))}
    assert rows["Validation loss of chapter 3's model"]["value"] == "1.500"
    assert rows["… a bigram model on the same tokens"]["value"] == report.NOT_MEASURED
    assert rows["… guessing uniformly over the vocabulary"]["value"] == report.NOT_MEASURED
    assert rows["CORE of chapter 3's model"]["value"] == report.NOT_RUN
    assert all(r["band"] == "no band yet" for r in rows.values())


def test_gpu_bands_flag_a_result_outside(book):
    write_manifest(book, "d12", "03_pretraining", headline={"val_bpb": 1.10})
    write_manifest(book, "d12", "05_core", headline={"core_v1": 0.12, "bundle": "dclm"})
    rows = {r["label"]: r for r in report.results(book, "d12", states(book, "d12"))}
    bpb, core = rows["Validation loss of chapter 3's model"], rows["CORE of chapter 3's model"]
    assert bpb["verdict"] == "above" and bpb["band"] == "0.965 – 0.983"
    assert "nanochat" in bpb["source"]
    assert core["verdict"] == "inside"


def test_seed_spread_is_shown_and_becomes_the_tiny_band(book):
    write_manifest(book, "tiny", "03_pretraining", headline={"val_bpb": 2.0})
    for k, bpb in ((1, 2.2), (2, 1.8)):
        write_manifest(book, "tiny", "03_pretraining", seed=k, headline={"val_bpb": bpb})
    (row,) = [
        r
        for r in report.results(book, "tiny", states(book, "tiny"))
        if r["chapter"] == "03_pretraining" and r["label"].startswith("Validation")
    ]
    assert row["value"] == "2.000 (seeds: 2.000 ± 0.2, n = 3)"  # spread: 2 significant figures
    assert row["band"] == "1.600 – 2.400" and row["verdict"] == "inside"
    assert "3 seed runs" in row["source"]


def test_ledger_prices_gpu_runs_and_not_cpu_runs(book):
    write_manifest(
        book,
        "speedrun",
        "03_pretraining",
        device="cuda",
        nproc=8,
        device_name="NVIDIA H100 80GB HBM3",
        wall_time_s=3600.0,
        flops=3.0e19,
    )
    led = report.ledger(book, "speedrun", states(book, "speedrun"))
    row = next(r for r in led["rows"] if r["href"] == "03_pretraining.html")
    price = book.cost_of("cuda").dollars_per_hour
    assert row["gpu_hours"] == "8.00" and row["dollars"] == f"${8 * price:,.2f}"
    assert row["device"] == "NVIDIA H100 80GB HBM3 × 8" and row["flops"] == "3e+19"
    assert row["planned"].endswith(" h") and row["planned_flops"] == "3.09e+19"
    write_manifest(book, "tiny", "03_pretraining", wall_time_s=100.0, flops=1e13)
    tiny = report.ledger(book, "tiny", states(book, "tiny"))
    assert not tiny["priced"] and tiny["total"]["dollars"] == "—"


def test_bands_file_is_checked(book):
    path = book.root / report.BANDS
    path.write_text("bands:\n  - {preset: d12, chapter: 03_pretraining, metric: val_bpb}\n")
    with pytest.raises(Exception, match=r"bands\[0\]: needs preset, chapter, metric, source"):
        report.load_bands(book)
