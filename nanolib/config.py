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
TOP_KEYS = {"title", "subtitle", "render_preset", "cell_timeout_s", "cost", "chapters", "presets"}
# book.yml `cost:`, per device kind (a preset's `device`): the assumptions every cost estimate uses.
COST_KEYS = {
    "cuda": {"name", "peak_flops", "mfu", "dollars_per_hour", "memory_gib"},
    "cpu": {"name", "flops_per_s", "dollars_per_hour", "memory_gib"},
}


class BookConfigError(ValueError):
    """book.yml, a preset or a parameter is wrong; the message says what and how to fix it."""


@dataclass(frozen=True)
class Range:
    """The values a parameter may take: bounds (inclusive unless open) or a set of choices. A list
    parameter's every number (at any depth) must lie in the range."""

    lo: float | None = None
    hi: float | None = None
    lo_open: bool = False
    choices: tuple[str, ...] = ()

    def __str__(self) -> str:
        if self.choices:
            return f"one of {', '.join(self.choices)}"
        if self.lo is not None and self.hi is not None:
            return f"in {'(' if self.lo_open else '['}{self.lo:g}, {self.hi:g}]"
        if self.lo is not None:
            return f"{'>' if self.lo_open else '≥'} {self.lo:g}"
        return f"≤ {self.hi:g}"

    def allows(self, value: Any) -> bool:
        """Is value (or every number/string inside a list value) in the range?"""
        if isinstance(value, (list, tuple)):
            return all(self.allows(v) for v in value)
        if value is None:
            return True
        if self.choices:
            return value in self.choices
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            return True  # the type check reports a wrong type
        if self.lo is not None and (value <= self.lo if self.lo_open else value < self.lo):
            return False
        return self.hi is None or value <= self.hi


AT_LEAST_1, AT_LEAST_0, POSITIVE = Range(lo=1), Range(lo=0), Range(lo=0, lo_open=True)
FRACTION = Range(lo=0, hi=1)
# The allowed values of every chapter parameter, by name: a name means the same thing in every
# chapter, so each is declared once. Checked for the chapter defaults, every preset's values and
# every override, whenever book.yml is loaded (`nanobook status`, `run`, `build` …).
RANGES: dict[str, Range] = {
    # text and tokenizer: 256 byte tokens + 9 special tokens (nanolib.tokenizer.SPECIAL_TOKENS)
    "data": Range(choices=("tiny", "fineweb-edu")),  # nanolib.data.SOURCES
    "vocab_size": Range(lo=265),
    "sweep_vocab_sizes": Range(lo=265),
    "sweep_vocab_size": Range(lo=265),
    "max_chars": AT_LEAST_1,
    "doc_cap": AT_LEAST_1,
    "sweep_max_chars": AT_LEAST_1,
    "seed": AT_LEAST_0,
    # model shape
    "depth": AT_LEAST_1,
    "depths": AT_LEAST_1,
    "aspect_ratio": AT_LEAST_1,
    "head_dim": Range(lo=2),  # rotary embeddings turn channels in pairs
    "seq_len": AT_LEAST_1,
    # training
    "batch_tokens": AT_LEAST_1,
    "device_batch_size": AT_LEAST_1,
    "tokens_per_param": POSITIVE,
    "target_flops": POSITIVE,
    "num_steps": AT_LEAST_1,
    "matrix_lr": AT_LEAST_0,
    "embedding_lr": AT_LEAST_0,
    "unembedding_lr": AT_LEAST_0,
    "weight_decay": AT_LEAST_0,
    "warmup_steps": AT_LEAST_0,
    "warmdown_ratio": FRACTION,
    "final_lr_frac": FRACTION,
    "eval_every": AT_LEAST_0,  # 0: at the start and the end only
    "eval_tokens": AT_LEAST_1,
    "checkpoint_every": AT_LEAST_0,  # 0: only the final checkpoint
    "num_samples": AT_LEAST_0,
    "sample_tokens": AT_LEAST_1,
    "bigram_max_tokens": AT_LEAST_1,
    # chat: SFT, its evals, RL
    "lr_frac": AT_LEAST_0,  # × the previous stage's learning rates
    "val_per_task": AT_LEAST_1,
    "eval_items": AT_LEAST_1,
    "max_new_tokens": AT_LEAST_1,
    "eval_batch_size": AT_LEAST_1,
    "temperature": AT_LEAST_0,
    # scaling sweep and miniseries
    "sweep_budgets": POSITIVE,
    "sweep_depths": AT_LEAST_1,
    "sweep_time_budget_s": POSITIVE,
    "cpu_threads": AT_LEAST_1,
    "family_depths": AT_LEAST_1,
    "family_tokens_per_param": POSITIVE,
    "n_bootstrap": AT_LEAST_1,
    "shape_depth": AT_LEAST_1,
    "shape_configs": AT_LEAST_1,
    # CORE
    "bundle": Range(choices=("tiny", "dclm")),
    "max_per_task": AT_LEAST_1,
    # RL
    "task": Range(choices=("tiny_arithmetic", "gsm8k")),  # generative tasks with an answer
    "num_epochs": POSITIVE,
    "problems_per_step": AT_LEAST_1,
    "top_k": AT_LEAST_1,
    "eval_problems": AT_LEAST_0,
    "eval_samples": AT_LEAST_0,
    "demo_steps": AT_LEAST_1,
    # inference
    "chat_model": Range(choices=("rl", "sft", "base")),  # nanolib.chat_models.KINDS
    "context_lengths": Range(lo=2),  # a cached step needs at least one token before it
    "timing_repeats": AT_LEAST_1,
    "decode_tokens": AT_LEAST_1,
    "temperatures": POSITIVE,
    "top_p": Range(lo=0, hi=1, lo_open=True),
}


@dataclass(frozen=True)
class DeviceCost:
    """The book's cost assumptions for one device kind, from book.yml `cost:`."""

    kind: str  # cpu | cuda: the `device` of the presets it applies to
    name: str  # the device planned on, e.g. "NVIDIA H100 80GB HBM3"
    flops_per_s: float  # assumed achieved training FLOP/s per device (GPU: peak × MFU)
    dollars_per_hour: float  # assumed price per device-hour (0: not priced)
    peak_flops: float | None = None  # dense bf16 peak FLOP/s of a GPU (datasheet)
    mfu: float | None = None  # assumed model FLOPs utilisation of a GPU
    memory_gib: float | None = None  # memory of one device (None: the host's, measured)


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
    cost: dict[str, DeviceCost] = field(default_factory=dict)

    def cost_of(self, device: str) -> DeviceCost:
        """The cost assumptions for a device kind (a preset's `device`; auto plans as cpu)."""
        kind = "cpu" if device == "auto" else torch_kind(device)
        if kind not in self.cost:
            raise BookConfigError(
                f"book.yml has no `cost: {kind}:` block; "
                f"add one with keys {sorted(COST_KEYS[kind])}"
            )
        return self.cost[kind]

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

    def explain(
        self, chapter: str, preset: str, overrides: dict[str, Any] | None = None
    ) -> list[tuple[str, Any, str]]:
        """(name, value, source) of each resolved parameter; source is 'book.yml default',
        'preset <name>' or 'override (-p)'."""
        ch = self.chapter(chapter)
        from_preset = self.preset(preset).chapters.get(ch.slug, {})
        resolved = self.resolve(chapter, preset, overrides)
        rows = []
        for key, value in resolved.items():
            if key in (overrides or {}):
                source = "override (-p)"
            elif key in from_preset:
                source = f"preset {preset}"
            else:
                source = "book.yml default"
            rows.append((key, value, source))
        return rows


def data_cache() -> Path:
    """Where downloaded data is cached: $NANOBOOK_DATA, else ~/.cache/nanobook."""
    return Path(os.environ.get("NANOBOOK_DATA") or Path.home() / ".cache" / "nanobook")


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
    cost = _load_cost(raw.get("cost") or {})
    for name, pr in presets.items():
        kind = "cpu" if pr.device == "auto" else pr.device
        if cost and kind not in cost:
            raise BookConfigError(
                f"book.yml preset {name!r} runs on {kind} but `cost:` has no {kind!r} block; "
                f"add one with keys {sorted(COST_KEYS[kind])}"
            )
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
        cell_timeout_s=_positive_int(raw, "cell_timeout_s", 1200, path.name, "seconds"),
        chapters=chapters,
        presets=presets,
        cost=cost,
    )


def torch_kind(device: str) -> str:
    """'cuda:1' → 'cuda': the kind of a device string."""
    return device.split(":", 1)[0]


def _load_cost(raw: Any) -> dict[str, DeviceCost]:
    """book.yml `cost:`: per device kind, numbers checked, a GPU's achieved FLOP/s derived."""
    if not isinstance(raw, dict):
        raise BookConfigError("book.yml: 'cost' must be a mapping of device kind (cpu, cuda)")
    out = {}
    for kind, values in raw.items():
        where = f"book.yml cost {kind!r}"
        if kind not in COST_KEYS:
            raise BookConfigError(f"{where}: unknown device kind; valid kinds: {sorted(COST_KEYS)}")
        if not isinstance(values, dict):
            raise BookConfigError(
                f"{where}: expected a mapping with keys {sorted(COST_KEYS[kind])}"
            )
        need = COST_KEYS[kind] - {"memory_gib"} - ({"name"} if kind == "cpu" else set())
        _check_keys(values, COST_KEYS[kind], where, required=need)
        nums = {k: v for k, v in values.items() if k != "name"}
        for key, value in nums.items():
            if isinstance(value, bool) or not isinstance(value, (int, float)):
                raise BookConfigError(f"{where}: {key!r} must be a number, got {value!r}")
            allowed = COST_RANGES[key]
            if not allowed.allows(value):
                raise BookConfigError(f"{where}: {key!r} must be {allowed}, got {value!r}")
        nums = {k: float(v) for k, v in nums.items()}
        if kind == "cuda":
            nums["flops_per_s"] = nums["peak_flops"] * nums["mfu"]
        out[kind] = DeviceCost(kind=kind, name=str(values.get("name", kind)), **nums)
    return out


COST_RANGES = {
    "peak_flops": POSITIVE,
    "flops_per_s": POSITIVE,
    "mfu": Range(lo=0, hi=1, lo_open=True),
    "dollars_per_hour": AT_LEAST_0,
    "memory_gib": POSITIVE,
}


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
    for key, value in params.items():
        _check_range(key, value, f"{where} ({slug}) default")
    produces = raw.get("produces") or []
    if not isinstance(produces, list) or not all(isinstance(a, str) for a in produces):
        raise BookConfigError(
            f"{where}: 'produces' must be a list of artifact names, e.g. [tokenizer], "
            f"got {produces!r}"
        )
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
        produces=tuple(produces),
        timeout_s=_positive_int(raw, "timeout_s", 1800, where, "seconds"),
    )


def _load_preset(name: str, raw: Any, chapters: tuple[Chapter, ...]) -> Preset:
    where = f"book.yml preset {name!r}"
    if not isinstance(raw, dict):
        raise BookConfigError(f"{where}: expected a mapping with keys {sorted(PRESET_KEYS)}")
    _check_keys(raw, PRESET_KEYS, where, required={"description", "device"})
    by_slug = {c.slug: c for c in chapters}
    per_chapter = raw.get("chapters") or {}
    if not isinstance(per_chapter, dict):
        raise BookConfigError(
            f"{where}: 'chapters' must be a mapping of chapter slug -> parameter values "
            f"(e.g. `01_tokenizer: {{vocab_size: 512}}`), got a {type(per_chapter).__name__}"
        )
    checked: dict[str, dict[str, Any]] = {}
    for slug, values in per_chapter.items():
        if slug not in by_slug:
            raise BookConfigError(
                f"{where}: unknown chapter {slug!r}; valid chapters: {', '.join(by_slug)}"
            )
        values = values or {}
        if not isinstance(values, dict):
            raise BookConfigError(
                f"{where} chapter {slug}: expected a mapping of parameter -> value, "
                f"got a {type(values).__name__}"
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
        nproc=_positive_int(raw, "nproc", 1, where, "processes"),
        chapters=checked,
    )


def _positive_int(raw: dict, key: str, default: int, where: str, unit: str) -> int:
    """raw[key] as a whole number ≥ 1 (default if absent), or a one-line error."""
    value = raw.get(key, default)
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise BookConfigError(
            f"{where}: {key!r} must be a whole number ≥ 1 ({unit}), got {value!r}"
        )
    return value


def _check_range(key: str, value: Any, where: str) -> None:
    allowed = RANGES.get(key)
    if allowed is not None and not allowed.allows(value):
        raise BookConfigError(f"{where}: parameter {key!r} must be {allowed}, got {value!r}")


def _check_param(ch: Chapter, key: str, value: Any, where: str) -> Any:
    if key not in ch.params:
        valid = ", ".join(sorted(ch.params)) or "(none)"
        raise BookConfigError(f"{where}: unknown parameter {key!r}; valid parameters: {valid}")
    default = ch.params[key]
    want = type(default) if default is not None else ch.null_types.get(key)
    if value is None or want is None:
        _check_range(key, value, where)
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
    _check_range(key, value, where)
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
