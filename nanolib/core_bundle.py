"""CORE's tasks and eval bundles: the 22-task table, reading and checking a bundle, downloading one.

An *eval bundle* (DCLM's format, as nanochat ships it) is a folder: ``core.yaml`` lists the tasks
(``icl_tasks``: ``label``, ``dataset_uri``, ``num_fewshot``, ``icl_task_type``,
``continuation_delimiter``), ``eval_meta_data.csv`` holds the random baselines (column
``Random baseline``, in percent) and ``eval_data/<dataset_uri>`` one JSON object per line. Three
task types, with these fields: ``multiple_choice`` (``query``, ``choices``, ``gold``), ``schema``
(``context_options``, ``continuation``, ``gold``) and ``language_modeling`` (``context``,
``continuation``). A bundle may carry a ``MANIFEST.json`` (each file's size and sha256), checked
on load.

The 22 CORE tasks, their shots, delimiters and both baseline tables (v1, used by nanochat and
for the GPT-2/GPT-3 numbers; v2, DCLM's corrected baselines since 2025-09) live in
``data/core/core_tasks.csv``; ``data/core/tiny_bundle/`` is a small bundle in the same format made
from the shipped corpus's held-out text, for the CPU presets. Prompting and scoring are in
`nanolib.core_eval`.
"""

from __future__ import annotations

import ast
import csv
import json
import shutil
import tempfile
import zipfile
from collections.abc import Iterable
from dataclasses import dataclass
from functools import partial
from pathlib import Path
from typing import Any

import yaml

from nanolib.config import book_root, data_cache
from nanolib.files import DownloadError as DownloadError  # re-exported: download_bundle raises it
from nanolib.files import (
    atomic_write_json,
    check_file_manifest,
    download_file,
    file_manifest,
    read_json,
    replace_dir,
    sha256_file,
)

TASK_TYPES = ("multiple_choice", "schema", "language_modeling")
DEFAULT_DELIMITER = " "
# The bundle is a plain file on S3, not in a Hugging Face repo, so huggingface_hub cannot fetch
# it: nanolib.files.download_file (resume, retry, check, atomic rename) does.
EVAL_BUNDLE_URL = "https://karpathy-public.s3.us-west-2.amazonaws.com/eval_bundle.zip"
TASKS_CSV = "data/core/core_tasks.csv"
TINY_BUNDLE = "data/core/tiny_bundle"
BUNDLE_YAML = "core.yaml"
BUNDLE_MANIFEST = "MANIFEST.json"  # each file's size and sha256, checked by load_bundle
META_CSV = "eval_meta_data.csv"
REQUIRED_FIELDS = {
    "multiple_choice": {"query": str, "choices": list, "gold": int},
    "schema": {"context_options": list, "continuation": str, "gold": int},
    "language_modeling": {"context": str, "continuation": str},
}


class BundleFormatError(ValueError):
    """A bundle file is malformed; the message names the file (and line) and the fix."""


# ------------------------------------------------------------------------------------------------
# the task table


@dataclass(frozen=True)
class TaskSpec:
    """How a task is prompted and what random guessing scores on it (baselines as fractions)."""

    label: str
    task_type: str
    num_fewshot: int
    delimiter: str
    dataset_uri: str
    baseline_v1: float
    baseline_v2: float
    category: str = ""


def core_tasks() -> list[TaskSpec]:
    """The 22 DCLM CORE tasks with v1 and v2 baselines, from data/core/core_tasks.csv."""
    path = book_root() / TASKS_CSV
    with open(path, newline="", encoding="utf-8") as f:
        rows = list(csv.DictReader(f))
    return [
        TaskSpec(
            label=r["label"],
            task_type=r["icl_task_type"],
            num_fewshot=int(r["num_fewshot"]),
            delimiter=ast.literal_eval(r["continuation_delimiter"]),
            dataset_uri=r["dataset_uri"],
            baseline_v1=float(r["baseline_v1"]) / 100,
            baseline_v2=float(r["baseline_v2"]) / 100,
            category=r["category"],
        )
        for r in rows
    ]


# ------------------------------------------------------------------------------------------------
# bundles


@dataclass(frozen=True)
class Task:
    """A task of a bundle: its spec, its items in file order, and the file they came from."""

    spec: TaskSpec
    items: tuple[dict, ...]
    path: Path

    @property
    def label(self) -> str:
        """The task's name, e.g. "hellaswag_zeroshot"."""
        return self.spec.label


@dataclass(frozen=True)
class Bundle:
    """An eval bundle on disk: core.yaml's task list with every task's items loaded."""

    root: Path
    tasks: tuple[Task, ...]

    @property
    def name(self) -> str:
        """The bundle folder's name."""
        return self.root.name

    def task(self, label: str) -> Task:
        """The task called label, or a KeyError listing the labels."""
        for t in self.tasks:
            if t.label == label:
                return t
        raise KeyError(f"no task {label!r} in {self.root}; tasks: {[t.label for t in self.tasks]}")


def tiny_bundle_dir() -> Path:
    """The shipped tiny bundle (data/core/tiny_bundle)."""
    return book_root() / TINY_BUNDLE


def default_bundle_dir() -> Path:
    """Where download_bundle unpacks the real bundle: $NANOBOOK_DATA/eval_bundle."""
    return data_cache() / "eval_bundle"


def _item_problem(task_type: str, item: Any) -> str | None:
    """What is wrong with one JSONL item of a task type, or None."""
    if not isinstance(item, dict):
        return f"expected a JSON object, got {type(item).__name__}"
    for key, kind in REQUIRED_FIELDS[task_type].items():
        if key not in item:
            needs = sorted(REQUIRED_FIELDS[task_type])
            return f"missing field {key!r} (a {task_type} item needs {needs})"
        value = item[key]
        if not isinstance(value, kind) or (kind is int and isinstance(value, bool)):
            return f"field {key!r} should be {kind.__name__}, got {type(value).__name__}"
    if task_type == "language_modeling":
        return None if item["continuation"] else "empty 'continuation'"
    options = item["choices"] if task_type == "multiple_choice" else item["context_options"]
    name = "choices" if task_type == "multiple_choice" else "context_options"
    if len(options) < 2 or not all(isinstance(o, str) and o for o in options):
        return f"{name!r} must list at least two non-empty strings"
    if not 0 <= item["gold"] < len(options):
        return f"gold={item['gold']} is not an index into the {len(options)} {name}"
    if task_type == "schema" and not item["continuation"]:
        return "empty 'continuation'"
    return None


def read_task_items(path: Path, task_type: str) -> tuple[dict, ...]:
    """Read and check a task's JSONL file; a bad line raises BundleFormatError naming it."""
    if not path.is_file():
        raise BundleFormatError(f"{path}: task file is missing; re-download or rebuild the bundle")
    items = []
    with open(path, encoding="utf-8") as f:
        for lineno, line in enumerate(f, 1):
            if not line.strip():
                continue
            try:
                item = json.loads(line)
            except json.JSONDecodeError as e:
                raise BundleFormatError(f"{path}:{lineno}: not valid JSON ({e.msg})") from None
            problem = _item_problem(task_type, item)
            if problem:
                raise BundleFormatError(f"{path}:{lineno}: {problem}")
            items.append(item)
    return tuple(items)


def _meta_baselines(root: Path) -> dict[str, tuple[float | None, str]]:
    """Random baseline (fraction, or None if unreadable) and its file:line, by task label."""
    path = root / META_CSV
    if not path.is_file():
        return {}
    with open(path, newline="", encoding="utf-8") as f:
        rows = list(csv.DictReader(f))
    out = {}
    for lineno, row in enumerate(rows, 2):
        try:
            value = float(row.get("Random baseline") or "") / 100
        except ValueError:
            value = None
        out[row.get("Eval Task") or ""] = (value, f"{path}:{lineno}")
    return out


def _spec_from_yaml(entry: Any, where: str, known: dict[str, TaskSpec], meta: dict) -> TaskSpec:
    if not isinstance(entry, dict):
        raise BundleFormatError(f"{where}: expected a mapping, got {entry!r}")
    missing = [
        k for k in ("label", "dataset_uri", "icl_task_type", "num_fewshot") if k not in entry
    ]
    if missing:
        raise BundleFormatError(f"{where}: missing {missing}")
    label, task_type = str(entry["label"]), entry["icl_task_type"]
    if task_type not in TASK_TYPES:
        raise BundleFormatError(
            f"{where} ({label}): icl_task_type {task_type!r} not in {TASK_TYPES}"
        )
    shots = entry["num_fewshot"]
    shots = shots[0] if isinstance(shots, list) and len(shots) == 1 else shots
    if not isinstance(shots, int) or shots < 0:
        raise BundleFormatError(f"{where} ({label}): num_fewshot must be [k] with k ≥ 0")
    delimiter = entry.get("continuation_delimiter", DEFAULT_DELIMITER)
    if label in known:  # a CORE task: both published baseline tables
        v1, v2 = known[label].baseline_v1, known[label].baseline_v2
    elif label in meta and meta[label][0] is not None:  # another task: the bundle's baseline
        v1 = v2 = meta[label][0]
    elif label in meta:
        raise BundleFormatError(f"{meta[label][1]}: 'Random baseline' of {label} is not a number")
    else:
        raise BundleFormatError(
            f"{where} ({label}): no random baseline: the task is not one of the 22 in "
            f"{TASKS_CSV} and has no row in the bundle's {META_CSV}"
        )
    folder = Path(str(entry["dataset_uri"])).parent.name.replace("_", " ")
    return TaskSpec(
        label=label,
        task_type=task_type,
        num_fewshot=shots,
        delimiter=str(delimiter),
        dataset_uri=str(entry["dataset_uri"]),
        baseline_v1=v1,
        baseline_v2=v2,
        category=known[label].category if label in known else folder,
    )


def write_bundle_manifest(root: str | Path) -> None:
    """Record every file of a bundle (size, sha256) in its MANIFEST.json, checked on load."""
    atomic_write_json(Path(root) / BUNDLE_MANIFEST, file_manifest(root, skip=(BUNDLE_MANIFEST,)))


def _bundle_fix(root: Path) -> str:
    if root.resolve() == tiny_bundle_dir().resolve():
        return (
            "restore it with `git checkout data/core/tiny_bundle`, or rebuild it with "
            "`python data/core/make_tiny_bundle.py`"
        )
    return f"delete {root} and run nanolib.core_bundle.download_bundle() again"


def load_bundle(directory: str | Path, labels: Iterable[str] | None = None) -> Bundle:
    """Read and check a bundle (core.yaml + eval_data/*.jsonl, against its MANIFEST.json when it
    has one); optionally only some tasks."""
    root = Path(directory)
    yaml_path = root / BUNDLE_YAML
    if not yaml_path.is_file():
        raise BundleFormatError(
            f"{yaml_path} not found: not an eval bundle; run "
            "nanolib.core_bundle.download_bundle() or `python data/core/make_tiny_bundle.py` for "
            "the tiny one"
        )
    if (root / BUNDLE_MANIFEST).is_file():
        problem = check_file_manifest(root, read_json(root / BUNDLE_MANIFEST))
        if problem:
            raise BundleFormatError(
                f"eval bundle {root} is damaged: {problem}; {_bundle_fix(root)}"
            )
    try:
        doc = yaml.safe_load(yaml_path.read_text(encoding="utf-8"))
    except yaml.YAMLError as e:
        raise BundleFormatError(f"{yaml_path}: not valid YAML ({e})") from None
    entries = doc.get("icl_tasks") if isinstance(doc, dict) else None
    if not isinstance(entries, list) or not entries:
        raise BundleFormatError(f"{yaml_path}: expected a non-empty list under 'icl_tasks'")
    known = {t.label: t for t in core_tasks()}
    meta = _meta_baselines(root)
    wanted = set(labels) if labels is not None else None
    tasks = []
    for i, entry in enumerate(entries):
        spec = _spec_from_yaml(entry, f"{yaml_path}: icl_tasks[{i}]", known, meta)
        if wanted is not None and spec.label not in wanted:
            continue
        path = root / "eval_data" / spec.dataset_uri
        items = read_task_items(path, spec.task_type)
        if len(items) <= spec.num_fewshot:
            raise BundleFormatError(
                f"{path}: {len(items)} items cannot give {spec.num_fewshot}-shot prompts that "
                "leave the item out"
            )
        tasks.append(Task(spec, items, path))
    if wanted is not None and wanted - {t.label for t in tasks}:
        raise KeyError(f"tasks {sorted(wanted - {t.label for t in tasks})} are not in {yaml_path}")
    return Bundle(root, tuple(tasks))


# ------------------------------------------------------------------------------------------------
# downloading the real bundle


def _check_zip(part: Path, sha256: str | None) -> None:
    """Raise ValueError if the downloaded zip is unusable (checksum, CRC, no core.yaml)."""
    if sha256 is not None and (got := sha256_file(part)) != sha256:
        raise ValueError(f"sha256 {got} differs from the expected {sha256}")
    try:
        with zipfile.ZipFile(part) as z:
            if (bad := z.testzip()) is not None:
                raise ValueError(f"member {bad} fails its CRC check")
            if not any(Path(n).name == BUNDLE_YAML for n in z.namelist()):
                raise ValueError(f"no {BUNDLE_YAML} inside")
    except zipfile.BadZipFile as e:
        raise ValueError(f"not a zip file ({e})") from None


def download_bundle(
    dest: str | Path | None = None,
    url: str = EVAL_BUNDLE_URL,
    sha256: str | None = None,
    *,
    attempts: int = 4,
    backoff: float = 1.0,
    timeout: float = 60.0,
) -> Path:
    """Fetch eval_bundle.zip (resumable, checked) and unzip it atomically into dest; return dest."""
    from tqdm.auto import tqdm

    dest = Path(dest) if dest is not None else default_bundle_dir()
    if (dest / BUNDLE_YAML).is_file():  # unpacking is atomic, so a core.yaml means complete
        return dest
    dest.parent.mkdir(parents=True, exist_ok=True)
    archive = dest.with_name(dest.name + ".zip")
    with tqdm(total=None, unit="B", unit_scale=True, desc="eval bundle") as bar:
        download_file(
            url,
            archive,
            partial(_check_zip, sha256=sha256),
            bar=bar,
            attempts=attempts,
            backoff=backoff,
            timeout=timeout,
        )
    tmp = Path(tempfile.mkdtemp(dir=dest.parent, prefix=f".{dest.name}.unzip-"))
    try:
        with zipfile.ZipFile(archive) as z:
            z.extractall(tmp)
        found = next(p.parent for p in sorted(tmp.rglob(BUNDLE_YAML)))
        write_bundle_manifest(found)  # the unzipped files as the zip's CRCs vouched for them
        load_bundle(found, labels=[])  # core.yaml parses and names its baselines
        replace_dir(found, dest)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    archive.unlink()
    return dest
