"""The isoFLOP sweep and the miniseries: plan them, train them, resume them, keep their tables.

The sweep CSV (`read_sweep`, `append_sweep_row`) has one row per finished run, columns
`SWEEP_COLUMNS`: the nominal `budget` (FLOPs), `depth`, N under each counting convention of
`nanolib.model.scaling_params` (`n_params_all`, `n_params_non_embedding`, `n_params_matmul`),
`tokens` trained, `flops` actually spent, `val_bpb` and `wall_s`.

`plan_isoflop` turns budgets × depths into runs (steps, tokens and FLOPs with FLOPs =
`nanolib.model.flops_per_token` × tokens, and an estimated time from measured FLOP/s —
`measure_flops_per_s` — that a preset's time budget may refuse); `run_sweep` trains them through
`nanolib.train.launch`, appending a row only when a run has finished, so a killed sweep
continues where it stopped. `plan_family` and `run_family` plan and train one model per depth at
a tokens-per-parameter ratio (the miniseries); `fitted_family_ratio` is the ratio an Approach 2
fit prescribes for a depth at the compute that depth then spends. The fits themselves live in
`nanolib.scaling`.
"""

from __future__ import annotations

import csv
import math
import os
import warnings
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from contextlib import contextmanager, redirect_stdout
from dataclasses import asdict, replace
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from nanolib.checkpoint import META, read_metrics
from nanolib.config import Book
from nanolib.files import atomic_write_json, atomic_write_text, read_json, sha256_file
from nanolib.model import CONVENTIONS, GPTConfig, scaling_params
from nanolib.parallel import LOG, log_tail, train_side_by_side
from nanolib.runs import make_command
from nanolib.scaling import Dial, IsoFlopFit, ScalingWarning
from nanolib.throughput import measure
from nanolib.tokenizer import RANKS_FILE, Tokenizer
from nanolib.train import NOT_TRAJECTORY, TrainConfig, launch, plan, recipe_for

# Column -> type of one row of the isoFLOP sweep; every value must be positive (wall_s may be 0).
SWEEP_COLUMNS: dict[str, type] = {
    "budget": float,
    "depth": int,
    "n_params_all": int,
    "n_params_non_embedding": int,
    "n_params_matmul": int,
    "tokens": int,
    "flops": float,
    "val_bpb": float,
    "wall_s": float,
}


class SweepFormatError(ValueError):
    """A sweep CSV (or a row for it) that does not have the expected columns or values."""


# ---------------------------------------------------------------------------------------------
# The sweep CSV
# ---------------------------------------------------------------------------------------------


def _check_value(column: str, raw: object, where: str) -> int | float:
    """One sweep value parsed to its column's type; a SweepFormatError naming `where` if bad."""
    kind = SWEEP_COLUMNS[column]
    try:
        value = float(raw)  # type: ignore[arg-type]
    except (TypeError, ValueError):
        raise SweepFormatError(
            f"{where}: column {column!r} is {raw!r}, which is not a number"
        ) from None
    if not math.isfinite(value):
        raise SweepFormatError(f"{where}: column {column!r} is {raw!r}; it must be finite")
    if kind is int:
        if value != int(value):
            raise SweepFormatError(f"{where}: column {column!r} is {raw!r}; it must be an integer")
        value = int(value)
    floor_ok = value >= 0 if column == "wall_s" else value > 0
    if not floor_ok:
        sign = "non-negative" if column == "wall_s" else "positive"
        raise SweepFormatError(f"{where}: column {column!r} is {raw!r}; it must be {sign}")
    return value


def _format_row(row: Mapping[str, object], where: str) -> str:
    """A validated row as one CSV line (with its newline), columns in SWEEP_COLUMNS order."""
    missing = [c for c in SWEEP_COLUMNS if c not in row]
    extra = [c for c in row if c not in SWEEP_COLUMNS]
    if missing or extra:
        raise SweepFormatError(
            f"{where}: the row has missing columns {missing} and unknown columns {extra}; "
            f"a sweep row has exactly {list(SWEEP_COLUMNS)}"
        )
    values = [_check_value(c, row[c], where) for c in SWEEP_COLUMNS]
    return ",".join(str(v) if isinstance(v, int) else repr(v) for v in values) + "\n"


def append_sweep_row(path: str | Path, row: Mapping[str, object]) -> None:
    """Append one run's row to a sweep CSV (header on first use), written and fsynced whole."""
    path = Path(path)
    line = _format_row(row, f"row for {path}")
    header = ",".join(SWEEP_COLUMNS) + "\n"
    if not path.exists() or path.stat().st_size == 0:
        atomic_write_text(path, header)
    with path.open("rb+") as f:
        first = f.readline().decode("utf-8", "replace")
        if first != header:
            raise SweepFormatError(
                f"{path}: header is {first.strip()!r}, expected {header.strip()!r}; "
                "move the file aside and rerun the sweep to start a new one"
            )
        f.seek(0, os.SEEK_END)
        end = f.tell()
        f.seek(end - 1)
        if f.read(1) != b"\n":  # a killed writer left half a line: drop it before appending
            f.seek(0)
            keep = f.read().rfind(b"\n") + 1
            f.truncate(keep)
            f.flush()
            os.fsync(f.fileno())
            warnings.warn(
                f"{path}: dropped a truncated last line (a run killed mid-write)",
                ScalingWarning,
                stacklevel=2,
            )
    fd = os.open(path, os.O_WRONLY | os.O_APPEND)
    try:
        os.write(fd, line.encode())
        os.fsync(fd)
    finally:
        os.close(fd)


def read_sweep(path: str | Path) -> pd.DataFrame:
    """The sweep CSV, validated: a bad row names file and line; a cut-off last line is dropped."""
    path = Path(path)
    if not path.exists():
        raise FileNotFoundError(f"{path}: no sweep CSV here; the isoFLOP sweep runner writes it")
    text = path.read_text(encoding="utf-8")
    lines = text.splitlines(keepends=True)
    if lines and not lines[-1].endswith("\n"):
        warnings.warn(
            f"{path}:{len(lines)}: dropped a truncated last line (a run killed mid-write): "
            f"{lines[-1]!r}",
            ScalingWarning,
            stacklevel=2,
        )
        lines = lines[:-1]
    if not lines:
        raise SweepFormatError(f"{path}: empty file; expected the header {list(SWEEP_COLUMNS)}")
    records = list(csv.reader(lines))
    header = records[0]
    if header != list(SWEEP_COLUMNS):
        raise SweepFormatError(f"{path}:1: header is {header}, expected {list(SWEEP_COLUMNS)}")
    rows = []
    for lineno, fields in enumerate(records[1:], start=2):
        where = f"{path}:{lineno}"
        if len(fields) != len(header):
            raise SweepFormatError(
                f"{where}: {len(fields)} fields, expected {len(header)} ({','.join(header)})"
            )
        rows.append([_check_value(c, v, where) for c, v in zip(header, fields)])
    frame = pd.DataFrame(rows, columns=header)
    return frame.astype({c: ("int64" if t is int else "float64") for c, t in SWEEP_COLUMNS.items()})


# ---------------------------------------------------------------------------------------------
# The isoFLOP sweep: plan it, run it, resume it
# ---------------------------------------------------------------------------------------------

SWEEP_CSV = "sweep.csv"  # one row per finished run, inside the sweep's directory
SWEEP_CONFIG = "sweep.json"  # the base configuration the rows were trained with
# Fields of TrainConfig that the plan sets per run (or that do not change the trajectory):
# they may differ between the base config of a sweep and the one it is resumed with.
PER_RUN_FIELDS = {"depth", "target_flops", "num_steps", "tokens_per_param"}


class SweepPlanError(ValueError):
    """An isoFLOP plan that cannot run as asked; the message says what to change."""


def run_name(budget: float, depth: int) -> str:
    """The folder of one sweep run inside the sweep directory, e.g. `b1.00e+12_d03`."""
    return f"b{budget:.2e}_d{depth:02d}"


def _eval_count(num_steps: int, eval_every: int) -> int:
    """How many times train() evaluates a run: at step 0, every eval_every steps, at the end."""
    between = (num_steps - 1) // eval_every if eval_every else 0
    return 2 + between


def depths_per_budget(
    budgets: Sequence[float], depths: Iterable[int] | Iterable[Iterable[int]]
) -> list[list[int]]:
    """The sorted depths of each budget, from one list for all or one list per budget."""
    depths = list(depths)
    if depths and all(isinstance(d, Iterable) for d in depths):
        if len(depths) != len(budgets):
            raise SweepPlanError(
                f"{len(depths)} depth lists for {len(budgets)} budgets: give one list per budget, "
                "or one list for all"
            )
        return [sorted(int(d) for d in ds) for ds in depths]
    return [sorted(int(d) for d in depths)] * len(budgets)


def plan_isoflop(
    base: TrainConfig,
    budgets: Iterable[float],
    depths: Iterable[int] | Iterable[Iterable[int]],
    vocab_size: int,
    nproc: int = 1,
    *,
    flops_per_s: float | Mapping[int, float] | None = None,
    time_budget_s: float | None = None,
) -> pd.DataFrame:
    """The runs of an isoFLOP sweep: for every budget × depth, the model, steps, tokens, FLOPs.

    `depths` is one list for every budget, or one list per budget (in the order of `budgets`),
    so that each budget can sample the sizes around its own optimum. Each run is `base` with
    that depth and `target_flops` = budget, planned by `nanolib.train.plan`: steps =
    round(budget / (flops_per_token × batch_tokens)), tokens = steps × batch_tokens, FLOPs =
    flops_per_token × tokens, where flops_per_token is `nanolib.model.flops_per_token`
    (6·N_matmul plus the attention term; forward + backward). So a run's FLOPs miss its budget
    only by the rounding to whole steps. With `flops_per_s` (achieved FLOP/s, one number or one
    per depth) each run gets an estimated time `est_s` that includes its evaluations; a plan whose
    total exceeds `time_budget_s`, or a run that would end inside its LR warmup, raises
    SweepPlanError. Rows are sorted by budget, then depth.
    """
    budgets = [float(b) for b in budgets]
    per_budget = depths_per_budget(budgets, depths)
    if not budgets or not all(per_budget):
        raise SweepPlanError(f"an isoFLOP sweep needs budgets and depths; got {budgets} × {depths}")
    for name, values in (("budget", budgets), *(("depth", ds) for ds in per_budget)):
        if len(set(values)) != len(values) or min(values) <= 0:
            raise SweepPlanError(f"{name}s must be positive and distinct; got {values}")
    pairs = sorted((b, d) for b, ds in zip(budgets, per_budget) for d in ds)
    rows = []
    for budget, depth in pairs:
        cfg = replace(base, depth=depth, target_flops=budget, num_steps=None)
        row = {"budget": budget, **_plan_row(cfg, vocab_size, nproc)}
        if row["num_steps"] <= cfg.warmup_steps:
            raise SweepPlanError(
                f"budget {budget:.3g} at depth {depth} buys {row['num_steps']} step(s) of "
                f"{cfg.batch_tokens:,} tokens, which ends inside the {cfg.warmup_steps}-step LR "
                "warmup: raise the budget, drop the depth, or lower batch_tokens or warmup_steps"
            )
        rows.append(row)
    table = pd.DataFrame(rows)
    if flops_per_s is None:
        return table
    total = _estimate_time(table, flops_per_s)
    if time_budget_s is not None and total > time_budget_s:
        per_budget = table.groupby("budget")["est_s"].sum()
        per_depth = table.groupby("depth")["est_s"].sum()
        raise SweepPlanError(
            f"the sweep needs ≈ {total:,.0f} s ({len(table)} runs, "
            f"{table['flops'].sum():.3g} FLOPs at the measured FLOP/s), over this preset's time "
            f"budget of {time_budget_s:,.0f} s. The largest budget, {per_budget.index[-1]:.3g}, "
            f"takes ≈ {per_budget.iloc[-1]:,.0f} s and the deepest depth, {per_depth.index[-1]}, "
            f"≈ {per_depth.iloc[-1]:,.0f} s: drop one of them or lower the budgets (or use a "
            "preset with a faster device)"
        )
    return table


def plan_family(
    base: TrainConfig,
    depths: Iterable[int],
    tokens_per_param: float | Callable[[int], float],
    vocab_size: int,
    nproc: int = 1,
    *,
    flops_per_s: float | Mapping[int, float] | None = None,
    time_budget_s: float | None = None,
) -> pd.DataFrame:
    """The models `run_family` would train: per depth, the model, steps, tokens and FLOPs.

    The same columns as `plan_isoflop` without `budget`: each model is `base` at that depth
    trained for tokens_per_param × N_matmul tokens (`tokens_per_param` may be a function of the
    depth). With `flops_per_s`, `est_s` per model; a family whose total exceeds `time_budget_s`
    raises SweepPlanError.
    """
    members = _family_members(base, depths, tokens_per_param)
    table = pd.DataFrame([_plan_row(cfg, vocab_size, nproc) for cfg in members])
    if flops_per_s is None:
        return table
    total = _estimate_time(table, flops_per_s)
    if time_budget_s is not None and total > time_budget_s:
        raise SweepPlanError(
            f"the family needs ≈ {total:,.0f} s ({len(table)} models, "
            f"{table['flops'].sum():.3g} FLOPs at the measured FLOP/s), over this preset's time "
            f"budget of {time_budget_s:,.0f} s; its deepest model, depth {table['depth'].iloc[-1]}"
            f", takes ≈ {table['est_s'].iloc[-1]:,.0f} s: drop a depth or train at fewer tokens "
            "per parameter"
        )
    return table


# The fields a sweep chapter sizes for its short runs (the rest is the pretraining recipe).
SWEEP_FIELDS = (
    "aspect_ratio",
    "head_dim",
    "batch_tokens",
    "device_batch_size",
    "warmup_steps",
    "eval_tokens",
    "checkpoint_every",
    "seed",
)


def sweep_base(book: Book, preset: str, params: Mapping[str, Any], **overrides: Any) -> TrainConfig:
    """The preset's pretraining recipe, resized by `params` (SWEEP_FIELDS), evaluated at the ends.

    Every run of a sweep or family is this config at its own depth and horizon; `overrides`
    set any other field (tokenizer_dir, device …).
    """
    sized = {k: params[k] for k in SWEEP_FIELDS if k in params}
    return recipe_for(book, preset, **sized, eval_every=0, num_samples=0, **overrides)


def fitted_family_ratio(
    fit: IsoFlopFit, dial: Dial, depth: int, start_flops: float, iterations: int = 20
) -> float:
    """Approach 2's tokens per parameter for a depth, at the compute that depth spends at it.

    The ratio drifts (weakly) with compute C, and a model's C depends on its ratio: starting
    from the ratio at `start_flops`, C and the ratio are solved together by fixed-point
    iteration, with N and FLOPs per token of the depth from `dial` (N counted as `matmul`
    parameters, so the fit must count N that way too).
    """
    row = dial.table.set_index("depth").loc[depth]
    ratio = fit.tokens_per_param(start_flops)
    for _ in range(iterations):
        ratio = fit.tokens_per_param(row.flops_per_token * ratio * row.matmul)
    if not np.isfinite(ratio):
        raise ValueError(
            "the sweep's fit gives no tokens-per-parameter ratio (see its ScalingWarnings); "
            "train the family at a fixed ratio instead"
        )
    return float(ratio)


def measure_flops_per_s(
    cfg: TrainConfig, vocab_size: int, device: str, nproc: int = 1, steps: int = 5
) -> float:
    """Achieved training FLOP/s of a config's model: one micro-batch per step, timed × nproc."""
    one_batch = replace(cfg, batch_tokens=cfg.device_batch_size * cfg.seq_len)
    p = plan(one_batch, vocab_size)
    measured = measure(p.model, cfg.device_batch_size, device, steps=steps)
    return measured["tokens_per_s"] * p.flops_per_token * nproc


def _family_members(
    base: TrainConfig, depths: Iterable[int], tokens_per_param: float | Callable[[int], float]
) -> list[TrainConfig]:
    """`base` at each depth (ascending), trained for tokens_per_param(depth) × N_matmul tokens."""
    return [
        replace(
            base,
            depth=depth,
            tokens_per_param=float(
                tokens_per_param(depth) if callable(tokens_per_param) else tokens_per_param
            ),
            num_steps=None,
            target_flops=None,
        )
        for depth in sorted(int(d) for d in depths)
    ]


def _plan_row(cfg: TrainConfig, vocab_size: int, nproc: int) -> dict:
    """One planned run: its model, N in each convention, steps, tokens, FLOPs, eval FLOPs."""
    p = plan(cfg, vocab_size, nproc)
    return {
        "depth": cfg.depth,
        "d_model": p.model.d_model,
        "n_head": p.model.n_head,
        **{f"n_params_{c}": scaling_params(p.model, c) for c in CONVENTIONS},
        "flops_per_token": p.flops_per_token,
        "num_steps": p.num_steps,
        "tokens": p.tokens,
        "flops": p.flops,
        "tokens_per_param": p.tokens_per_param,
        "eval_flops": _eval_count(p.num_steps, cfg.eval_every)
        * cfg.eval_tokens
        * p.flops_per_token
        / 3,  # a forward pass is about a third of a training step's FLOPs
    }


def _estimate_time(table: pd.DataFrame, flops_per_s: float | Mapping[int, float]) -> float:
    """Add `est_s` (training + evaluation at the achieved FLOP/s) to a plan; return the total."""
    rate = table["depth"].map(lambda d: _rate_for(flops_per_s, d))
    table["est_s"] = (table["flops"] + table["eval_flops"]) / rate
    return float(table["est_s"].sum())


def _rate_for(flops_per_s: float | Mapping[int, float], depth: int) -> float:
    """The achieved FLOP/s assumed for a depth."""
    if not isinstance(flops_per_s, Mapping):
        return float(flops_per_s)
    if depth not in flops_per_s:
        raise SweepPlanError(
            f"no measured FLOP/s for depth {depth}; measured: {sorted(flops_per_s)}"
        )
    return float(flops_per_s[depth])


def _sweep_config(base: TrainConfig) -> dict:
    """What every row of a sweep must share: the base config's trajectory fields, the tokenizer."""
    skip = NOT_TRAJECTORY | PER_RUN_FIELDS
    config = {k: v for k, v in asdict(base).items() if k not in skip}
    ranks = Path(base.tokenizer_dir) / RANKS_FILE
    config["tokenizer_sha256"] = sha256_file(ranks) if ranks.exists() else None
    return config


def _check_sweep_config(sweep_dir: Path, base: TrainConfig) -> None:
    """Record the sweep's base config on first use; refuse to mix rows of two configs."""
    path = sweep_dir / SWEEP_CONFIG
    mine = _sweep_config(base)
    if not path.exists():
        atomic_write_json(path, mine)
        return
    old = read_json(path)
    changes = [
        f"{k}: {old.get(k)!r} → {mine.get(k)!r}"
        for k in sorted(set(old) | set(mine))
        if old.get(k) != mine.get(k)
    ]
    if changes:
        raise SweepFormatError(
            f"{sweep_dir} holds a sweep trained with another configuration ({'; '.join(changes)});"
            f" its rows would not compare with new ones: move {sweep_dir} aside to start afresh, "
            "or restore the configuration to continue it"
        )


@contextmanager
def _logged_to(log_path: Path) -> Iterator[None]:
    """Inside: what is printed goes to `log_path` (the sweep shows one bar over its runs)."""
    log_path.parent.mkdir(parents=True, exist_ok=True)
    with open(log_path, "a") as log, redirect_stdout(log):
        yield


def _is_done(done: pd.DataFrame, budget: float, depth: int) -> bool:
    """Whether the sweep CSV already has the row of (budget, depth)."""
    same = np.isclose(done["budget"].to_numpy(float), budget, rtol=1e-9, atol=0)
    return bool((same & (done["depth"].to_numpy() == depth)).any())


def run_sweep(
    planned: pd.DataFrame,
    base: TrainConfig,
    sweep_dir: str | Path,
    nproc: int = 1,
    *,
    workers: int = 1,
    keep_optimizer: bool = False,
) -> pd.DataFrame:
    """Train every planned (budget, depth) not yet in `<sweep_dir>/sweep.csv`; return the CSV.

    Each run is `base` with its depth and target_flops, trained by `nanolib.train.launch` (in
    this process, or torchrun when nproc > 1) into `<sweep_dir>/<run_name>/`, its log in
    `train.log` there; with `workers` > 1 that many runs train side by side in worker processes
    (`nanolib.parallel`; `side_by_side` says how many fit), the longest planned first. A row is
    appended (and fsynced) only after its run finished, so after a kill the rows present are
    skipped, a run killed mid-way resumes from its last checkpoint, and a run that finished but
    had no row yet is reported from its checkpoint, not retrained. The optimizer state of a
    finished run is deleted unless `keep_optimizer`; its weights stay.
    """
    from tqdm.auto import tqdm

    sweep_dir = Path(sweep_dir)
    sweep_dir.mkdir(parents=True, exist_ok=True)
    _check_sweep_config(sweep_dir, base)
    csv_path = sweep_dir / SWEEP_CSV
    done = read_sweep(csv_path) if csv_path.exists() else pd.DataFrame(columns=["budget", "depth"])
    todo = [r for r in planned.itertuples() if not _is_done(done, float(r.budget), int(r.depth))]
    if workers > 1:  # the longest runs first, so that no worker is left with one at the end
        todo.sort(key=lambda r: -getattr(r, "est_s", r.num_steps))
    configs = [
        replace(
            base,
            depth=int(r.depth),
            target_flops=float(r.budget),
            num_steps=None,
            out_dir=str(sweep_dir / run_name(float(r.budget), int(r.depth))),
        )
        for r in todo
    ]
    bar = tqdm(
        total=len(planned), initial=len(planned) - len(todo), desc="isoFLOP sweep", unit="run"
    )
    if len(todo) < len(planned):
        bar.write(f"{len(planned) - len(todo)} of {len(planned)} runs already in {csv_path}")
    if workers > 1 and len(todo) > 1:
        bar.write(f"{min(workers, len(todo))} runs side by side")

    def record(i: int, summary: dict[str, Any]) -> None:
        cfg, out = configs[i], Path(configs[i].out_dir)
        model = GPTConfig(**read_json(out / META)["model"])
        counts = {f"n_params_{c}": scaling_params(model, c) for c in CONVENTIONS}
        row = {
            "budget": cfg.target_flops,
            "depth": cfg.depth,
            **counts,
            "tokens": summary["tokens"],
            "flops": summary["flops"],
            "val_bpb": summary["val_bpb"],
            "wall_s": round(summary["wall_s"], 3),
        }
        append_sweep_row(csv_path, row)
        if not keep_optimizer:
            for f in out.glob("optim_*.pt"):
                f.unlink()
        bar.write(
            f"budget {cfg.target_flops:.3g}, depth {cfg.depth}: N_matmul "
            f"{counts['n_params_matmul']:,}, {summary['tokens']:,} tokens → val "
            f"{summary['val_bpb']:.4f} bpb ({summary['wall_s']:.0f} s)"
        )
        if workers == 1:
            bar.update(1)

    try:
        _train_all(configs, nproc, workers, record, [int(r.num_steps) for r in todo], bar)
    finally:
        bar.close()
    return read_sweep(csv_path)


def _train_all(
    configs: list[TrainConfig],
    nproc: int,
    workers: int,
    record: Callable[[int, dict[str, Any]], None],
    steps: list[int],
    bar: Any,
) -> None:
    """Train each config, one after another here or side by side in workers; record each."""
    if workers > 1 and len(configs) > 1:
        if nproc > 1:
            raise ValueError("runs of several processes (nproc > 1) train one at a time")
        train_side_by_side(configs, workers, record, steps=steps, bar=bar)
        return
    for i, cfg in enumerate(configs):
        out = Path(cfg.out_dir)
        try:
            with _logged_to(out / LOG):
                summary = launch(cfg, nproc, progress=False)
        except BaseException:
            bar.write("\n".join([f"run {out.name} failed; the end of its log:", *log_tail(out)]))
            raise
        record(i, summary)


MODELS_CSV = "models.csv"  # the family's table, inside its directory
FAMILY_TOKENIZER = "tokenizer"  # the family's tokenizer, copied beside its models


def family_tokenizer(family_dir: str | Path) -> Tokenizer:
    """The tokenizer a family trained with, kept by `run_family` beside its models."""
    path = Path(family_dir) / FAMILY_TOKENIZER
    if not (path / RANKS_FILE).exists():
        raise FileNotFoundError(
            f"{family_dir} holds no {FAMILY_TOKENIZER}/ (a miniseries made before the family kept "
            f"its tokenizer); rebuild it with {make_command('miniseries', None, '--force')}"
        )
    return Tokenizer.load(path)


def run_family(
    base: TrainConfig,
    depths: Iterable[int],
    tokens_per_param: float | Callable[[int], float],
    family_dir: str | Path,
    nproc: int = 1,
    *,
    workers: int = 1,
) -> pd.DataFrame:
    """Train one model per depth for tokens_per_param × N_matmul tokens; write models.csv.

    Each model is `base` at that depth (`tokens_per_param` may be a function of the depth),
    trained by `nanolib.train.launch` into `<family_dir>/d<depth>/` — a checkpoint directory
    that `nanolib.checkpoint.load_model` reads. `models.csv` gets one row per finished model:
    depth, N in each counting convention, tokens, FLOPs, tokens_per_param, val_bpb, wall_s and
    `checkpoint` (the model's folder, relative to `family_dir`). It is rewritten after every
    model, and a model already trained is reported from its checkpoint, so a killed run resumes.
    With `workers` > 1 the models train side by side in worker processes, the longest first.
    The tokenizer the family trains with is copied to `<family_dir>/tokenizer/`, so the family
    is one self-contained artifact (its models are scored with it).
    """
    family_dir = Path(family_dir)
    copied = family_dir / FAMILY_TOKENIZER
    if not (copied / RANKS_FILE).exists() or sha256_file(copied / RANKS_FILE) != sha256_file(
        Path(base.tokenizer_dir) / RANKS_FILE
    ):
        Tokenizer.load(base.tokenizer_dir).save(copied)
    base = replace(base, tokenizer_dir=str(copied))
    members = _family_members(base, depths, tokens_per_param)
    configs = [replace(m, out_dir=str(family_dir / f"d{m.depth:02d}")) for m in members]
    vocab_size = Tokenizer.load(copied).vocab_size
    steps = [plan(cfg, vocab_size, nproc).num_steps for cfg in configs]
    order = sorted(range(len(configs)), key=lambda i: -steps[i] if workers > 1 else i)
    rows: dict[int, dict] = {}

    def record(i: int, summary: dict[str, Any]) -> None:
        cfg = configs[order[i]]
        model = GPTConfig(**read_json(Path(cfg.out_dir) / META)["model"])
        rows[cfg.depth] = {
            "depth": cfg.depth,
            **{f"n_params_{c}": scaling_params(model, c) for c in CONVENTIONS},
            "tokens": summary["tokens"],
            "flops": summary["flops"],
            "tokens_per_param": summary["tokens_per_param"],
            "val_bpb": summary["val_bpb"],
            "wall_s": round(summary["wall_s"], 3),
            "checkpoint": Path(cfg.out_dir).name,
        }
        table = pd.DataFrame([rows[d] for d in sorted(rows)])
        atomic_write_text(family_dir / MODELS_CSV, table.to_csv(index=False))

    if workers > 1 and len(configs) > 1:
        from tqdm.auto import tqdm

        with tqdm(total=len(configs), desc="miniseries", unit="model") as bar:
            _train_all(
                [configs[i] for i in order], nproc, workers, record, [steps[i] for i in order], bar
            )
    else:  # one after another, each with its own progress bar (as chapter 3 shows it)
        for k, i in enumerate(order):
            record(k, launch(configs[i], nproc))
    return pd.DataFrame([rows[d] for d in sorted(rows)])


def family_histories(family_dir: str | Path, models: pd.DataFrame) -> dict[int, pd.DataFrame]:
    """Each family member's metrics.jsonl as a frame, by depth (`models`: its models.csv)."""
    family_dir = Path(family_dir)
    return {
        int(r.depth): pd.DataFrame(read_metrics(family_dir / r.checkpoint))
        for r in models.itertuples()
    }


def curve_crossings(curves: Mapping[int, pd.DataFrame], past: float = 0.2) -> pd.DataFrame:
    """Does a bigger model's val curve ever dip below its smaller neighbour's at equal compute?

    `curves` maps depth → rows with `flops` and `val_bpb`. For each pair of neighbours, over
    the smaller model's points past `past` of its compute that the bigger one also reached, the
    gap is the bigger model's bpb (interpolated in log FLOPs) minus the smaller one's; the
    curves cross where it is negative. One row per pair: points compared, smallest gap, cross.
    """
    rows = {}
    depths = sorted(curves)
    for small, large in zip(depths[:-1], depths[1:]):
        vs, vl = curves[small], curves[large]
        shared = vs[(vs.flops >= past * vs.flops.max()) & (vs.flops >= vl.flops.min())]
        at_large = np.interp(np.log(shared.flops), np.log(vl.flops), vl.val_bpb)
        gap = at_large - shared.val_bpb.to_numpy()
        rows[f"d{large} − d{small}"] = {
            "points compared": len(gap),
            "smallest gap (bpb)": gap.min() if len(gap) else math.nan,
            "cross": bool((gap < 0).any()),
        }
    return pd.DataFrame(rows).T
