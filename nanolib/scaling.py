"""Scaling laws: the isoFLOP sweep's CSV, Chinchilla's Approaches 2 and 3, and a depth per budget.

Two ways to turn a set of training runs into "how big a model for this much compute":

- **Approach 2** (`fit_isoflop`): for each compute budget C, fit a parabola to loss against
  log N through that budget's runs; its vertex is N_opt(C). Then power laws N_opt ∝ C^a and
  D_opt ∝ C^b by least squares in log-log. A budget whose parabola cannot be trusted (fewer than
  three points, opening downward, vertex outside the sampled N, lowest loss at an end of the
  sampled N) is flagged with its reason and left out of the power laws, with a `ScalingWarning`.
- **Approach 3** (`fit_approach3`): fit L(N, D) = E + A/N^α + B/D^β to every run at once, the way
  Hoffmann et al. (2022) did and Besiroglu et al. (2024, Epoch AI) replicated: minimise
  Σ Huber_δ(LSE(a − α·log N, b − β·log D, e) − log L) with A = e^a, B = e^b, E = e^e, by L-BFGS
  from each of 4500 grid starts, and keep the best. Minimising C = 6ND gives the closed form
  N_opt = G·(C/6)^a, D_opt = (C/6)^b / G with a = β/(α+β), b = α/(α+β), G = (αA/(βB))^(1/(α+β)).

The 4500 starts are independent, so they run as one batch: a hand-written L-BFGS whose history,
step and stopping test are per start (one `torch.optim.LBFGS` over the summed objective would
share one line search and one curvature estimate across all starts and crawl). A first pass
with a loose tolerance finds the basins; the best few are then polished to a tight one.

The sweep CSV (`read_sweep`, `append_sweep_row`) has one row per finished run, columns
`SWEEP_COLUMNS`: the nominal `budget` (FLOPs), `depth`, N under each counting convention of
`nanolib.model.scaling_params` (`n_params_all`, `n_params_non_embedding`, `n_params_matmul`),
`tokens` trained, `flops` actually spent, `val_bpb` and `wall_s`.

Running a sweep: `plan_isoflop` turns budgets × depths into runs (steps, tokens and FLOPs with
FLOPs = `nanolib.model.flops_per_token` × tokens, and an estimated time from measured FLOP/s
that a preset's time budget may refuse); `run_sweep` trains them through
`nanolib.train.launch`, appending a row only when a run has finished, so a killed sweep
continues where it stopped; `plan_family` and `run_family` plan and train one model per depth
at a tokens-per-parameter ratio (the miniseries). `Dial` reads a fitted L(N, D) along a depth
dial whose FLOPs per token are not 6·N.
"""

from __future__ import annotations

import csv
import itertools
import math
import os
import warnings
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from contextlib import contextmanager, redirect_stdout
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path

import numpy as np
import pandas as pd
import torch

from nanolib.model import CONVENTIONS, GPTConfig, config_for_depth, flops_per_token, scaling_params
from nanolib.runs import atomic_write_json, atomic_write_text, file_hash, read_json
from nanolib.tokenizer import RANKS_FILE, Tokenizer
from nanolib.train import META, NOT_TRAJECTORY, TrainConfig, launch, plan

DATA_DIR = Path(__file__).resolve().parent.parent / "data"
CHINCHILLA_CSV = DATA_DIR / "chinchilla" / "chinchilla_extracted.csv"
# Chinchilla's nine isoFLOP budgets (Figure 3 legend); Epoch's points cluster 2-9 % below them.
CHINCHILLA_BUDGETS = (6e18, 1e19, 3e19, 6e19, 1e20, 3e20, 6e20, 1e21, 3e21)

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


class ScalingWarning(UserWarning):
    """Data a fit flagged or left out; the message says which and why."""


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
# Approach 2: isoFLOP parabolas
# ---------------------------------------------------------------------------------------------


def _parabolas(x: np.ndarray, y: np.ndarray) -> np.ndarray:
    """Least-squares y = c2·x² + c1·x + c0 along the last axis (batched); NaN if degenerate."""
    powers = np.stack([x**k for k in range(5)], axis=-1).sum(axis=-2)  # Σx^0 … Σx^4
    lhs = np.stack(
        [powers[..., [4, 3, 2]], powers[..., [3, 2, 1]], powers[..., [2, 1, 0]]], axis=-2
    )
    rhs = np.stack([(x**2 * y).sum(-1), (x * y).sum(-1), y.sum(-1)], axis=-1)
    distinct = 1 + (np.diff(np.sort(x, axis=-1), axis=-1) > 0).sum(-1)
    ok = distinct >= 3
    lhs = np.where(ok[..., None, None], lhs, np.eye(3))
    coef = np.linalg.solve(lhs, rhs[..., None])[..., 0]
    return np.where(ok[..., None], coef, np.nan)


def _judge_parabola(
    coef: np.ndarray, x: np.ndarray, y: np.ndarray
) -> tuple[np.ndarray, np.ndarray]:
    """The vertex of each parabola (batched) and a flag: '' if usable, else the failed check."""
    c2, c1 = coef[..., 0], coef[..., 1]
    with np.errstate(divide="ignore", invalid="ignore"):
        vertex = -c1 / (2 * c2)
    lo, hi = x.min(-1), x.max(-1)
    best = np.take_along_axis(x, y.argmin(-1)[..., None], -1)[..., 0]
    flag = np.full(np.shape(c2), "", dtype=object)
    flag[(best == lo) | (best == hi)] = "minimum_at_edge"
    flag[(vertex <= lo) | (vertex >= hi)] = "minimum_outside_range"
    flag[c2 <= 0] = "opens_downward"
    flag[np.isnan(c2)] = "too_few_points"
    return vertex, flag


def _reason(flag: str, x: np.ndarray, y: np.ndarray, c2: float, n_opt: float) -> str:
    """A reader's sentence for a flagged budget (x = log N and y = loss of its runs)."""
    n_lo, n_hi = math.exp(x.min()), math.exp(x.max())
    if flag == "too_few_points":
        return f"{len(set(x))} distinct model sizes; a parabola needs at least 3"
    if flag == "opens_downward":
        return f"the parabola opens downward (curvature {c2:.3g}), so it has no minimum"
    if flag == "minimum_outside_range":
        side = "smaller" if n_opt <= n_lo else "larger"
        return (
            f"the parabola's minimum N={n_opt:.3g} is outside the sampled N {n_lo:.3g}…{n_hi:.3g};"
            f" add {side} models to this budget"
        )
    n_best = math.exp(x[np.argmin(y)])
    side = "smaller" if n_best == n_lo else "larger"
    return (
        f"the lowest loss is at the {side} end (N={n_best:.3g}) of the sampled N "
        f"{n_lo:.3g}…{n_hi:.3g}, so the sweep does not bracket the minimum; add {side} models"
    )


def _power_law(log_c: np.ndarray, log_y: np.ndarray) -> tuple[float, float]:
    """Slope and intercept of log y against log C (least squares); NaN with fewer than 2 points."""
    if len(log_c) < 2 or np.ptp(log_c) == 0:
        return math.nan, math.nan
    slope, intercept = np.polyfit(log_c, log_y, 1)
    return float(slope), float(intercept)


def _percentiles(samples: Iterable[float], ci: float) -> tuple[float, float]:
    """The central `ci` percentile interval of samples, ignoring NaN; NaN if all are NaN."""
    values = np.asarray(samples, dtype=float)
    if not np.isfinite(values).any():
        return math.nan, math.nan
    lo, hi = np.nanpercentile(values, [50 * (1 - ci), 50 * (1 + ci)])
    return float(lo), float(hi)


def _as_output(values: np.ndarray, like: object) -> float | np.ndarray:
    """A float for a scalar input, an array otherwise."""
    return float(values) if np.ndim(like) == 0 else values


@dataclass(frozen=True)
class IsoFlopFit:
    """Approach 2: per-budget parabolas, their optima, and the power laws through them."""

    # One row per budget: budget, n_points, n_lo/n_hi (sampled N), n_opt, d_opt,
    # tokens_per_param, loss_opt, the parabola c2·x² + c1·x + c0 in x = ln N − log_n_center,
    # ok, flag ("ok" or the failed check), reason; with a bootstrap also n_opt_lo/_hi and
    # tokens_per_param_lo/_hi (percentiles at level ci). n_opt of a budget flagged
    # minimum_outside_range is the parabola's extrapolated vertex.
    budgets: pd.DataFrame
    a: float
    b: float
    log_n_coef: float
    log_d_coef: float
    n_col: str
    loss_col: str
    tokens_rule: str
    ci: float
    bootstrap: pd.DataFrame | None = field(default=None, repr=False)

    def n_opt(self, flops: float | np.ndarray) -> float | np.ndarray:
        """N_opt(C) from the power law N_opt = exp(log_n_coef)·C^a."""
        return _as_output(np.exp(self.log_n_coef + self.a * np.log(flops)), flops)

    def d_opt(self, flops: float | np.ndarray) -> float | np.ndarray:
        """D_opt(C) from the power law D_opt = exp(log_d_coef)·C^b."""
        return _as_output(np.exp(self.log_d_coef + self.b * np.log(flops)), flops)

    def tokens_per_param(self, flops: float | np.ndarray) -> float | np.ndarray:
        """D_opt/N_opt at compute C, from the two power laws."""
        return _as_output(np.asarray(self.d_opt(flops)) / np.asarray(self.n_opt(flops)), flops)

    def frontier(self, flops: Iterable[float]) -> pd.DataFrame:
        """The compute-optimal N, D and D/N at each compute in `flops`."""
        c = np.asarray(list(flops), dtype=float)
        n, d = self.n_opt(c), self.d_opt(c)
        return pd.DataFrame({"flops": c, "n_opt": n, "d_opt": d, "tokens_per_param": d / n})

    def parabola(self, budget: float, n: float | np.ndarray) -> float | np.ndarray:
        """The fitted loss of budget `budget` at model size(s) `n` (for drawing the curves)."""
        row = self.budgets.loc[np.isclose(self.budgets["budget"], budget)]
        if row.empty:
            raise KeyError(f"no budget {budget:g}; budgets are {list(self.budgets['budget'])}")
        r = row.iloc[0]
        x = np.log(n) - r["log_n_center"]
        return _as_output(r["c2"] * x**2 + r["c1"] * x + r["c0"], n)

    def interval(self, name: str) -> tuple[float, float]:
        """Bootstrap percentile interval (level `ci`) of a column of `bootstrap`, e.g. 'a'."""
        if self.bootstrap is None:
            raise ValueError("no bootstrap: refit with fit_isoflop(..., n_bootstrap=200)")
        return _percentiles(self.bootstrap[name], self.ci)

    def loss_opt(self, flops: float | np.ndarray) -> float | np.ndarray:
        """The minimum loss at C: a power law through the usable budgets' vertices (NaN if < 2)."""
        good = self.budgets[self.budgets["ok"]]
        a, c = _power_law(np.log(good["budget"].to_numpy()), np.log(good["loss_opt"].to_numpy()))
        return _as_output(np.exp(c + a * np.log(flops)), flops)

    def predicted_curve(self, flops: float, n: float | np.ndarray) -> float | np.ndarray:
        """Approach 2's isoFLOP curve at any C: the usable budgets' mean parabola (in log N),
        moved to (N_opt(C), loss_opt(C)). Approach 2 models only the optima; the shape is theirs."""
        good = self.budgets[self.budgets["ok"]]
        c2 = good["c2"].mean() if len(good) else math.nan
        x = np.log(n) - math.log(self.n_opt(flops))
        return _as_output(self.loss_opt(flops) + c2 * x**2, n)

    def tokens_per_param_interval(self, flops: float) -> tuple[float, float]:
        """Bootstrap percentile interval (level `ci`) of D_opt/N_opt at compute `flops`."""
        if self.bootstrap is None:
            raise ValueError("no bootstrap: refit with fit_isoflop(..., n_bootstrap=200)")
        boot = self.bootstrap
        log_ratio = (
            boot["log_d_coef"] - boot["log_n_coef"] + (boot["b"] - boot["a"]) * math.log(flops)
        )
        return _percentiles(np.exp(log_ratio), self.ci)

    @property
    def excluded(self) -> pd.DataFrame:
        """The budgets left out of the power laws, with their flag and reason."""
        return self.budgets.loc[~self.budgets["ok"], ["budget", "n_points", "flag", "reason"]]


def _budget_optima(
    x: np.ndarray, y: np.ndarray, log_d: np.ndarray | None, log_c: float
) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Per (batched) sample of one budget: coefficients, vertex log N, log D there, and flag."""
    center = x.mean(-1, keepdims=True)
    coef = _parabolas(x - center, y)
    vertex, flag = _judge_parabola(coef, x - center, y)
    log_n = vertex + center[..., 0]
    if log_d is None:  # D from C = 6·N·D
        log_d_opt = log_c - math.log(6) - log_n
    else:  # D read off the budget's own runs: log D is linear in log N along an isoFLOP line
        xc = x - center
        with np.errstate(divide="ignore", invalid="ignore"):  # a resample of one size: no slope
            slope = (xc * (log_d - log_d.mean(-1, keepdims=True))).sum(-1) / (xc**2).sum(-1)
        log_d_opt = log_d.mean(-1) + slope * vertex
    return coef, log_n, log_d_opt, flag


def fit_isoflop(
    df: pd.DataFrame,
    n_col: str = "n_params_matmul",
    loss_col: str = "val_bpb",
    budget_col: str = "budget",
    *,
    tokens_col: str | None = None,
    n_bootstrap: int = 0,
    seed: int = 0,
    ci: float = 0.8,
) -> IsoFlopFit:
    """Chinchilla's Approach 2: a parabola in log N per budget, then N_opt ∝ C^a and D_opt ∝ C^b.

    D_opt comes from C = 6·N_opt·D_opt when `tokens_col` is None; otherwise from the budget's
    own runs (log D interpolated linearly in log N at N_opt), which respects whatever FLOPs per
    token the runs used. The bootstrap resamples runs with replacement within each budget
    (seeded) and reports percentile intervals at level `ci` (0.8: Chinchilla's 10th/90th).
    Rows whose budget is NaN (runs on no isoFLOP line) are ignored.
    """
    for col in (n_col, loss_col, budget_col, *([tokens_col] if tokens_col else [])):
        if col not in df.columns:
            raise KeyError(f"column {col!r} not in the data; columns are {list(df.columns)}")
    data = df.dropna(subset=[budget_col])
    rows, groups = [], []
    for budget, group in data.groupby(budget_col, sort=True):
        x = np.log(_as_positive(n_col, group[n_col]))
        y = group[loss_col].to_numpy(float)
        log_d = np.log(_as_positive(tokens_col, group[tokens_col])) if tokens_col else None
        batch = _budget_optima(
            x[None], y[None], None if log_d is None else log_d[None], math.log(budget)
        )
        coef, log_n, log_d_opt, flag = (v[0] for v in batch)
        n_lo, n_hi = math.exp(x.min()), math.exp(x.max())
        n_opt = math.exp(log_n) if np.isfinite(log_n) else math.nan
        c2, c1, c0 = (float(v) for v in coef)
        ok = flag == ""
        reason = "" if ok else _reason(flag, x, y, c2, n_opt)
        if not ok:
            warnings.warn(
                f"isoFLOP budget {budget:.3g}: {reason}; excluded from the power-law fit",
                ScalingWarning,
                stacklevel=2,
            )
        if flag in ("too_few_points", "opens_downward"):  # no minimum to report
            n_opt, log_d_opt = math.nan, math.nan
        d_opt = math.exp(log_d_opt) if np.isfinite(log_d_opt) else math.nan
        rows.append(
            {
                "budget": float(budget),
                "n_points": len(x),
                "n_lo": n_lo,
                "n_hi": n_hi,
                "n_opt": n_opt,
                "d_opt": d_opt,
                "tokens_per_param": d_opt / n_opt,
                "loss_opt": c0 - c1**2 / (4 * c2) if ok else math.nan,
                "c2": c2,
                "c1": c1,
                "c0": c0,
                "log_n_center": float(x.mean()),
                "ok": ok,
                "flag": flag or "ok",
                "reason": reason,
            }
        )
        if ok:
            groups.append((len(rows) - 1, x, y, log_d, math.log(budget)))
    table = pd.DataFrame(rows)
    if table.empty:
        raise ValueError(f"no rows with a {budget_col!r} value to fit")
    good = table[table["ok"]]
    if len(good) < 2:
        warnings.warn(
            f"only {len(good)} usable budget(s); the power laws need 2 or more, so a and b are NaN",
            ScalingWarning,
            stacklevel=2,
        )
    log_c = np.log(good["budget"].to_numpy())
    a, log_n_coef = _power_law(log_c, np.log(good["n_opt"].to_numpy()))
    b, log_d_coef = _power_law(log_c, np.log(good["d_opt"].to_numpy()))
    tokens_rule = f"column {tokens_col!r}" if tokens_col else "C/(6N)"
    boot = None
    if n_bootstrap > 0:
        for name in ("n_opt", "tokens_per_param"):
            table[f"{name}_lo"], table[f"{name}_hi"] = math.nan, math.nan
        # With fewer than 2 usable budgets there are no power laws to resample: NaN intervals.
        boot = pd.DataFrame(math.nan, index=range(n_bootstrap), columns=BOOTSTRAP_COLUMNS)
    if n_bootstrap > 0 and len(groups) >= 2:
        boot, per_budget = _bootstrap_isoflop(groups, n_bootstrap, seed)
        q = [50 * (1 - ci), 50 * (1 + ci)]
        for name, samples in per_budget.items():
            with warnings.catch_warnings():
                warnings.simplefilter("ignore", RuntimeWarning)  # all-NaN columns stay NaN
                lo, hi = np.nanpercentile(samples, q, axis=0)
            idx = [g[0] for g in groups]
            table.loc[idx, f"{name}_lo"], table.loc[idx, f"{name}_hi"] = lo, hi
    return IsoFlopFit(table, a, b, log_n_coef, log_d_coef, n_col, loss_col, tokens_rule, ci, boot)


BOOTSTRAP_COLUMNS = ["a", "b", "log_n_coef", "log_d_coef"]  # one bootstrap refit of Approach 2


def _bootstrap_isoflop(
    groups: list[tuple[int, np.ndarray, np.ndarray, np.ndarray | None, float]],
    n_bootstrap: int,
    seed: int,
) -> tuple[pd.DataFrame, dict[str, np.ndarray]]:
    """Resample runs within each usable budget; refit parabolas, then the power laws."""
    rng = np.random.default_rng(seed)
    log_n = np.full((n_bootstrap, len(groups)), np.nan)
    log_d = np.full((n_bootstrap, len(groups)), np.nan)
    for j, (_, x, y, ld, lc) in enumerate(groups):
        idx = rng.integers(0, len(x), size=(n_bootstrap, len(x)))
        _, ln, ldo, flag = _budget_optima(x[idx], y[idx], None if ld is None else ld[idx], lc)
        keep = flag == ""
        log_n[keep, j], log_d[keep, j] = ln[keep], ldo[keep]
    log_c = np.array([g[4] for g in groups])
    samples = []
    for i in range(n_bootstrap):
        use = np.isfinite(log_n[i])
        a, cn = _power_law(log_c[use], log_n[i, use])
        b, cd = _power_law(log_c[use], log_d[i, use])
        samples.append((a, b, cn, cd))
    frame = pd.DataFrame(samples, columns=BOOTSTRAP_COLUMNS)
    per_budget = {"n_opt": np.exp(log_n), "tokens_per_param": np.exp(log_d - log_n)}
    return frame, per_budget


# ---------------------------------------------------------------------------------------------
# Approach 3: the parametric fit L(N, D) = E + A/N^α + B/D^β
# ---------------------------------------------------------------------------------------------

PARAM_ORDER = ("a", "b", "e", "alpha", "beta")  # a = log A, b = log B, e = log E
PARAM_NAMES = ("E", "A", "B", "alpha", "beta")  # the same law in the paper's letters


def chinchilla_grid() -> np.ndarray:
    """Hoffmann et al.'s 4500 starts, rows (a, b, e, α, β): a, b step 5; e, α, β step 0.5."""
    a = b = np.arange(0.0, 30.0, 5.0)
    e = np.arange(-1.0, 1.5, 0.5)
    alpha = beta = np.arange(0.0, 2.5, 0.5)
    return np.array(list(itertools.product(a, b, e, alpha, beta)))


class _HuberLSE:
    """The summed Huber objective and its gradient for a batch of parameter rows (float64)."""

    chunk = 256  # rows per pass: keeps the [rows, points] temporaries in cache

    def __init__(self, n: np.ndarray, d: np.ndarray, loss: np.ndarray, delta: float) -> None:
        self.log_n = torch.as_tensor(np.log(n), dtype=torch.float64)
        self.log_d = torch.as_tensor(np.log(d), dtype=torch.float64)
        self.log_loss = torch.as_tensor(np.log(loss), dtype=torch.float64)
        self.delta = delta
        self.weights: torch.Tensor | None = None  # [rows, points] bootstrap counts, or None

    def __call__(
        self, theta: torch.Tensor, rows: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Objective [k] and gradient [k, 5] at parameter rows `theta` (which are rows `rows`)."""
        fs, gs = [], []
        for i in range(0, len(theta), self.chunk):
            w = None if self.weights is None else self.weights[rows[i : i + self.chunk]]
            f, g = self._chunk(theta[i : i + self.chunk], w)
            fs.append(f)
            gs.append(g)
        return torch.cat(fs), torch.cat(gs)

    def _chunk(
        self, theta: torch.Tensor, w: torch.Tensor | None
    ) -> tuple[torch.Tensor, torch.Tensor]:
        a, b, e, alpha, beta = (t[:, None] for t in theta.unbind(-1))
        t1, t2 = a - alpha * self.log_n, b - beta * self.log_d
        t3 = e.expand_as(t1)
        m = torch.maximum(torch.maximum(t1, t2), t3)
        e1, e2, e3 = (t1 - m).exp(), (t2 - m).exp(), (t3 - m).exp()
        total = e1 + e2 + e3
        r = m + total.log() - self.log_loss
        delta = self.delta
        huber = torch.where(r.abs() <= delta, 0.5 * r * r, delta * (r.abs() - 0.5 * delta))
        psi = r.clamp(-delta, delta) / total  # Huber'(r) times the softmax normaliser
        if w is not None:
            huber, psi = huber * w, psi * w
        w1, w2, w3 = psi * e1, psi * e2, psi * e3
        grad = torch.stack(
            [
                w1.sum(-1),
                w2.sum(-1),
                w3.sum(-1),
                -(w1 * self.log_n).sum(-1),
                -(w2 * self.log_d).sum(-1),
            ],
            dim=-1,
        )
        return huber.sum(-1), grad


def _batched_lbfgs(
    fun: Callable[[torch.Tensor, torch.Tensor], tuple[torch.Tensor, torch.Tensor]],
    x0: torch.Tensor,
    *,
    ftol: float,
    gtol: float,
    max_iter: int,
    history: int = 10,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Minimise each row of x0 independently by L-BFGS with Armijo backtracking.

    A row stops when max|grad| ≤ gtol, when an iteration lowers its objective by at most
    ftol·|f|, or when no step along its direction lowers the objective. Returns the final
    rows, their objectives, and the iterations each took.
    """
    n_rows, dim = x0.shape
    x = x0.clone()
    f, g = fun(x, torch.arange(n_rows))
    s_hist = torch.zeros(history, n_rows, dim, dtype=x.dtype)
    y_hist = torch.zeros_like(s_hist)
    rho = torch.zeros(history, n_rows, dtype=x.dtype)
    stored = torch.zeros(n_rows, dtype=torch.long)  # curvature pairs stored so far
    iters = torch.zeros(n_rows, dtype=torch.long)
    active = torch.arange(n_rows)
    for _ in range(max_iter):
        if len(active) == 0:
            break
        xa, fa, ga, ka = x[active], f[active], g[active], stored[active]
        k = len(active)
        cols = torch.arange(k)
        # Two-loop recursion over each row's own history (unused slots have rho = 0: no effect).
        q = ga.clone()
        coef = torch.zeros(history, k, dtype=x.dtype)
        slots = [(ka - 1 - j) % history for j in range(history)]
        for j, slot in enumerate(slots):
            s, y, r = s_hist[slot, active], y_hist[slot, active], rho[slot, active]
            coef[j] = r * (s * q).sum(-1)
            q -= coef[j, :, None] * y
        s, y, r = s_hist[slots[0], active], y_hist[slots[0], active], rho[slots[0], active]
        first = 1.0 / ga.norm(dim=-1).clamp_min(1e-300)  # no history yet: a unit-length step
        gamma = torch.where(r > 0, (s * y).sum(-1) / (y * y).sum(-1).clamp_min(1e-300), first)
        direction = gamma[:, None] * q
        for j in reversed(range(history)):
            slot = slots[j]
            s, y, r = s_hist[slot, active], y_hist[slot, active], rho[slot, active]
            direction += s * (coef[j] - r * (y * direction).sum(-1))[:, None]
        direction = -direction
        slope = (ga * direction).sum(-1)
        uphill = slope >= 0
        direction[uphill] = -ga[uphill] * first[uphill, None]
        slope = (ga * direction).sum(-1)
        # Backtracking line search, per row, evaluating only rows not yet accepted.
        step = torch.ones(k, dtype=x.dtype)
        x_new, f_new, g_new = xa.clone(), fa.clone(), ga.clone()
        accepted = torch.zeros(k, dtype=torch.bool)
        todo = cols
        for _ in range(60):
            trial = xa[todo] + step[todo, None] * direction[todo]
            ft, gt = fun(trial, active[todo])
            good = ft <= fa[todo] + 1e-4 * step[todo] * slope[todo]
            hit = todo[good]
            x_new[hit], f_new[hit], g_new[hit] = trial[good], ft[good], gt[good]
            accepted[hit] = True
            todo = todo[~good]
            if len(todo) == 0:
                break
            step[todo] *= 0.5
        s, y = x_new - xa, g_new - ga
        sy = (s * y).sum(-1)
        update = accepted & (sy > 1e-300)
        rows_u, slot_u = active[update], ka[update] % history
        s_hist[slot_u, rows_u], y_hist[slot_u, rows_u] = s[update], y[update]
        rho[slot_u, rows_u] = 1.0 / sy[update]
        stored[rows_u] += 1
        x[active], f[active], g[active] = x_new, f_new, g_new
        iters[active] += 1
        done = ~accepted | (g_new.abs().amax(-1) <= gtol) | ((fa - f_new) <= ftol * f_new.abs())
        active = active[~done]
    return x, f, iters


@dataclass(frozen=True)
class Approach3Fit:
    """L(N, D) = E + A/N^α + B/D^β, fitted; the compute-optimal frontier follows in closed form."""

    E: float
    A: float
    B: float
    alpha: float
    beta: float
    objective: float
    n_points: int
    delta: float
    n_starts: int
    se: dict[str, float] | None = None
    bootstrap: pd.DataFrame | None = field(default=None, repr=False)

    @classmethod
    def from_constants(
        cls, E: float, A: float, B: float, alpha: float, beta: float
    ) -> Approach3Fit:
        """A law from published constants (no data behind it here), to compare with a fit."""
        return cls(E, A, B, alpha, beta, objective=math.nan, n_points=0, delta=math.nan, n_starts=0)

    @property
    def a(self) -> float:
        """Exponent of N_opt ∝ C^a: β/(α+β)."""
        return self.beta / (self.alpha + self.beta)

    @property
    def b(self) -> float:
        """Exponent of D_opt ∝ C^b: α/(α+β)."""
        return self.alpha / (self.alpha + self.beta)

    @property
    def G(self) -> float:
        """G = (αA/(βB))^(1/(α+β)) of N_opt = G·(C/6)^a."""
        return (self.alpha * self.A / (self.beta * self.B)) ** (1 / (self.alpha + self.beta))

    @property
    def log_params(self) -> dict[str, float]:
        """The fit in the optimiser's coordinates: a = log A, b = log B, e = log E, α, β."""
        return dict(
            zip(
                PARAM_ORDER,
                (math.log(self.A), math.log(self.B), math.log(self.E), self.alpha, self.beta),
            )
        )

    def loss(self, n: float | np.ndarray, d: float | np.ndarray) -> float | np.ndarray:
        """Predicted loss of N parameters trained on D tokens."""
        value = self.E + self.A / np.power(n, self.alpha) + self.B / np.power(d, self.beta)
        return float(value) if np.ndim(value) == 0 else np.asarray(value)

    def n_opt(self, flops: float | np.ndarray) -> float | np.ndarray:
        """Compute-optimal N at C FLOPs (C = 6ND): G·(C/6)^a."""
        return _as_output(self.G * np.power(np.asarray(flops, float) / 6, self.a), flops)

    def d_opt(self, flops: float | np.ndarray) -> float | np.ndarray:
        """Compute-optimal D at C FLOPs (C = 6ND): (C/6)^b / G."""
        return _as_output(np.power(np.asarray(flops, float) / 6, self.b) / self.G, flops)

    def tokens_per_param(self, flops: float | np.ndarray) -> float | np.ndarray:
        """D_opt/N_opt at C FLOPs."""
        return _as_output(np.asarray(self.d_opt(flops)) / np.asarray(self.n_opt(flops)), flops)

    def frontier(self, flops: Iterable[float]) -> pd.DataFrame:
        """Compute-optimal N, D, D/N and the predicted loss at each compute in `flops`."""
        c = np.asarray(list(flops), dtype=float)
        n, d = np.asarray(self.n_opt(c)), np.asarray(self.d_opt(c))
        return pd.DataFrame(
            {"flops": c, "n_opt": n, "d_opt": d, "tokens_per_param": d / n, "loss": self.loss(n, d)}
        )


def _as_positive(name: str, values: Sequence[float] | np.ndarray) -> np.ndarray:
    """A 1-D float array of positive finite values, or a ValueError saying what is wrong."""
    arr = np.asarray(values, dtype=float).ravel()
    bad = ~np.isfinite(arr) | (arr <= 0)
    if bad.any():
        i = int(np.flatnonzero(bad)[0])
        raise ValueError(
            f"{name}[{i}] = {float(arr[i])!r}; every {name} must be positive and finite"
        )
    return arr


@contextmanager
def _one_thread() -> Iterator[None]:
    """Run torch single-threaded for a while: the fit's small chunks gain little from a second
    thread, and OpenMP threads that spin-wait slow it ~100x on a CPU other processes share."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        yield
    finally:
        torch.set_num_threads(before)


def fit_approach3(
    N: Sequence[float] | np.ndarray,
    D: Sequence[float] | np.ndarray,
    loss: Sequence[float] | np.ndarray,
    *,
    delta: float = 1e-3,
    grid: str | np.ndarray = "chinchilla",
    seed: int = 0,
    n_bootstrap: int = 0,
) -> Approach3Fit:
    """Chinchilla's Approach 3: Huber fit of log L(N, D) from a grid of L-BFGS starts; best kept.

    `grid` is "chinchilla" (Hoffmann et al.'s 4500 starts) or an array of rows (a, b, e, α, β).
    With `n_bootstrap` > 0 the points are resampled with replacement (seeded by `seed`) and each
    resample is refitted from the full-data optimum; `se` holds the bootstrap standard deviations.
    """
    n, d, y = (_as_positive(k, v) for k, v in (("N", N), ("D", D), ("loss", loss)))
    if not len(n) == len(d) == len(y):
        raise ValueError(f"N, D and loss differ in length: {len(n)}, {len(d)}, {len(y)}")
    if len(n) < 5:
        raise ValueError(f"{len(n)} points; fitting 5 parameters needs at least 5")
    starts = chinchilla_grid() if isinstance(grid, str) and grid == "chinchilla" else grid
    if isinstance(starts, str):
        raise ValueError(f"unknown grid {grid!r}; pass 'chinchilla' or an array of (a, b, e, α, β)")
    starts = torch.as_tensor(np.asarray(starts, dtype=float).reshape(-1, 5))
    with _one_thread():
        return _fit_approach3(n, d, y, starts, delta, seed, n_bootstrap)


def _fit_approach3(
    n: np.ndarray,
    d: np.ndarray,
    y: np.ndarray,
    starts: torch.Tensor,
    delta: float,
    seed: int,
    n_bootstrap: int,
) -> Approach3Fit:
    """fit_approach3 after its inputs are checked."""
    fun = _HuberLSE(n, d, y, delta)
    # Loose pass over every start to find the basins, then polish the best few tightly.
    x, f, _ = _batched_lbfgs(fun, starts, ftol=1e-6, gtol=1e-9, max_iter=300)
    f = torch.where(torch.isfinite(f), f, torch.inf)
    best = torch.argsort(f)[: min(16, len(f))]
    x, f, _ = _batched_lbfgs(fun, x[best], ftol=1e-14, gtol=1e-12, max_iter=2000)
    i = int(torch.argmin(f))
    theta = x[i]
    la, lb, le, alpha, beta = (float(v) for v in theta)
    se, boot = None, None
    if n_bootstrap > 0:
        rng = np.random.default_rng(seed)
        idx = rng.integers(0, len(n), size=(n_bootstrap, len(n)))
        counts = np.stack([np.bincount(row, minlength=len(n)) for row in idx])
        fun.weights = torch.as_tensor(counts, dtype=torch.float64)
        xb, _, _ = _batched_lbfgs(
            fun, theta.expand(n_bootstrap, 5).clone(), ftol=1e-12, gtol=1e-12, max_iter=1000
        )
        xb = xb.numpy()
        with np.errstate(over="ignore", invalid="ignore"):  # a resample may send A or B to inf
            boot = pd.DataFrame(
                {
                    "E": np.exp(xb[:, 2]),
                    "A": np.exp(xb[:, 0]),
                    "B": np.exp(xb[:, 1]),
                    "alpha": xb[:, 3],
                    "beta": xb[:, 4],
                }
            )
            boot["a"] = boot["beta"] / (boot["alpha"] + boot["beta"])
            boot["b"] = boot["alpha"] / (boot["alpha"] + boot["beta"])
            se = {k: float(v) for k, v in boot.std(ddof=1).items()}
    return Approach3Fit(
        E=math.exp(le),
        A=math.exp(la),
        B=math.exp(lb),
        alpha=alpha,
        beta=beta,
        objective=float(f[i]),
        n_points=len(n),
        delta=delta,
        n_starts=len(starts),
        se=se,
        bootstrap=boot,
    )


def approach3_objective(
    params: Mapping[str, float],
    N: Sequence[float] | np.ndarray,
    D: Sequence[float] | np.ndarray,
    loss: Sequence[float] | np.ndarray,
    delta: float = 1e-3,
) -> float:
    """The Huber objective at given E, A, B, alpha, beta (e.g. a paper's constants) on some data."""
    fun = _HuberLSE(_as_positive("N", N), _as_positive("D", D), _as_positive("loss", loss), delta)
    theta = torch.tensor(
        [
            [
                math.log(params["A"]),
                math.log(params["B"]),
                math.log(params["E"]),
                params["alpha"],
                params["beta"],
            ]
        ],
        dtype=torch.float64,
    )
    return float(fun(theta, torch.arange(1))[0][0])


# ---------------------------------------------------------------------------------------------
# Data and choosing a depth
# ---------------------------------------------------------------------------------------------


def load_chinchilla(path: str | Path | None = None, drop_highest: int = 5) -> pd.DataFrame:
    """Epoch AI's extraction of Chinchilla's runs: N, C, D = C/(6N), loss (nats), nominal budget.

    Epoch's rule drops the `drop_highest` highest-loss runs (rows whose loss is not strictly
    below the drop_highest-th highest loss): 240 of 245 rows with the default 5. `budget` is the
    isoFLOP budget of CHINCHILLA_BUDGETS within ±0.1 dex of the run's C, or NaN.
    """
    path = Path(path) if path else CHINCHILLA_CSV
    if not path.exists():
        raise FileNotFoundError(f"{path}: missing; it ships with the book in data/chinchilla/")
    raw = pd.read_csv(path)
    df = pd.DataFrame(
        {
            "N": raw["Model Size"].astype(float),
            "C": raw["Training FLOP"].astype(float),
            "loss": raw["loss"].astype(float),
        }
    )
    df.insert(2, "D", df["C"] / (6 * df["N"]))
    if drop_highest > 0:
        df = df[df["loss"] < df["loss"].nlargest(drop_highest).min()]
    log_budgets = np.log10(CHINCHILLA_BUDGETS)
    dist = np.abs(np.log10(df["C"].to_numpy())[:, None] - log_budgets[None, :])
    nearest = np.asarray(CHINCHILLA_BUDGETS)[dist.argmin(1)]
    df["budget"] = np.where(dist.min(1) <= 0.1, nearest, np.nan)
    return df.reset_index(drop=True)


@dataclass(frozen=True)
class Dial:
    """A model family, one model per depth (`nanolib.model.config_for_depth`), for reading fits.

    `table` has one row per depth: d_model, n_head, N under each counting convention (columns
    named as in CONVENTIONS) and the training FLOPs per token. Between depths a size's FLOPs per
    token is interpolated linearly in log-log, and extrapolated from the ends.
    """

    table: pd.DataFrame

    @classmethod
    def of(
        cls,
        vocab_size: int,
        seq_len: int,
        aspect_ratio: int,
        head_dim: int,
        kv_ratio: int = 1,
        depths: Iterable[int] = range(1, 65),
    ) -> Dial:
        """The dial of these shape settings over `depths`."""
        rows = []
        for depth in depths:
            m = config_for_depth(depth, vocab_size, seq_len, aspect_ratio, head_dim, kv_ratio)
            counts = {c: scaling_params(m, c) for c in CONVENTIONS}
            rows.append(
                {"depth": depth, "d_model": m.d_model, "n_head": m.n_head, **counts}
                | {"flops_per_token": flops_per_token(m)}
            )
        return cls(pd.DataFrame(rows))

    def _log_fpt(self, log_n: np.ndarray, convention: str) -> np.ndarray:
        x = np.log(self.table[convention].to_numpy(float))
        y = np.log(self.table["flops_per_token"].to_numpy(float))
        inside = np.interp(log_n, x, y)
        if len(x) < 2:
            return inside
        lo = y[0] + (y[1] - y[0]) / (x[1] - x[0]) * (log_n - x[0])
        hi = y[-1] + (y[-1] - y[-2]) / (x[-1] - x[-2]) * (log_n - x[-1])
        return np.where(log_n < x[0], lo, np.where(log_n > x[-1], hi, inside))

    def flops_per_token(self, n: float | np.ndarray, convention: str = "matmul") -> np.ndarray:
        """Training FLOPs per token of the family's model of size `n` (N in `convention`)."""
        return np.exp(self._log_fpt(np.log(np.asarray(n, dtype=float)), convention))

    def nearest_depth(self, n: float, convention: str = "matmul") -> int:
        """The depth whose size (in `convention`) is nearest to `n` in log."""
        gap = np.abs(np.log(self.table[convention].to_numpy(float) / n))
        return int(self.table["depth"].iloc[int(np.argmin(gap))])

    def optimum(
        self,
        law: Mapping[str, float | np.ndarray] | Approach3Fit,
        flops: float,
        convention: str = "matmul",
        points: int = 2000,
    ) -> dict[str, np.ndarray]:
        """Where a fitted L(N, D) is lowest at `flops` along the family: n_opt, d_opt, loss.

        Along the family D = flops / flops_per_token(N) — our models spend 6·N_matmul plus
        attention per token, not 6·N — and L is minimised over `points` log-spaced sizes from a
        tenth of the smallest model to ten times the largest. `law` is an Approach3Fit or a
        mapping E, A, B, alpha, beta of numbers or equal-length arrays (e.g. a fit's bootstrap
        frame): the arrays returned have one entry per row of `law`.
        """
        if isinstance(law, Approach3Fit):
            law = {k: getattr(law, k) for k in PARAM_NAMES}
        sizes = self.table[convention].to_numpy(float)
        log_n = np.linspace(np.log(sizes.min() / 10), np.log(sizes.max() * 10), points)
        N, D = np.exp(log_n), flops / np.exp(self._log_fpt(log_n, convention))
        p = {k: np.atleast_1d(np.asarray(law[k], dtype=float))[:, None] for k in PARAM_NAMES}
        with np.errstate(over="ignore", invalid="ignore"):  # extreme bootstrap draws: inf loss
            loss = p["E"] + p["A"] / N ** p["alpha"] + p["B"] / D ** p["beta"]
        best = np.argmin(loss, axis=1)
        return {"n_opt": N[best], "d_opt": D[best], "loss": loss[np.arange(len(best)), best]}


def depth_for_budget(
    flops: float,
    depths: Iterable[int],
    params_fn: Callable[[int], float],
    flops_per_token_fn: Callable[[int], float],
    tokens_per_param: float | Callable[[float], float],
) -> int:
    """The depth whose compute-optimal run (D = tokens_per_param·N) costs closest to `flops`.

    `params_fn(depth)` is N in the convention `tokens_per_param` was measured in, and
    `flops_per_token_fn(depth)` the training FLOPs per token; `tokens_per_param` may be a
    number or a function of compute (e.g. a fit's `tokens_per_param`). Closeness is in log FLOPs.
    """
    ratio = tokens_per_param(flops) if callable(tokens_per_param) else tokens_per_param
    depths = list(depths)
    if not depths:
        raise ValueError("no depths to choose from")
    cost = [flops_per_token_fn(d) * ratio * params_fn(d) for d in depths]
    miss = [abs(math.log(c / flops)) for c in cost]
    return depths[int(np.argmin(miss))]


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
    depths = list(depths)
    if depths and all(isinstance(d, Iterable) for d in depths):
        if len(depths) != len(budgets):
            raise SweepPlanError(
                f"{len(depths)} depth lists for {len(budgets)} budgets: give one list per budget, "
                "or one list for all"
            )
        per_budget = [sorted(int(d) for d in ds) for ds in depths]
    else:
        per_budget = [sorted(int(d) for d in depths)] * len(budgets)
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
    config["tokenizer_sha256"] = file_hash(ranks) if ranks.exists() else None
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
def _quiet_training(log_path: Path) -> Iterator[None]:
    """Inside: a training run logs lines to `log_path` instead of drawing its own progress bar.

    NANOBOOK_LAUNCHED is the flag `nanolib.train.launch` sets for the ranks it starts (someone
    else shows progress); the sweep shows one bar over its runs.
    """
    before = os.environ.get("NANOBOOK_LAUNCHED")
    os.environ["NANOBOOK_LAUNCHED"] = "1"
    try:
        log_path.parent.mkdir(parents=True, exist_ok=True)
        with open(log_path, "a") as log, redirect_stdout(log):
            yield
    finally:
        if before is None:
            os.environ.pop("NANOBOOK_LAUNCHED", None)
        else:
            os.environ["NANOBOOK_LAUNCHED"] = before


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
    keep_optimizer: bool = False,
) -> pd.DataFrame:
    """Train every planned (budget, depth) not yet in `<sweep_dir>/sweep.csv`; return the CSV.

    Each run is `base` with its depth and target_flops, trained by `nanolib.train.launch` (in
    this process, or torchrun when nproc > 1) into `<sweep_dir>/<run_name>/`, its log in
    `train.log` there. A row is appended (and fsynced) only after its run finished, so after a
    kill the rows present are skipped, a run killed mid-way resumes from its last checkpoint,
    and a run that finished but had no row yet is reported from its checkpoint, not retrained.
    The optimizer state of a finished run is deleted unless `keep_optimizer`; its weights stay.
    """
    from tqdm.auto import tqdm

    sweep_dir = Path(sweep_dir)
    sweep_dir.mkdir(parents=True, exist_ok=True)
    _check_sweep_config(sweep_dir, base)
    csv_path = sweep_dir / SWEEP_CSV
    done = read_sweep(csv_path) if csv_path.exists() else pd.DataFrame(columns=["budget", "depth"])
    todo = [
        (float(r.budget), int(r.depth))
        for r in planned.itertuples()
        if not _is_done(done, float(r.budget), int(r.depth))
    ]
    bar = tqdm(
        total=len(planned), initial=len(planned) - len(todo), desc="isoFLOP sweep", unit="run"
    )
    if len(todo) < len(planned):
        bar.write(f"{len(planned) - len(todo)} of {len(planned)} runs already in {csv_path}")
    try:
        for budget, depth in todo:
            out = sweep_dir / run_name(budget, depth)
            cfg = replace(base, depth=depth, target_flops=budget, num_steps=None, out_dir=str(out))
            try:
                with _quiet_training(out / "train.log"):
                    summary = launch(cfg, nproc)
            except BaseException:
                log = (out / "train.log").read_text(errors="replace").splitlines()
                bar.write("\n".join([f"run {out.name} failed; the end of its log:", *log[-15:]]))
                raise
            model = GPTConfig(**read_json(out / META)["model"])
            counts = {f"n_params_{c}": scaling_params(model, c) for c in CONVENTIONS}
            row = {
                "budget": budget,
                "depth": depth,
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
                f"budget {budget:.3g}, depth {depth}: N_matmul {counts['n_params_matmul']:,}, "
                f"{summary['tokens']:,} tokens → val {summary['val_bpb']:.4f} bpb "
                f"({summary['wall_s']:.0f} s)"
            )
            bar.update(1)
    finally:
        bar.close()
    return read_sweep(csv_path)


MODELS_CSV = "models.csv"  # the family's table, inside its directory (chapter 5 reads it)
FAMILY_TOKENIZER = "tokenizer"  # the family's tokenizer, copied beside its models


def family_tokenizer(family_dir: str | Path) -> Tokenizer:
    """The tokenizer a family trained with, kept by `run_family` beside its models."""
    path = Path(family_dir) / FAMILY_TOKENIZER
    if not (path / RANKS_FILE).exists():
        raise FileNotFoundError(
            f"{family_dir} holds no {FAMILY_TOKENIZER}/ (a miniseries made before the family kept "
            "its tokenizer); re-run chapter 04 (`nanobook run 04 --force`) to rebuild it"
        )
    return Tokenizer.load(path)


def run_family(
    base: TrainConfig,
    depths: Iterable[int],
    tokens_per_param: float | Callable[[int], float],
    family_dir: str | Path,
    nproc: int = 1,
) -> pd.DataFrame:
    """Train one model per depth for tokens_per_param × N_matmul tokens; write models.csv.

    Each model is `base` at that depth (`tokens_per_param` may be a function of the depth),
    trained by `nanolib.train.launch` into `<family_dir>/d<depth>/` — a checkpoint directory
    that `nanolib.train.load_model` reads. `models.csv` gets one row per finished model:
    depth, N in each counting convention, tokens, FLOPs, tokens_per_param, val_bpb, wall_s and
    `checkpoint` (the model's folder, relative to `family_dir`). It is rewritten after every
    model, and a model already trained is reported from its checkpoint, so a killed run resumes.
    The tokenizer the family trains with is copied to `<family_dir>/tokenizer/`, so the family
    is one self-contained artifact (chapter 5 scores its models with it).
    """
    family_dir = Path(family_dir)
    copied = family_dir / FAMILY_TOKENIZER
    if not (copied / RANKS_FILE).exists() or file_hash(copied / RANKS_FILE) != file_hash(
        Path(base.tokenizer_dir) / RANKS_FILE
    ):
        Tokenizer.load(base.tokenizer_dir).save(copied)
    base = replace(base, tokenizer_dir=str(copied))
    rows = []
    for member in _family_members(base, depths, tokens_per_param):
        depth, name = member.depth, f"d{member.depth:02d}"
        cfg = replace(member, out_dir=str(family_dir / name))
        summary = launch(cfg, nproc)
        model = GPTConfig(**read_json(family_dir / name / META)["model"])
        rows.append(
            {
                "depth": depth,
                **{f"n_params_{c}": scaling_params(model, c) for c in CONVENTIONS},
                "tokens": summary["tokens"],
                "flops": summary["flops"],
                "tokens_per_param": summary["tokens_per_param"],
                "val_bpb": summary["val_bpb"],
                "wall_s": round(summary["wall_s"], 3),
                "checkpoint": name,
            }
        )
        atomic_write_text(family_dir / MODELS_CSV, pd.DataFrame(rows).to_csv(index=False))
    return pd.DataFrame(rows)
