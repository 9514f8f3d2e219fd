"""Execute a chapter headless with papermill into runs/<preset>/<slug>/; keep good runs safe.

One run per (chapter, preset) at a time: `nanobook run` takes a lock (a second run is refused
with the first one's pid) and works in `runs/<preset>/.<slug>.partial/`, owned by the run that
records its pid there. The chapter executes in a child process of its own session that dies with
its parent; a signal or a timeout stops the child's whole process tree (papermill, the kernel,
torchrun's ranks). A failure or an interrupt prints one line; the traceback goes to a log file.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import threading
import time
import traceback
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Any

import jupytext
import nbformat

from nanolib.config import Book, load_book
from nanolib.files import atomic_write_json, read_json, replace_dir
from nanolib.procs import (
    Interrupted,
    Owner,
    RunLock,
    descendants,
    die_with_parent,
    read_owner,
    stop_processes,
    stop_tree,
    write_owner,
)
from nanolib.runs import (
    MANIFEST,
    OWNER,
    claim_work_dir,
    failed_notebook,
    now_iso,
    plain,
    run_dir_for,
    run_lock_path,
    run_state,
    runs_root,
)
from nanolib.seeds import SEEDS_DIR

STOPPED = "stopped.json"  # in the work folder: the cell an interrupt stopped
LOG = "execute.log"  # in the work folder (then the run): papermill's log and any traceback
STOP_GRACE_S = 10.0  # how long a stopped chapter may take to exit before it is killed


class ChapterFailedError(RuntimeError):
    """A chapter's execution failed; the previous good run (if any) is untouched."""


class ChapterInterruptedError(ChapterFailedError):
    """A chapter was stopped by a signal (Ctrl-C, SIGTERM, SIGHUP); its work folder is kept."""

    def __init__(self, message: str, signum: int) -> None:
        super().__init__(message)
        self.signum = signum


@dataclass(frozen=True)
class Execution:
    """What happened to one chapter: 'executed' or 'skipped' (its run was up to date)."""

    slug: str
    action: str
    run_dir: Path
    wall_time_s: float = 0.0


def failed_log(slug: str, preset: str) -> Path:
    """Where the execution log (with the traceback) of a failed run is kept."""
    return runs_root() / preset / f"{slug}.failed.log"


def execute_chapter(
    chapter: str,
    preset: str,
    overrides: dict[str, Any] | None = None,
    *,
    book: Book | None = None,
    force: bool = False,
    retries: int = 1,
    log_output: bool = False,
    final: Path | None = None,
) -> Execution:
    """Run a chapter with papermill unless its run is up to date; raise ChapterFailedError,
    ChapterInterruptedError or AlreadyRunningError (another run of it is in progress).

    `final` puts the run somewhere other than the chapter's run folder (a seed run, see
    nanolib.seeds); the caller decides whether such a run is up to date.
    """
    book = book or load_book()
    ch = book.chapter(chapter)
    resolved = book.resolve(ch.slug, preset, overrides)  # validate before touching anything
    canonical = final is None
    final = final or run_dir_for(ch.slug, preset)
    skip = canonical and not force and not overrides
    if skip and run_state(book, ch.slug, preset).status == "ok":
        return Execution(ch.slug, "skipped", final)
    what = f"chapter {ch.number} ({ch.slug}) at preset {preset!r}"
    with RunLock(run_lock_path(ch.slug, preset), what).acquire(
        holder=f"`nanobook run {ch.number} --preset {preset}`"
    ) as lock:
        work = claim_work_dir(ch.slug, preset, what, plain(resolved))
        return _execute(book, ch, preset, overrides or {}, work, lock, retries, log_output, final)


def _execute(
    book: Book,
    ch: Any,
    preset: str,
    overrides: dict[str, Any],
    work: Path,
    lock: RunLock,
    retries: int,
    log_output: bool,
    final: Path,
) -> Execution:
    source = work / f"{ch.slug}.source.ipynb"
    out = work / f"{ch.slug}.ipynb"
    nbformat.write(jupytext.read(ch.file), source)
    spec = {
        "source": str(source),
        "out": str(out),
        "params": {"preset": preset, "run_dir": str(work), **overrides},
        "cwd": str(ch.file.parent),
        "cell_timeout_s": book.cell_timeout_s,
        "log_output": log_output,
        "progress_fd": sys.stderr.fileno() if _isatty(sys.stderr) else None,
    }
    t0, started = time.time(), now_iso()
    rc: int | str | None = None
    signum = None
    for attempt in range(retries + 1):
        try:
            rc = _run_child(spec, work, lock, ch.timeout_s)
        except KeyboardInterrupt as e:
            signum = e.signum if isinstance(e, Interrupted) else signal.SIGINT
            break
        if rc != "timeout":
            break
        print(
            f"nanobook: chapter {ch.number} passed its {ch.timeout_s} s limit "
            f"(attempt {attempt + 1} of {retries + 1})",
            file=sys.stderr,
        )
    wall = round(time.time() - t0, 2)
    manifest_path = work / MANIFEST
    manifest = _read_manifest(manifest_path)
    if signum is None and rc == 0 and manifest.get("status") == "ok":
        source.unlink(missing_ok=True)
        (work / OWNER).unlink(missing_ok=True)
        manifest.update(
            notebook=out.name,
            executed_start=started,
            executed_wall_time_s=wall,
            overrides=overrides,
        )
        atomic_write_json(manifest_path, manifest)
        seeds = final / SEEDS_DIR
        if seeds.is_dir() and not (work / SEEDS_DIR).exists():
            seeds.rename(work / SEEDS_DIR)  # the seed runs beside it stay (nanolib.seeds)
        final.parent.mkdir(parents=True, exist_ok=True)
        replace_dir(work, final)
        failed_notebook(ch.slug, preset).unlink(missing_ok=True)
        failed_log(ch.slug, preset).unlink(missing_ok=True)
        return Execution(ch.slug, "executed", final, wall)

    where = _failed_cell(out)
    kept_nb, kept_log = failed_notebook(ch.slug, preset), failed_log(ch.slug, preset)
    if out.exists():
        shutil.copyfile(out, kept_nb)
    if (work / LOG).exists():
        shutil.copyfile(work / LOG, kept_log)
    good = "the previous good run is untouched" if final.exists() else "no earlier run existed"
    again = f"`nanobook run {ch.number} --preset {preset}`"
    kept = f"notebook kept at {_show(kept_nb)}, log at {_show(kept_log)}"
    if signum is not None:
        name = signal.Signals(signum).name
        how = "Ctrl-C" if signum == signal.SIGINT else name
        manifest.update(status="interrupted", error=f"stopped by {how}", end=now_iso())
        atomic_write_json(manifest_path, manifest)
        raise ChapterInterruptedError(
            f"chapter {ch.number} ({ch.slug}) at preset {preset!r} stopped by {how}"
            f"{' in ' + where if where else ''}; {good}; {kept}; {again} resumes it",
            signum,
        )
    why = _failure_reason(out, rc, ch.timeout_s, manifest, where)
    manifest.update(status="failed", error=why, end=now_iso(), executed_wall_time_s=wall)
    atomic_write_json(manifest_path, manifest)
    raise ChapterFailedError(
        f"chapter {ch.number} ({ch.slug}) failed at preset {preset!r}: {why}; {good}; {kept}; "
        f"fix it and re-run {again}"
    )


def _isatty(stream: IO) -> bool:
    try:
        return stream.isatty()
    except (AttributeError, ValueError):
        return False


def _show(path: Path) -> str:
    """A path relative to the working directory when it lies below it."""
    try:
        return str(path.resolve().relative_to(Path.cwd().resolve()))
    except ValueError:
        return str(path)


def _read_manifest(path: Path) -> dict:
    try:
        return read_json(path) if path.exists() else {}
    except ValueError:
        return {}


def _run_child(spec: dict, work: Path, lock: RunLock, timeout_s: float) -> int | str:
    """Execute the notebook in a child process (its own session, dying with this process); its
    output goes to the work folder's log (and the console with log_output). Past the timeout, or
    on Ctrl-C/SIGTERM, the child's whole process tree is stopped."""
    # Idle OpenMP threads sleep instead of spinning: on a busy 2-core machine spinning threads
    # slowed CPU training 3-4× (measured); on an idle one the difference is small.
    env = {"OMP_WAIT_POLICY": "PASSIVE", **os.environ, "PYDEVD_DISABLE_FILE_VALIDATION": "1"}
    fds = [lock.fd] + ([spec["progress_fd"]] if spec["progress_fd"] is not None else [])
    with open(work / LOG, "ab") as log:
        proc = subprocess.Popen(
            [sys.executable, "-m", "nanolib.execute", json.dumps(spec)],
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE if spec["log_output"] else log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
            preexec_fn=die_with_parent,
            pass_fds=fds,
            env=env,
        )
        tee = None
        if spec["log_output"]:
            tee = threading.Thread(target=_tee, args=(proc.stdout, log), daemon=True)
            tee.start()
        owner = read_owner(work / OWNER)
        write_owner(
            work / OWNER, Owner(proc.pid, _create_time(proc.pid)), **(owner[1] if owner else {})
        )
        try:
            rc: int | str = proc.wait(timeout=timeout_s)
        except subprocess.TimeoutExpired:
            _stop(proc)
            rc = "timeout"
        except KeyboardInterrupt:
            _stop(proc)
            raise
        finally:
            proc.wait()
            if tee is not None:
                tee.join(timeout=5)
    return rc


def _stop(proc: subprocess.Popen) -> None:
    """Ask the chapter's process to stop (it stops its kernel and what that started), then kill
    whatever of its tree, listed beforehand, is still alive after the grace period."""
    below = descendants(proc.pid)
    proc.send_signal(signal.SIGTERM)
    try:
        proc.wait(timeout=STOP_GRACE_S)
    except subprocess.TimeoutExpired:
        pass
    stop_processes(below, grace_s=1.0)
    stop_tree(proc.pid, grace_s=1.0)


def _create_time(pid: int) -> float:
    import psutil

    try:
        return psutil.Process(pid).create_time()
    except psutil.NoSuchProcess:
        return 0.0


def _tee(pipe: IO[bytes], log: IO[bytes]) -> None:
    for line in iter(pipe.readline, b""):
        log.write(line)
        log.flush()
        sys.stdout.buffer.write(line)
        sys.stdout.flush()


def _failed_cell(out: Path) -> str:
    """'code cell N ('first line')': the cell that raised, else the one running when stopped
    (papermill marks an interrupted cell completed, so the chapter's process records it)."""
    try:
        nb = nbformat.read(out, as_version=4)
    except Exception:  # noqa: BLE001 — a missing or half-written notebook names no cell
        return ""
    stopped = out.parent / STOPPED
    index = None
    if stopped.exists():
        try:
            index = int(json.loads(stopped.read_text())["cell_index"])
        except (ValueError, KeyError, TypeError):
            pass
    code_number = 0
    for i, cell in enumerate(nb.cells):
        if cell.cell_type != "code" or "injected-parameters" in cell.metadata.get("tags", []):
            continue  # numbered as in the chapter's source, which has no injected cell
        code_number += 1
        failed = cell.get("metadata", {}).get("papermill", {}).get("status") == "failed"
        if failed or i == index:
            first = cell.source.strip().splitlines()[:1]
            return f"code cell {code_number} ({first[0][:60] if first else ''!r})"
    return ""


def _failure_reason(out: Path, rc: int | str | None, timeout_s: float, manifest: dict, where: str):
    if rc == "timeout":
        return f"timed out after {timeout_s} s{' in ' + where if where else ''}"
    if out.exists():
        try:
            nb = nbformat.read(out, as_version=4)
        except Exception:  # noqa: BLE001 — a half-written notebook is still a failure to report
            nb = None
        for cell in nb.cells if nb else []:
            for o in cell.get("outputs", []):
                if o.get("output_type") == "error":
                    return f"{where or 'a cell'} raised {o.get('ename')}: {o.get('evalue')}"
    if rc == 0 and manifest.get("status") != "ok":
        return "the chapter ended without calling run.finish() (no successful manifest)"
    return f"the notebook's process exited with status {rc}"


_current_cell: int | None = None  # in the chapter's process: the index of the cell executing


def _child_main(spec_json: str) -> int:
    """The chapter's process: papermill in-process; on SIGTERM/SIGHUP/SIGINT (or its parent's
    death) it stops the kernel and everything the kernel started, then exits."""
    tree: list = []  # the processes below this one when a signal came, listed before any dies

    def on_signal(signum: int, _frame: object) -> None:
        for s in (signal.SIGTERM, signal.SIGHUP, signal.SIGINT):
            signal.signal(s, signal.SIG_IGN)
        tree.extend(descendants(os.getpid()))
        raise Interrupted(signum)

    for s in (signal.SIGTERM, signal.SIGHUP, signal.SIGINT):
        signal.signal(s, on_signal)
    spec = json.loads(spec_json)
    Path(spec["out"]).with_name(STOPPED).unlink(missing_ok=True)
    rc = 0
    try:
        import papermill
        from papermill.engines import NotebookExecutionManager
        from papermill.exceptions import PapermillExecutionError

        cell_start = NotebookExecutionManager.cell_start

        def track(self, cell, cell_index=None, **kwargs):
            global _current_cell
            _current_cell = cell_index
            return cell_start(self, cell, cell_index, **kwargs)

        NotebookExecutionManager.cell_start = track

        progress: bool | dict = False
        if spec["progress_fd"] is not None:
            progress = {"file": open(spec["progress_fd"], "w", closefd=False)}
        try:
            papermill.execute_notebook(
                spec["source"],
                spec["out"],
                parameters=spec["params"],
                kernel_name="python3",
                execution_timeout=spec["cell_timeout_s"],
                cwd=spec["cwd"],
                log_output=spec["log_output"],
                progress_bar=progress,
            )
        except PapermillExecutionError as e:
            print(f"nanobook: the chapter failed:\n{e}", file=sys.stderr)
            rc = 1
    except Interrupted as e:
        print(f"nanobook: stopped by {signal.Signals(e.signum).name}", file=sys.stderr)
        if _current_cell is not None:
            Path(spec["out"]).with_name(STOPPED).write_text(
                json.dumps({"cell_index": _current_cell})
            )
        rc = 128 + e.signum
    except BaseException:  # noqa: BLE001 — the log gets whatever went wrong, the parent one line
        traceback.print_exc()
        rc = 2
    finally:
        for s in (signal.SIGTERM, signal.SIGHUP, signal.SIGINT):
            signal.signal(s, signal.SIG_IGN)
        stop_processes(tree, grace_s=3.0)
        stop_tree(os.getpid(), grace_s=3.0, include_root=False)
    return rc


if __name__ == "__main__":
    sys.exit(_child_main(sys.argv[1]))
