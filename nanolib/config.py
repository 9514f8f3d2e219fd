"""book.yml: the chapters, their parameters and the presets, loaded and validated."""

from __future__ import annotations

import ast
import os
from dataclasses import dataclass, field, replace
from functools import lru_cache
from pathlib import Path
from typing import Any

import yaml

PRESET_KEYS = {"description", "where", "device", "nproc", "budget", "chapters"}
CHAPTER_KEYS = {"file", "title", "params", "produces", "timeout_s"}
TOP_KEYS = {"title", "subtitle", "render_preset", "cell_timeout_s", "chapters", "presets"}


class BookConfigError(ValueError):
    """book.yml, a preset or a parameter is wrong; the message says what and how to fix it."""


@dataclass(frozen=True)
class Chapter:
    """One chapter of the book as book.yml declares it."""

    slug: str
    number: str
    file: Path
    title: str
    params: dict[str, Any]
    produces: tuple[str, ...] = ()
    timeout_s: int = 1800
    # The type of a parameter whose default is null, taken from the values presets give it.
    null_types: dict[str, type] = field(default_factory=dict)

    @property
    def notebook(self) -> Path:
        """The paired .ipynb of the chapter."""
        return self.file.with_suffix(".ipynb")


@dataclass(frozen=True)
class Preset:
    """A named set of parameter values for every chapter."""

    name: str
    description: str
    where: str
    device: str
    nproc: int
    chapters: dict[str, dict[str, Any]] = field(default_factory=dict)


@dataclass(frozen=True)
class Book:
    """The whole book.yml."""

    root: Path
    title: str
    subtitle: str
    render_preset: str
    cell_timeout_s: int
    chapters: tuple[Chapter, ...]
    presets: dict[str, Preset]

    def chapter(self, key: str) -> Chapter:
        """Find a chapter by number ('01'), slug ('01_tokenizer') or file stem."""
        for ch in self.chapters:
            if key in (ch.number, ch.slug, str(ch.file), ch.file.name):
                return ch
        valid = ", ".join(f"{c.number} ({c.slug})" for c in self.chapters)
        raise BookConfigError(f"unknown chapter {key!r}; valid chapters: {valid}")

    def preset(self, name: str) -> Preset:
        """Find a preset by name, or fail listing the valid ones."""
        if name not in self.presets:
            raise BookConfigError(
                f"unknown preset {name!r}; valid presets: {', '.join(self.presets)}"
            )
        return self.presets[name]

    def producer_of(self, artifact: str) -> Chapter:
        """The chapter that makes a named artifact."""
        for ch in self.chapters:
            if artifact in ch.produces:
                return ch
        known = sorted(a for c in self.chapters for a in c.produces)
        raise BookConfigError(f"no chapter produces artifact {artifact!r}; known: {known}")

    def resolve(
        self, chapter: str, preset: str, overrides: dict[str, Any] | None = None
    ) -> dict[str, Any]:
        """Chapter defaults, then the preset's values, then overrides — all type-checked."""
        ch = self.chapter(chapter)
        pr = self.preset(preset)
        params = dict(ch.params)
        params.update(pr.chapters.get(ch.slug, {}))
        for key, value in (overrides or {}).items():
            params[key] = _check_param(ch, key, value, f"override of {ch.slug}")
        return params


def book_root() -> Path:
    """The folder holding book.yml: $NANOBOOK_ROOT, else the checkout nanolib was imported from."""
    env = os.environ.get("NANOBOOK_ROOT")
    if env:
        return Path(env).resolve()
    here = Path(__file__).resolve().parent.parent
    if (here / "book.yml").exists():
        return here
    cwd = Path.cwd()
    for p in (cwd, *cwd.parents):
        if (p / "book.yml").exists():
            return p
    raise BookConfigError(
        "cannot find book.yml: run from the book's checkout or set NANOBOOK_ROOT to it"
    )


def load_book(path: str | Path | None = None) -> Book:
    """Load and validate book.yml (default: the one at book_root())."""
    path = Path(path) if path else book_root() / "book.yml"
    return _load_book_cached(path.resolve(), path.stat().st_mtime_ns if path.exists() else 0)


@lru_cache(maxsize=8)
def _load_book_cached(path: Path, _mtime: int) -> Book:
    if not path.exists():
        raise BookConfigError(f"{path}: no such file; the book needs a book.yml at its root")
    try:
        raw = yaml.safe_load(path.read_text())
    except yaml.YAMLError as e:
        mark = getattr(e, "problem_mark", None)
        where = f" line {mark.line + 1}" if mark else ""
        raise BookConfigError(
            f"{path.name}{where}: not valid YAML ({getattr(e, 'problem', e)})"
        ) from None
    if not isinstance(raw, dict):
        raise BookConfigError(f"{path.name}: expected a mapping with keys {sorted(TOP_KEYS)}")
    _check_keys(raw, TOP_KEYS, path.name, required={"title", "chapters", "presets"})
    root = path.parent
    chapters = tuple(_load_chapter(root, i, c) for i, c in enumerate(_as_list(raw, "chapters")))
    slugs = [c.slug for c in chapters]
    if len(set(slugs)) != len(slugs):
        raise BookConfigError(f"book.yml: chapters listed twice: {slugs}")
    presets_raw = raw["presets"]
    if not isinstance(presets_raw, dict) or not presets_raw:
        raise BookConfigError("book.yml: 'presets' must be a non-empty mapping of name -> preset")
    chapters = tuple(_with_null_types(ch, presets_raw) for ch in chapters)
    presets = {n: _load_preset(n, p, chapters) for n, p in presets_raw.items()}
    render = str(raw.get("render_preset", "tiny"))
    if render not in presets:
        raise BookConfigError(
            f"book.yml: render_preset {render!r} is not a preset; valid: {', '.join(presets)}"
        )
    return Book(
        root=root,
        title=str(raw["title"]),
        subtitle=str(raw.get("subtitle", "")),
        render_preset=render,
        cell_timeout_s=int(raw.get("cell_timeout_s", 1200)),
        chapters=chapters,
        presets=presets,
    )


def _with_null_types(ch: Chapter, presets_raw: dict) -> Chapter:
    """The chapter, knowing the type of each null-default parameter from the presets' values
    (a float where presets give both ints and floats), so a wrong type is caught there too."""
    seen: dict[str, set[type]] = {}
    for preset in presets_raw.values():
        per_chapter = preset.get("chapters") if isinstance(preset, dict) else None
        values = per_chapter.get(ch.slug) if isinstance(per_chapter, dict) else None
        if not isinstance(values, dict):
            continue  # _load_preset reports a malformed preset
        for key, value in values.items():
            if key in ch.params and ch.params[key] is None and value is not None:
                seen.setdefault(key, set()).add(type(value))
    types = {}
    for key, kinds in seen.items():
        if kinds <= {int, float}:
            types[key] = float if float in kinds else int
        elif len(kinds) == 1:
            types[key] = kinds.pop()
        else:
            names = ", ".join(sorted(k.__name__ for k in kinds))
            raise BookConfigError(
                f"book.yml chapter {ch.slug}: presets give parameter {key!r} values of different "
                f"types ({names}); use one type (or null) in every preset"
            )
    return replace(ch, null_types=types)


def _as_list(raw: dict, key: str) -> list:
    value = raw[key]
    if not isinstance(value, list) or not value:
        raise BookConfigError(f"book.yml: {key!r} must be a non-empty list")
    return value


def _check_keys(raw: dict, allowed: set[str], where: str, required: set[str] = frozenset()):
    unknown = set(raw) - allowed
    if unknown:
        raise BookConfigError(
            f"{where}: unknown key(s) {sorted(unknown)}; valid keys: {sorted(allowed)}"
        )
    missing = set(required) - set(raw)
    if missing:
        raise BookConfigError(f"{where}: missing key(s) {sorted(missing)}")


def _load_chapter(root: Path, i: int, raw: Any) -> Chapter:
    where = f"book.yml chapters[{i}]"
    if not isinstance(raw, dict):
        raise BookConfigError(f"{where}: expected a mapping with keys {sorted(CHAPTER_KEYS)}")
    _check_keys(raw, CHAPTER_KEYS, where, required={"file", "title"})
    file = root / str(raw["file"])
    if not file.exists():
        raise BookConfigError(f"{where}: chapter file {raw['file']!r} does not exist")
    slug = file.stem
    number = slug.split("_", 1)[0]
    params = raw.get("params") or {}
    if not isinstance(params, dict):
        raise BookConfigError(f"{where}: 'params' must be a mapping of name -> default value")
    declared = notebook_parameters(file)
    expected = set(params) | {"preset", "run_dir"}
    if set(declared) != expected:
        raise BookConfigError(
            f"{where}: the parameters cell of {file.name} declares {sorted(declared)} but "
            f"book.yml lists {sorted(expected)}; make them agree"
        )
    return Chapter(
        slug=slug,
        number=number,
        file=file,
        title=str(raw["title"]),
        params=dict(params),
        produces=tuple(raw.get("produces") or ()),
        timeout_s=int(raw.get("timeout_s", 1800)),
    )


def _load_preset(name: str, raw: Any, chapters: tuple[Chapter, ...]) -> Preset:
    where = f"book.yml preset {name!r}"
    if not isinstance(raw, dict):
        raise BookConfigError(f"{where}: expected a mapping with keys {sorted(PRESET_KEYS)}")
    _check_keys(raw, PRESET_KEYS, where, required={"description", "device"})
    by_slug = {c.slug: c for c in chapters}
    per_chapter = raw.get("chapters") or {}
    checked: dict[str, dict[str, Any]] = {}
    for slug, values in per_chapter.items():
        if slug not in by_slug:
            raise BookConfigError(
                f"{where}: unknown chapter {slug!r}; valid chapters: {', '.join(by_slug)}"
            )
        ch = by_slug[slug]
        checked[slug] = {
            k: _check_param(ch, k, v, f"{where} chapter {slug}") for k, v in values.items()
        }
    device = str(raw["device"])
    if device not in ("cpu", "cuda", "auto"):
        raise BookConfigError(f"{where}: device {device!r} must be one of cpu, cuda, auto")
    return Preset(
        name=name,
        description=str(raw["description"]),
        where=str(raw.get("where", "")),
        device=device,
        nproc=int(raw.get("nproc", 1)),
        chapters=checked,
    )


def _check_param(ch: Chapter, key: str, value: Any, where: str) -> Any:
    if key not in ch.params:
        valid = ", ".join(sorted(ch.params)) or "(none)"
        raise BookConfigError(f"{where}: unknown parameter {key!r}; valid parameters: {valid}")
    default = ch.params[key]
    want = type(default) if default is not None else ch.null_types.get(key)
    if value is None or want is None:
        return value
    ok = isinstance(value, want) and not (want is int and isinstance(value, bool))
    if want is float and isinstance(value, int) and not isinstance(value, bool):
        value, ok = float(value), True
    if not ok:
        like = f"like {default!r}" if default is not None else "or null"
        raise BookConfigError(
            f"{where}: parameter {key!r} must be {want.__name__} ({like}), "
            f"got {type(value).__name__} {value!r}"
        )
    return value


def notebook_parameters(path: str | Path) -> dict[str, Any]:
    """Names and literal values assigned in the cell tagged `parameters` of a percent-format .py."""
    text = Path(path).read_text()
    lines = text.splitlines()
    start = next(
        (i for i, ln in enumerate(lines) if ln.startswith("# %%") and "parameters" in ln), None
    )
    if start is None:
        raise BookConfigError(f"{Path(path).name}: no cell tagged 'parameters'")
    end = next((i for i in range(start + 1, len(lines)) if lines[i].startswith("# %%")), len(lines))
    tree = ast.parse("\n".join(lines[start + 1 : end]))
    params: dict[str, Any] = {}
    for node in tree.body:
        if not (isinstance(node, ast.Assign) and len(node.targets) == 1):
            raise BookConfigError(
                f"{Path(path).name}: the parameters cell may hold only `name = literal` lines"
            )
        target = node.targets[0]
        try:
            params[target.id] = ast.literal_eval(node.value)
        except (ValueError, AttributeError):
            raise BookConfigError(
                f"{Path(path).name}: parameter {ast.unparse(target)} must be a literal"
            ) from None
    return params
