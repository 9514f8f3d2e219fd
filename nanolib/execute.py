"""Execute a chapter headless with papermill into runs/<preset>/<slug>/; keep good runs safe."""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import jupytext
import nbformat

from nanolib.config import Book, load_book
from nanolib.files import atomic_write_json, read_json, replace_dir
from nanolib.runs import MANIFEST, now_iso, run_dir_for, run_state, runs_root


class ChapterFailedError(RuntimeError):
    """A chapter's execution failed; the previous good run (if any) is untouched."""


@dataclass(frozen=True)
class Execution:
    """What happened to one chapter: 'executed' or 'skipped' (its run was up to date)."""

    slug: str
    action: str
    run_dir: Path
    wall_time_s: float = 0.0


def partial_dir(slug: str, preset: str) -> Path:
    """Where a chapter executes before its run is swapped into place (kept on failure to resume)."""
    return runs_root() / preset / f".{slug}.partial"


def failed_notebook(slug: str, preset: str) -> Path:
    """Where the executed notebook of a failed run is kept for diagnosis."""
    return runs_root() / preset / f"{slug}.failed.ipynb"


def execute_chapter(
    chapter: str,
    preset: str,
    overrides: dict[str, Any] | None = None,
    *,
    book: Book | None = None,
    force: bool = False,
    retries: int = 1,
    log_output: bool = False,
) -> Execution:
    """Run a chapter with papermill unless its run is up to date; raise ChapterFailedError."""
    book = book or load_book()
    ch = book.chapter(chapter)
    book.resolve(ch.slug, preset, overrides)  # validate before touching anything
    final = run_dir_for(ch.slug, preset)
    if not force and not overrides and run_state(book, ch.slug, preset).status == "ok":
        return Execution(ch.slug, "skipped", final)

    work = partial_dir(ch.slug, preset)
    work.mkdir(parents=True, exist_ok=True)
    source = work / f"{ch.slug}.source.ipynb"
    out = work / f"{ch.slug}.ipynb"
    nbformat.write(jupytext.read(ch.file), source)
    params = {"preset": preset, "run_dir": str(work), **(overrides or {})}
    cmd = [
        sys.executable,
        "-m",
        "papermill",
        str(source),
        str(out),
        "--kernel",
        "python3",
        "--execution-timeout",
        str(book.cell_timeout_s),
        "--cwd",
        str(ch.file.parent),
        "-y",
        json.dumps(params),
    ]
    if log_output:
        cmd.append("--log-output")
    t0 = time.time()
    started = now_iso()
    rc = None
    for attempt in range(retries + 1):
        rc = _run_with_timeout(cmd, ch.timeout_s)
        if rc != "timeout":
            break
        print(
            f"nanobook: chapter {ch.number} passed its {ch.timeout_s} s limit "
            f"(attempt {attempt + 1} of {retries + 1})",
            file=sys.stderr,
        )
    wall = round(time.time() - t0, 2)
    manifest_path = work / MANIFEST
    manifest = read_json(manifest_path) if manifest_path.exists() else {}
    if rc == 0 and manifest.get("status") == "ok":
        source.unlink(missing_ok=True)
        manifest.update(notebook=out.name, executed_start=started, executed_wall_time_s=wall)
        atomic_write_json(manifest_path, manifest)
        replace_dir(work, final)
        failed_notebook(ch.slug, preset).unlink(missing_ok=True)
        return Execution(ch.slug, "executed", final, wall)

    why = _failure_reason(out, rc, ch.timeout_s, manifest)
    kept = failed_notebook(ch.slug, preset)
    if out.exists():
        shutil.copyfile(out, kept)
    manifest.update(status="failed", error=why, end=now_iso(), executed_wall_time_s=wall)
    atomic_write_json(manifest_path, manifest)
    good = "the previous good run is untouched" if final.exists() else "no earlier run existed"
    raise ChapterFailedError(
        f"chapter {ch.number} ({ch.slug}) failed at preset {preset!r}: {why}; "
        f"{good}; failed notebook kept at {kept}"
    )


def _run_with_timeout(cmd: list[str], timeout_s: float) -> int | str:
    """Run a command in its own process group; kill the whole group past the timeout."""
    # Idle OpenMP threads sleep instead of spinning: on a busy 2-core machine spinning threads
    # slowed CPU training 3-4× (measured); on an idle one the difference is small.
    env = {"OMP_WAIT_POLICY": "PASSIVE", **os.environ, "PYDEVD_DISABLE_FILE_VALIDATION": "1"}
    proc = subprocess.Popen(cmd, start_new_session=True, env=env)
    try:
        return proc.wait(timeout=timeout_s)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait()
        return "timeout"
    except KeyboardInterrupt:
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait()
        raise


def _failure_reason(out: Path, rc: int | str, timeout_s: float, manifest: dict) -> str:
    if rc == "timeout":
        return f"timed out after {timeout_s} s"
    if out.exists():
        try:
            nb = nbformat.read(out, as_version=4)
        except Exception:  # noqa: BLE001 — a half-written notebook is still a failure to report
            nb = None
        code_cells = [c for c in (nb.cells if nb else []) if c.cell_type == "code"]
        for i, cell in enumerate(code_cells, start=1):
            for o in cell.get("outputs", []):
                if o.get("output_type") == "error":
                    first = cell.source.strip().splitlines()[:1]
                    return (
                        f"code cell {i} ({first[0][:60] if first else ''!r}) raised "
                        f"{o.get('ename')}: {o.get('evalue')}"
                    )
    if rc == 0 and manifest.get("status") != "ok":
        return "the chapter ended without calling run.finish() (no successful manifest)"
    return f"papermill exited with status {rc}"
