"""`nanobook plan`: what a preset will train, how long it takes and what it costs, before a run.

A dry run on any CPU: every chapter that trains is planned with the planners the chapters use
(`nanolib.train.plan`, `nanolib.sweep.plan_isoflop` / `plan_family`), its memory per device
estimated with `nanolib.model.estimate_memory`, its time and price taken from book.yml's `cost:`
block. What would fail hours into a GPU run is found here and said in one line (`Finding`).
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import torch

from nanolib.config import Book, BookConfigError, DeviceCost, torch_kind
from nanolib.data import get_source
from nanolib.device import InsufficientMemoryError, available_memory, check_memory
from nanolib.files import read_json
from nanolib.loop import TrainingError
from nanolib.model import GPTConfig, estimate_memory, flops_per_token
from nanolib.rl_train import RLConfig, rollouts_per_rank
from nanolib.runs import MANIFEST, make_command, run_dir_for
from nanolib.sweep import SweepPlanError, plan_family, plan_isoflop, sweep_base
from nanolib.train import TrainConfig, micro_steps, plan, vocab_size_for

# Characters of web text per token of a 32K–65K BPE vocabulary (nanochat's rule of thumb for
# FineWeb-Edu), to turn planned tokens into shards to download.
CHARS_PER_TOKEN = 4.8
# The miniseries ratio when the sweep is still to fit it: nanochat's larger measured ratio (10.5
# tokens per parameter; 8 in its miniseries v1), so the plan errs on the expensive side.
UNFITTED_RATIO = 10.5
_ARTIFACT_CALL = re.compile(r"""\.artifact\(\s*["'](\w+)["']""")


@dataclass(frozen=True)
class Finding:
    """One line the plan has to say: an error (the run would fail), a warning or a note."""

    level: str  # error | warning | note
    chapter: str  # the chapter's slug
    parameter: str  # the parameter to change ("" when none is to blame)
    message: str  # what is wrong and the fix

    def __str__(self) -> str:
        where = f"chapter {self.chapter}" + (f", {self.parameter}" if self.parameter else "")
        return f"{self.level}: {where}: {self.message}"


@dataclass(frozen=True)
class Line:
    """One planned run: a chapter's model, horizon, batch layout, FLOPs, memory, time and cost."""

    chapter: str
    run: str
    model: GPTConfig | None = None
    params: int | None = None  # N: matmul parameters (nanolib.model.scaling_params)
    tokens: int | None = None
    steps: int | None = None
    layout: tuple[int, int, int] | None = None  # device batch × grad accumulation × ranks
    flops: float | None = None  # training (what a run's manifest records)
    memory: int | None = None  # bytes per device
    hours: float | None = None  # training and evaluation
    dollars: float | None = None
    note: str = ""
    eval_flops: float = 0.0  # the evaluations during training (forward passes)


@dataclass
class PresetPlan:
    """The plan of one preset: its lines, the totals, and what is wrong with it."""

    preset: str
    device: str
    nproc: int
    cost: DeviceCost
    lines: list[Line] = field(default_factory=list)
    findings: list[Finding] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        """True when no finding is an error."""
        return not any(f.level == "error" for f in self.findings)

    def totals(self) -> dict[str, float]:
        """FLOPs, wall hours, device-hours and dollars summed over every line."""
        flops = sum(ln.flops or 0.0 for ln in self.lines)
        hours = sum(ln.hours or 0.0 for ln in self.lines)
        return {
            "flops": flops,
            "hours": hours,
            "device_hours": hours * self.nproc,
            "dollars": sum(ln.dollars or 0.0 for ln in self.lines),
        }


def plan_preset(book: Book, preset: str, chapters: list[str] | None = None) -> PresetPlan:
    """Plan the chapters (default: all) of a preset; never trains, never needs a GPU."""
    pr = book.preset(preset)
    cost = book.cost_of(pr.device)
    out = PresetPlan(preset, pr.device, pr.nproc, cost)
    slugs = (
        [book.chapter(c).slug for c in chapters] if chapters else [c.slug for c in book.chapters]
    )
    for slug in slugs:
        try:
            params = book.resolve(slug, preset)
        except BookConfigError as e:
            out.findings.append(Finding("error", slug, "", str(e)))
            continue
        planner = PLANNERS.get(_role(book, slug))
        if planner is not None:
            planner(book, out, slug, params)
        _check_upstream(book, out, slug, slugs)
    _check_shards(book, out, slugs)
    return out


# ---- per chapter ------------------------------------------------------------------------------


def _role(book: Book, slug: str) -> str:
    """What a chapter does, from the first artifact it produces that the plan knows."""
    produces = book.chapter(slug).produces
    for role in ("tokenizer", "checkpoint", "sweep", "sft", "rl", "core"):
        if role in produces:
            return role
    return ""


def _tokenizer(book: Book, out: PresetPlan, slug: str, params: dict[str, Any]) -> None:
    note = f"BPE of {params['vocab_size']:,} tokens on {params['max_chars']:,} characters"
    out.lines.append(Line(slug, "tokenizer", note=note))


def _pretraining(book: Book, out: PresetPlan, slug: str, params: dict[str, Any]) -> None:
    cfg = TrainConfig.from_params(params, out_dir="", tokenizer_dir="")
    try:
        p = plan(cfg, vocab_size_for(book, out.preset), out.nproc)
    except TrainingError as e:
        out.findings.append(Finding("error", slug, "batch_tokens", str(e)))
        return
    evals = _eval_count(p.num_steps, cfg.eval_every) * cfg.eval_tokens * p.flops_per_token / 3
    memory = _memory(out, slug, p.model, cfg.device_batch_size, f"depth {cfg.depth}")
    out.lines.append(
        _timed(
            out,
            Line(
                slug,
                f"pretraining d{cfg.depth}",
                p.model,
                p.num_params,
                p.tokens,
                p.num_steps,
                (cfg.device_batch_size, p.grad_accum, out.nproc),
                p.flops,
                memory,
                eval_flops=evals,
            ),
        )
    )


def _scaling(book: Book, out: PresetPlan, slug: str, params: dict[str, Any]) -> None:
    base = sweep_base(book, out.preset, params)
    vocab = params.get("sweep_vocab_size") or vocab_size_for(book, out.preset)
    ratio = params["family_tokens_per_param"]
    try:
        sweep = plan_isoflop(
            base, params["sweep_budgets"], params["sweep_depths"], vocab, out.nproc
        )
        family = plan_family(
            base, params["family_depths"], ratio or UNFITTED_RATIO, vocab, out.nproc
        )
    except (SweepPlanError, TrainingError) as e:
        name = "sweep_budgets" if isinstance(e, SweepPlanError) else "batch_tokens"
        out.findings.append(Finding("error", slug, name, str(e)))
        return
    family_note = "" if ratio else f"ratio {UNFITTED_RATIO:g} until the sweep fits it"
    layout = (base.device_batch_size, sweep_accum(base, out.nproc), out.nproc)
    for what, table in (("sweep", sweep), ("miniseries", family)):
        for row in table.itertuples():
            cfg = replace(base, depth=int(row.depth))
            model = plan(cfg, vocab, out.nproc).model
            name = f"sweep {row.budget:.2g} d{row.depth}" if what == "sweep" else ""
            line = Line(
                slug,
                name or f"miniseries d{row.depth}",
                model,
                int(row.n_params_matmul),
                int(row.tokens),
                int(row.num_steps),
                layout,
                float(row.flops),
                _memory(out, slug, model, base.device_batch_size, f"{what} depth {row.depth}"),
                note=family_note if what == "miniseries" else "",
                eval_flops=float(row.eval_flops),
            )
            out.lines.append(_timed(out, line))


def _core(book: Book, out: PresetPlan, slug: str, params: dict[str, Any]) -> None:
    items = "all items" if params["max_per_task"] is None else f"≤ {params['max_per_task']} items"
    note = f"CORE ({params['bundle']} bundle, {items} per task) of chapter 3's model and the family"
    out.lines.append(Line(slug, "CORE evaluation", note=note))


def _sft(book: Book, out: PresetPlan, slug: str, params: dict[str, Any]) -> None:
    base = _base_recipe(book, out.preset)
    batch = params["batch_tokens"] or base.batch_tokens
    try:
        accum = micro_steps(batch, params["device_batch_size"], base.seq_len, out.nproc)
    except TrainingError as e:
        out.findings.append(Finding("error", slug, "device_batch_size", str(e)))
        return
    model = _base_model(book, out.preset, base)
    steps = params["num_steps"]
    flops = steps * batch * flops_per_token(model) if steps else None
    note = "" if steps else "one pass over the mixture: steps known once its rows are packed"
    line = Line(
        slug,
        "SFT",
        model,
        None,
        steps * batch if steps else None,
        steps,
        (params["device_batch_size"], accum, out.nproc),
        flops,
        _memory(out, slug, model, params["device_batch_size"], "the SFT model"),
        note=note,
    )
    out.lines.append(_timed(out, line))


def _rl(book: Book, out: PresetPlan, slug: str, params: dict[str, Any]) -> None:
    cfg = RLConfig.from_params(params, out_dir="", tokenizer_dir="", init_dir="")
    try:
        rows = rollouts_per_rank(cfg, out.nproc)
    except TrainingError as e:
        out.findings.append(Finding("error", slug, "device_batch_size", str(e)))
        return
    base = _base_recipe(book, out.preset)
    model = _base_model(book, out.preset, base)
    steps = cfg.num_steps
    # Sampled tokens per step (an upper bound: every answer runs to max_new_tokens); each is
    # generated (a forward, 1/3 of a training step) and then trained on.
    tokens = steps * cfg.problems_per_step * cfg.num_samples * cfg.max_new_tokens if steps else None
    note = "" if steps else f"{cfg.num_epochs:g} epoch(s) of {cfg.task}: steps set by its size"
    line = Line(
        slug,
        f"RL on {cfg.task}",
        model,
        None,
        tokens,
        steps,
        (cfg.device_batch_size, rows // cfg.device_batch_size, out.nproc),
        tokens * flops_per_token(model) * 4 / 3 if tokens else None,
        _memory(out, slug, model, cfg.device_batch_size, "the RL model"),
        note=note,
    )
    out.lines.append(_timed(out, line))


PLANNERS = {
    "tokenizer": _tokenizer,
    "checkpoint": _pretraining,
    "sweep": _scaling,
    "core": _core,
    "sft": _sft,
    "rl": _rl,
}


# ---- helpers ----------------------------------------------------------------------------------


def sweep_accum(base: TrainConfig, nproc: int) -> int:
    """Gradient-accumulation steps of every sweep and family run (they share the batch)."""
    return micro_steps(base.batch_tokens, base.device_batch_size, base.seq_len, nproc)


def _base_recipe(book: Book, preset: str) -> TrainConfig:
    params = book.resolve(book.producer_of("checkpoint").slug, preset)
    return TrainConfig.from_params(params, out_dir="", tokenizer_dir="")


def _base_model(book: Book, preset: str, base: TrainConfig) -> GPTConfig:
    one_row = replace(base, num_steps=1, batch_tokens=base.seq_len, device_batch_size=1)
    return plan(one_row, vocab_size_for(book, preset), 1).model


def _eval_count(steps: int, every: int) -> int:
    return 2 + ((steps - 1) // every if every else 0)


def _timed(out: PresetPlan, line: Line) -> Line:
    """The line with its hours and dollars at the preset's assumed FLOP/s and price."""
    if line.flops is None:
        return line
    hours = (line.flops + line.eval_flops) / (out.nproc * out.cost.flops_per_s) / 3600
    return replace(line, hours=hours, dollars=hours * out.nproc * out.cost.dollars_per_hour)


def _memory(out: PresetPlan, slug: str, model: GPTConfig, rows: int, what: str) -> int:
    """Estimated bytes per device; an error finding (with a batch that fits) when over."""
    dtype = torch.bfloat16 if torch_kind(out.device) == "cuda" else torch.float32
    need = lambda b: estimate_memory(model, b, dtype)  # noqa: E731
    gpu = out.cost.memory_gib is not None
    capacity = int(out.cost.memory_gib * 2**30) if gpu else available_memory("cpu")
    ranks = 1 if gpu else out.nproc
    try:
        return check_memory(need, rows, out.cost.name, ranks, what=what, capacity=capacity)
    except InsufficientMemoryError as e:
        out.findings.append(Finding("error", slug, "device_batch_size", str(e)))
        return need(rows)


def _check_upstream(book: Book, out: PresetPlan, slug: str, planned: list[str]) -> None:
    """A note for each artifact the chapter loads that neither runs/ nor this plan will hold."""
    needs = _ARTIFACT_CALL.findall(book.chapter(slug).file.read_text())
    for name in dict.fromkeys(needs):
        try:
            producer = book.producer_of(name).slug
        except BookConfigError:
            continue
        if producer in planned:
            continue
        run = run_dir_for(producer, out.preset)
        made = (run / name).exists() and _status(run / MANIFEST) == "ok"
        if not made:  # (not hashed here: a GPU checkpoint takes long to read)
            fix = make_command(name, out.preset, book=book)
            out.findings.append(
                Finding("note", slug, "", f"needs artifact {name!r}, not made yet: {fix}")
            )


def _status(manifest: Path) -> str | None:
    try:
        return read_json(manifest).get("status")
    except (OSError, ValueError):
        return None


def _check_shards(book: Book, out: PresetPlan, slugs: list[str]) -> None:
    """A warning naming the shards to download when a download source lacks them on disk."""
    wanted: dict[str, tuple[int, str]] = {}
    for slug in slugs:
        params = book.resolve(slug, out.preset)
        source = params.get("data")
        if source is None:
            continue
        src = get_source(source)
        if src.shipped or not src.chars_per_shard:
            continue
        chars = params.get("max_chars") or 0
        chars = max(
            [chars] + [(ln.tokens or 0) * CHARS_PER_TOKEN for ln in out.lines if ln.chapter == slug]
        )
        need = min(math.ceil(chars / src.chars_per_shard), len(src.indices("train")))
        if need > wanted.get(source, (0, ""))[0]:
            wanted[source] = (need, slug)
    for source, (need, slug) in wanted.items():
        src = get_source(source)
        train = src.indices("train")[:need] + src.indices("val")
        have = sum((src.directory() / src.shard_name(i)).is_file() for i in train)
        missing = len(train) - have
        if missing:
            out.findings.append(
                Finding(
                    "warning",
                    slug,
                    "data",
                    f"{source}: {need} train shard(s) + 1 val needed, {have} on disk in "
                    f"{src.directory()}; to download: {missing} shard(s) (fetched on demand by the "
                    f'chapters, or ahead: `python -c "from nanolib.data import download_shards; '
                    f"download_shards('{source}', [*range({need}), {src.indices('val')[0]}])\"`)",
                )
            )


# ---- the printed plan -------------------------------------------------------------------------

COLUMNS = (
    "run",
    "shape",
    "N",
    "tokens",
    "steps",
    "batch",
    "train FLOPs",
    "GiB/dev",
    "time",
    "cost",
)


def _si(x: float | None, unit: str = "") -> str:
    if x is None:
        return "—"
    for scale, suffix in ((1e12, "T"), (1e9, "B"), (1e6, "M"), (1e3, "k")):
        if abs(x) >= scale:
            return f"{x / scale:.3g} {suffix}{unit}".rstrip()
    return f"{x:.3g}{unit}"


def duration(hours: float | None) -> str:
    """Hours as seconds, minutes, hours or days, whichever reads best."""
    if hours is None:
        return "—"
    s = hours * 3600
    if s < 90:
        return f"{s:.0f} s"
    if s < 5400:
        return f"{s / 60:.0f} min"
    return f"{hours:.1f} h" if hours < 48 else f"{hours / 24:.1f} days"


def _row(ln: Line, priced: bool) -> tuple[str, ...]:
    m = ln.model
    shape = f"d{m.n_layer} · {m.d_model}×{m.n_head}h" if m else "—"
    batch = " × ".join(map(str, ln.layout)) if ln.layout else "—"
    cost = f"${ln.dollars:,.0f}" if priced and ln.dollars is not None else "—"
    return (
        f"{ln.chapter[:2]} {ln.run}",
        shape,
        _si(ln.params),
        _si(ln.tokens),
        f"{ln.steps:,}" if ln.steps else "—",
        batch,
        f"{ln.flops:.2e}" if ln.flops else "—",
        f"{ln.memory / 2**30:.1f}" if ln.memory else "—",
        duration(ln.hours),
        cost,
    )


def format_plan(p: PresetPlan) -> str:
    """The plan as a text table, its totals, and its findings, one line each."""
    c = p.cost
    priced = c.dollars_per_hour > 0
    if c.mfu is not None:
        at = f"{c.name} at {c.mfu:.0%} MFU ({c.flops_per_s:.3g} FLOP/s), ${c.dollars_per_hour:g}/h"
    else:
        at = f"{c.name} at an assumed {c.flops_per_s:.3g} FLOP/s (time only)"
    head = [f"plan of preset {p.preset!r}: {p.nproc} × {at}  [book.yml cost: {c.kind}]"]
    rows = [COLUMNS, *(_row(ln, priced) for ln in p.lines)]
    widths = [max(len(r[i]) for r in rows) for i in range(len(COLUMNS))]
    table = [
        "  ".join(v.ljust(w) if i == 0 else v.rjust(w) for i, (v, w) in enumerate(zip(r, widths)))
        for r in rows
    ]
    t = p.totals()
    total = f"total: {t['flops']:.3g} FLOPs, {duration(t['hours'])} on {p.nproc} device(s)" + (
        f", {t['device_hours']:,.1f} GPU-hours, ${t['dollars']:,.0f}" if priced else ""
    )
    said = dict.fromkeys((ln.chapter[:2], ln.run.split()[0], ln.note) for ln in p.lines if ln.note)
    notes = [f"  {number} {run}: {note}" for number, run, note in said]
    return "\n".join(
        [*head, *table, total, *(["notes:", *notes] if notes else []), *map(str, p.findings)]
    )
