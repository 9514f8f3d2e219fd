"""Runs: directories, manifests, metrics and named artifacts under runs/<preset>/<chapter>/.

`start_chapter` resolves a chapter's parameters, seeds, and returns its `Run` (parameters are
`run.params[...]` or `run.p.name`); `artifact` finds what an earlier chapter made, and its
error names the chapter and command that make it; `run_state` says whether a run is up to date.
"""

from __future__ import annotations

import hashlib
import json
import os
import platform
import random
import subprocess
import sys
import time
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from types import SimpleNamespace
from typing import Any

from nanolib import __version__
from nanolib.config import Book, BookConfigError, book_root, load_book
from nanolib.files import atomic_write_json, read_json, replace_dir, sha256_file
from nanolib.procs import AlreadyRunningError, Owner, RunLock, read_owner, write_owner

MANIFEST = "manifest.json"
OWNER = "owner.json"  # in a work folder: the process that writes into it
METRICS = "metrics.jsonl"


class ArtifactMissingError(FileNotFoundError):
    """An artifact an earlier chapter makes is not there; the message names the command."""


class ArtifactCorruptError(ValueError):
    """An artifact differs from the hash its chapter recorded; the message names the command."""


def runs_root() -> Path:
    """Where runs live: $NANOBOOK_RUNS, else <book root>/runs."""
    env = os.environ.get("NANOBOOK_RUNS")
    return Path(env).resolve() if env else book_root() / "runs"


def run_dir_for(slug: str, preset: str) -> Path:
    """The final run directory of a chapter at a preset."""
    return runs_root() / preset / slug


def failed_notebook(slug: str, preset: str) -> Path:
    """Where the executed notebook of a failed run is kept for diagnosis."""
    return runs_root() / preset / f"{slug}.failed.ipynb"


def run_lock_path(slug: str, preset: str) -> Path:
    """The lock file that lets one run of a chapter at a preset write at a time."""
    return runs_root() / preset / ".locks" / f"{slug}.lock"  # kept: removing a lock file races


def partial_dir(slug: str, preset: str) -> Path:
    """Where a chapter executes before its run is swapped into place (kept on failure to resume)."""
    return runs_root() / preset / f".{slug}.partial"


def claim_work_dir(slug: str, preset: str, what: str, params: dict[str, Any]) -> Path:
    """The work folder of a run about to start, owned by this process from now on. Refused if a
    process of an earlier run still writes into it; a stale one (its process gone) is resumed if
    it ran the same parameters, else discarded. Call it holding the (chapter, preset) lock."""
    import shutil
    import sys

    work = partial_dir(slug, preset)
    rec = read_owner(work / OWNER)
    if rec is not None and rec[0].alive() and rec[0].pid != os.getpid():
        pid = rec[0].pid
        raise AlreadyRunningError(
            f"{what}: a process of an earlier run (pid {pid}) still writes into {work}; "
            f"stop it (`kill {pid}`) or wait for it to exit"
        )
    if work.exists():
        if rec is not None and rec[1].get("params") == params:
            print(f"nanobook: resuming the work folder of an earlier run ({work})", file=sys.stderr)
        else:
            shutil.rmtree(work)
    work.mkdir(parents=True, exist_ok=True)
    write_owner(work / OWNER, Owner.current(), params=params)
    return work


def plain(params: dict[str, Any]) -> dict[str, Any]:
    """Parameters as JSON gives them back (tuples become lists …), for comparing runs."""
    return json.loads(json.dumps(params, default=str))


# The locks this process holds for chapters started from a notebook (papermill or Lab), by lock
# file: running the resolve cell again in the same kernel keeps its lock.
_HELD: dict[Path, RunLock] = {}
# The run this process is executing, if any: `artifact()` records what it consumes.
_CURRENT: list[Run] = []


def now_iso() -> str:
    """The current UTC time, ISO 8601."""
    return datetime.now(timezone.utc).isoformat(timespec="seconds")


def nanolib_hash() -> str:
    """sha256 over nanolib's sources, so a run can tell that the library changed since."""
    pkg = Path(__file__).resolve().parent
    h = hashlib.sha256()
    for p in sorted(pkg.rglob("*")):
        if p.is_file() and p.suffix == ".py":  # templates change the look, not the results
            h.update(str(p.relative_to(pkg)).encode())
            h.update(p.read_bytes())
    return h.hexdigest()


def module_hashes() -> dict[str, str]:
    """sha256 of each nanolib source file this process has imported, by path under nanolib/.

    A run records these, so a change to a module its kernel never imported leaves it current.
    """
    pkg = Path(__file__).resolve().parent
    files = {pkg / "__init__.py"}
    for module in list(sys.modules.values()):
        path = getattr(module, "__file__", None)
        if path and Path(path).resolve().is_relative_to(pkg) and path.endswith(".py"):
            files.add(Path(path).resolve())
    return {str(f.relative_to(pkg)): sha256_file(f) for f in sorted(files) if f.exists()}


def library_reasons(m: dict[str, Any]) -> list[str]:
    """Why a run's manifest `m` is out of date with nanolib: the changed modules it imported."""
    recorded = m.get("nanolib_modules")
    if not isinstance(recorded, dict):  # a run recorded before modules were: any change counts
        return [] if m.get("nanolib_hash") == nanolib_hash() else ["nanolib changed since the run"]
    pkg = Path(__file__).resolve().parent
    changed = [
        name
        for name, digest in sorted(recorded.items())
        if not (pkg / name).is_file() or sha256_file(pkg / name) != digest
    ]
    return [f"nanolib/{name} changed since the run" for name in changed]


def git_commit() -> str | None:
    """The checkout's git commit (with '+dirty' when it has changes), or None outside git."""
    try:
        root = book_root()
        sha = subprocess.run(
            ["git", "rev-parse", "HEAD"], cwd=root, capture_output=True, text=True, timeout=5
        )
        if sha.returncode != 0:
            return None
        dirty = subprocess.run(
            ["git", "status", "--porcelain", "--", "nanolib"],
            cwd=root,
            capture_output=True,
            text=True,
            timeout=5,
        ).stdout.strip()
        return sha.stdout.strip() + ("+dirty" if dirty else "")
    except (OSError, subprocess.SubprocessError, BookConfigError):
        return None


def seed_everything(seed: int) -> None:
    """Seed Python, NumPy and torch."""
    random.seed(seed)
    try:
        import numpy as np

        np.random.seed(seed)
    except ImportError:
        pass
    try:
        import torch

        torch.manual_seed(seed)
    except ImportError:
        pass


def environment_facts(device: str) -> dict[str, Any]:
    """Versions and hardware recorded in every manifest."""
    facts: dict[str, Any] = {
        "python": platform.python_version(),
        "platform": platform.platform(),
        "cpu_count": os.cpu_count(),
        "device": device,
    }
    try:
        import torch

        facts["torch"] = torch.__version__
        if device == "cuda" and torch.cuda.is_available():
            facts["device_name"] = torch.cuda.get_device_name(0)
            facts["device_count"] = torch.cuda.device_count()
    except ImportError:
        facts["torch"] = None
    return facts


@dataclass
class Run:
    """A chapter's run: its resolved parameters, directory, metrics file and manifest."""

    book: Book
    slug: str
    preset: str
    params: dict[str, Any]
    dir: Path
    device: str
    nproc: int
    started: str = field(default_factory=now_iso)
    t0: float = field(default_factory=time.time)
    overrides: dict[str, Any] = field(default_factory=dict)
    # Started from a notebook (papermill or Lab): `dir` is a work folder that finish() swaps in
    # here, releasing the lock. None when `nanobook run` (which swaps itself) passed run_dir.
    final: Path | None = None
    consumed: dict[str, dict[str, Any]] = field(default_factory=dict)

    @property
    def p(self) -> SimpleNamespace:
        """The resolved parameters as attributes (`run.p.depth`), apart from the run's fields."""
        return SimpleNamespace(**self.params)

    def path(self, name: str) -> Path:
        """A file inside this run's directory."""
        return self.dir / name

    def log(self, **metrics: Any) -> None:
        """Append one JSON line to metrics.jsonl."""
        with open(self.dir / METRICS, "a") as f:
            f.write(json.dumps(metrics, default=float) + "\n")

    def artifact(self, name: str) -> Path:
        """A named artifact of an earlier chapter at this run's preset."""
        return artifact(name, self.preset, self.book)

    def manifest(self, status: str, **extra: Any) -> dict[str, Any]:
        """The manifest dict of this run."""
        ch = self.book.chapter(self.slug)
        return {
            "chapter": self.slug,
            "title": ch.title,
            "preset": self.preset,
            "params": self.params,
            "chapter_hash": sha256_file(ch.file),
            "nanolib_version": __version__,
            "nanolib_hash": nanolib_hash(),
            "nanolib_modules": module_hashes(),
            "git_commit": git_commit(),
            **environment_facts(self.device),
            "nproc": self.nproc,
            "start": self.started,
            "status": status,
            "overrides": plain(self.overrides),
            "consumed": self.consumed,
            **extra,
        }

    def finish(self, headline: dict[str, Any] | None = None, flops: float | None = None) -> None:
        """Mark the run complete: write manifest.json with its headline metrics and the hashes of
        its artifacts; a run started from a notebook is swapped into runs/<preset>/<chapter>/."""
        end = time.time()
        produced = {
            name: _tree_hash(self.dir / name)
            for name in self.book.chapter(self.slug).produces
            if (self.dir / name).exists()
        }
        extra = {"executed_by": "notebook"} if self.final is not None else {}
        atomic_write_json(
            self.dir / MANIFEST,
            self.manifest(
                "ok",
                end=now_iso(),
                wall_time_s=round(end - self.t0, 2),
                headline=headline or {},
                flops=flops,
                artifacts=produced,
                **extra,
            ),
        )
        if self.final is not None:
            (self.dir / OWNER).unlink(missing_ok=True)
            replace_dir(self.dir, self.final)
            failed_notebook(self.slug, self.preset).unlink(missing_ok=True)
            self.dir, self.final = self.final, None
            lock = _HELD.pop(run_lock_path(self.slug, self.preset), None)
            if lock is not None:
                lock.release()

    @property
    def shown_dir(self) -> Path:
        """Where the run will live: runs/<preset>/<chapter>/, not the work folder it fills first."""
        if self.dir == partial_dir(self.slug, self.preset):
            return run_dir_for(self.slug, self.preset)
        return self.dir

    def summary(self) -> str:
        """A short table of what this run will do."""
        rows = [
            ("chapter", self.slug),
            ("preset", self.preset),
            ("device", self.device),
            ("nproc", self.nproc),
            ("run dir", self.shown_dir),
        ]
        rows += [(k, v) for k, v in self.params.items()]
        width = max(len(str(k)) for k, _ in rows)
        return "\n".join(f"{k:<{width}}  {v}" for k, v in rows)


def start_chapter(chapter: str, preset: str, namespace: dict[str, Any]) -> Run:
    """Resolve a chapter's parameters (book.yml preset + non-None overrides), seed, make run dir.

    Seeds Python, NumPy and torch with the chapter's `seed` parameter (0 if it has none).
    """
    book = load_book()
    ch = book.chapter(chapter)
    overrides = {k: namespace[k] for k in ch.params if namespace.get(k) is not None}
    params = book.resolve(ch.slug, preset, overrides)
    pr = book.preset(preset)
    run_dir = namespace.get("run_dir")
    final = None
    if run_dir:  # `nanobook run` chose the work folder and holds the lock
        d = Path(run_dir)
    else:  # started from a notebook: the same guarantee, taken here
        what = f"chapter {ch.number} ({ch.slug}) at preset {preset!r}"
        lock_path = run_lock_path(ch.slug, preset)
        if lock_path not in _HELD:
            holder = f"a notebook kernel running {ch.notebook.name}"
            _HELD[lock_path] = RunLock(lock_path, what).acquire(holder)
        d = claim_work_dir(ch.slug, preset, what, plain(params))
        final = run_dir_for(ch.slug, preset)
    d.mkdir(parents=True, exist_ok=True)
    (d / METRICS).unlink(missing_ok=True)
    seed_everything(int(params.get("seed") or 0))
    from nanolib.device import pick_device  # imports torch: only when a chapter starts

    run = Run(
        book=book,
        slug=ch.slug,
        preset=preset,
        params=params,
        dir=d,
        device=pick_device(pr.device),
        nproc=pr.nproc,
        overrides=overrides,
        final=final,
    )
    atomic_write_json(d / MANIFEST, run.manifest("running"))
    _CURRENT[:] = [run]
    return run


def make_command(
    name: str, preset: str | None = None, *flags: str, book: Book | None = None
) -> str:
    """How to make a named artifact, e.g. "chapter 01 'The tokenizer' (`nanobook run 01`)".

    Without a readable book.yml it says "the chapter that makes the `name` artifact".
    """
    try:
        ch = (book or load_book()).producer_of(name)
    except BookConfigError:
        return f"the chapter that makes the `{name}` artifact (`nanobook run`)"
    args = " ".join([*(["--preset", preset] if preset else []), *flags])
    return f"chapter {ch.number} {ch.title!r} (`nanobook run {ch.number}{' ' * bool(args)}{args}`)"


def artifact(name: str, preset: str, book: Book | None = None) -> Path:
    """Path of a named artifact made by an earlier chapter; a clear error if it is not there."""
    book = book or load_book()
    ch = book.producer_of(name)
    d = run_dir_for(ch.slug, preset)
    path = d / name
    manifest = d / MANIFEST
    m = read_json(manifest) if manifest.exists() else {}
    ok = m.get("status") == "ok"
    if not path.exists() or not ok:
        raise ArtifactMissingError(
            f"artifact {name!r} is missing for preset {preset!r} at {path}; it is made by "
            f"{make_command(name, preset, book=book)}: run that first"
        )
    recorded = (m.get("artifacts") or {}).get(name)
    if recorded is not None and _tree_hash(path) != recorded:
        raise ArtifactCorruptError(
            f"artifact {name!r} at {path} differs from what chapter {ch.number} recorded when it "
            f"made it (a file was changed, cut or removed since); re-run "
            f"`nanobook run {ch.number} --preset {preset} --force`"
        )
    for run in _CURRENT:  # the chapter running in this process depends on this artifact
        if run.preset == preset:
            run.consumed[name] = {"chapter": ch.slug, "hash": recorded}
    return path


def remake_hint(path: str | Path) -> str:
    """How to make a damaged artifact again: the command of the chapter whose run holds it."""
    try:
        rel = Path(path).resolve().relative_to(runs_root().resolve())
        preset, folder = rel.parts[0], rel.parts[1]
    except (ValueError, IndexError):
        return "re-run the chapter that made it"
    slug = folder.lstrip(".").split(".")[0]  # a run folder, or a work folder `.NN_slug.partial`
    return f"re-run `nanobook run {slug.split('_')[0]} --preset {preset} --force`"


@dataclass(frozen=True)
class RunState:
    """What runs/ holds for a chapter at a preset: 'ok', 'stale', 'failed' or 'missing'."""

    status: str
    reasons: tuple[str, ...] = ()
    manifest: dict[str, Any] | None = None
    notebook: Path | None = None


def run_state(book: Book, chapter: str, preset: str) -> RunState:
    """Is the chapter's run at this preset present, successful and up to date?"""
    ch = book.chapter(chapter)
    d = run_dir_for(ch.slug, preset)
    nb = d / f"{ch.slug}.ipynb"
    mpath = d / MANIFEST
    if not mpath.exists():
        if failed_notebook(ch.slug, preset).exists():
            kept = failed_notebook(ch.slug, preset)
            return RunState("failed", (f"its only run failed (notebook kept at {kept})",))
        return RunState("missing", (f"no run at {d}",))
    try:
        m = read_json(mpath)
    except ValueError as e:
        return RunState("missing", (str(e),))
    made_by_notebook = m.get("executed_by") == "notebook"
    if m.get("status") != "ok" or not (nb.exists() or made_by_notebook):
        return RunState("failed", (f"last run status {m.get('status')!r}",), m)
    reasons = []
    if m.get("chapter_hash") != sha256_file(ch.file):
        reasons.append(f"{ch.file.name} changed since the run")
    reasons += library_reasons(m)
    try:
        reasons += _param_reasons(
            m, json.loads(json.dumps(book.resolve(ch.slug, preset), default=str))
        )
    except BookConfigError as e:
        reasons.append(str(e))
    if "consumed" in m:
        reasons += _consumed_reasons(book, m["consumed"], preset)
    else:  # a run recorded before consumption was: any earlier chapter re-run may matter
        for up in book.chapters[: book.chapters.index(ch)]:
            up_m = run_dir_for(up.slug, preset) / MANIFEST
            if up_m.exists():
                try:
                    if read_json(up_m).get("end", "") > m.get("start", ""):
                        reasons.append(f"chapter {up.number} was re-run after this run")
                except ValueError:
                    pass
    if not nb.exists():  # a good run made from a notebook: nothing for the book to render
        reasons.append(
            f"run from a notebook, so the book has no executed notebook to show; "
            f"`nanobook run {ch.number} --preset {preset} --force` makes one"
        )
    return RunState("stale" if reasons else "ok", tuple(reasons), m, nb if nb.exists() else None)


def _consumed_reasons(book: Book, consumed: dict[str, Any], preset: str) -> list[str]:
    """Which of the artifacts a run read have changed since (its producer re-ran differently)."""
    reasons = []
    for name, seen in sorted(consumed.items()):
        up = run_dir_for(seen["chapter"], preset) / MANIFEST
        try:
            now = (read_json(up).get("artifacts") or {}).get(name) if up.exists() else None
        except ValueError:
            now = None
        if now is None or seen.get("hash") is None or now != seen["hash"]:
            number = seen["chapter"].split("_")[0]
            reasons.append(f"its {name} (chapter {number}) changed since the run")
    return reasons


def _tree_hash(path: Path) -> str:
    """sha256 over a file, or over a folder's files (relative names and contents)."""
    if path.is_file():
        return sha256_file(path)
    h = hashlib.sha256()
    for p in sorted(q for q in path.rglob("*") if q.is_file()):
        h.update(f"{p.relative_to(path)}\0{sha256_file(p)}\n".encode())
    return h.hexdigest()


def _param_reasons(manifest: dict[str, Any], preset_params: dict[str, Any]) -> list[str]:
    """Why a run's parameters differ from its preset's: overridden (-p) or changed in book.yml."""
    ran = manifest.get("params") or {}
    if ran == preset_params:
        return []
    overrides = manifest.get("overrides") or {}
    keys = sorted(set(ran) | set(preset_params), key=str)
    differ = [k for k in keys if ran.get(k) != preset_params.get(k)]
    over = [k for k in differ if k in overrides]
    changed = [k for k in differ if k not in overrides]
    reasons = []
    if over:
        shown = ", ".join(f"{k}={json.dumps(ran.get(k))}" for k in over)
        reasons.append(f"parameters overridden: {shown}")
    if changed:
        shown = ", ".join(
            f"{k} {json.dumps(ran.get(k))} → {json.dumps(preset_params.get(k))}" for k in changed
        )
        reasons.append(f"the preset's parameters changed since the run: {shown}")
    return reasons
