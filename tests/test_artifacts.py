"""Artifacts are verified where they are read: a file changed, cut or removed since its chapter
recorded it is an error naming the command that makes it again."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest

from nanolib import core_bundle
from nanolib.config import load_book
from nanolib.runs import ArtifactCorruptError, _tree_hash, artifact

ROOT = Path(__file__).resolve().parent.parent
BOOK = load_book(ROOT / "book.yml")


def made(runs: Path, slug: str, name: str, files: dict[str, str]) -> Path:
    """A finished run of `slug` at smoke holding artifact `name` (its hash in the manifest)."""
    d = runs / "smoke" / slug
    for rel, text in files.items():
        (d / name / rel).parent.mkdir(parents=True, exist_ok=True)
        (d / name / rel).write_text(text)
    manifest = {"status": "ok", "artifacts": {name: _tree_hash(d / name)}}
    (d / "manifest.json").write_text(json.dumps(manifest))
    return d / name


def cut_last_line(path: Path) -> None:
    lines = path.read_text().splitlines(keepends=True)
    path.write_text("".join(lines[:-1]))


@pytest.mark.parametrize(
    "slug, name, files, damaged",
    [
        (
            "01_tokenizer",
            "tokenizer",
            {"tokenizer.tiktoken": "IQ== 0\nIg== 1\n", "tokenizer.json": "{}"},
            "tokenizer.tiktoken",
        ),
        (
            "04_scaling",
            "sweep",
            {"sweep.csv": "budget,depth\n1e9,1\n1e9,2\n", "sweep.json": "{}"},
            "sweep.csv",
        ),
    ],
)
def test_a_cut_artifact_names_the_command(tmp_path, monkeypatch, slug, name, files, damaged):
    monkeypatch.setenv("NANOBOOK_RUNS", str(tmp_path))
    path = made(tmp_path, slug, name, files)
    assert artifact(name, "smoke", BOOK) == path
    cut_last_line(path / damaged)  # whole lines gone: still well-formed
    number = slug[:2]
    fix = f"re-run `nanobook run {number} --preset smoke --force`"
    with pytest.raises(ArtifactCorruptError, match=f"chapter {number} recorded .*{fix}"):
        artifact(name, "smoke", BOOK)


def test_the_tiny_bundle_has_a_manifest_and_a_cut_task_is_caught(tmp_path):
    assert (core_bundle.tiny_bundle_dir() / core_bundle.BUNDLE_MANIFEST).is_file()
    bundle = tmp_path / "bundle"
    shutil.copytree(core_bundle.tiny_bundle_dir(), bundle)
    task = next((bundle / "eval_data").rglob("*.jsonl"))
    cut_last_line(task)  # one item fewer, every line still valid JSON
    rel = task.relative_to(bundle)
    with pytest.raises(core_bundle.BundleFormatError, match=f"damaged: {rel} holds .* recorded"):
        core_bundle.load_bundle(bundle)
