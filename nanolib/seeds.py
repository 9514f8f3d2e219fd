"""Seed variance: a chapter run again with other seeds, beside its canonical run.

`nanobook run CHAPTER --seeds 0 1 2` runs the chapter once per seed: the preset's own seed is the
canonical run (`runs/<preset>/<chapter>/`, as `nanobook run` always makes it), every other seed
runs into `runs/<preset>/<chapter>/seeds/<k>/` with only `seed` overridden. `seed_manifests`
reads them back for the report card, which shows each headline's mean ± spread.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from nanolib.config import Book
from nanolib.files import read_json, sha256_file
from nanolib.runs import MANIFEST, library_reasons, plain, run_dir_for

SEEDS_DIR = "seeds"


def seed_dir(slug: str, preset: str, seed: int) -> Path:
    """Where a chapter's run with another seed lives: runs/<preset>/<chapter>/seeds/<seed>/."""
    return run_dir_for(slug, preset) / SEEDS_DIR / str(seed)


def _same_but_seed(a: dict[str, Any], b: dict[str, Any]) -> bool:
    return {k: v for k, v in a.items() if k != "seed"} == {
        k: v for k, v in b.items() if k != "seed"
    }


def seed_manifests(preset: str, slug: str, params: dict[str, Any] | None = None) -> list[dict]:
    """Finished manifests of a chapter's seed runs; with `params`, only those that ran them
    (apart from the seed), so a seed run left from older parameters is not averaged in."""
    found = []
    for path in sorted((run_dir_for(slug, preset) / SEEDS_DIR).glob(f"*/{MANIFEST}")):
        try:
            m = read_json(path)
        except (OSError, ValueError):
            continue
        if m.get("status") != "ok":
            continue
        if params is not None and not _same_but_seed(m.get("params") or {}, params):
            continue
        found.append(m)
    return found


def seed_run_is_current(book: Book, slug: str, preset: str, params: dict[str, Any]) -> bool:
    """Does the seed run hold an ok run of these parameters, this chapter source and nanolib?"""
    path = seed_dir(slug, preset, int(params["seed"])) / MANIFEST
    try:
        m = read_json(path)
    except (OSError, ValueError):
        return False
    return (
        m.get("status") == "ok"
        and m.get("params") == plain(params)
        and m.get("chapter_hash") == sha256_file(book.chapter(slug).file)
        and not library_reasons(m)
    )
