"""Scaling laws: Chinchilla's Approaches 2 and 3, Chinchilla's data, and a depth per budget.

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

The 4500 starts are independent, so they run as one batch (`nanolib.lbfgs.batched_lbfgs`). A
first pass with a loose tolerance finds the basins; the best few are then polished to a tight one.

`load_chinchilla` reads Epoch AI's extraction of Chinchilla's runs; `Dial` reads a fitted
L(N, D) along a depth dial whose FLOPs per token are not 6·N. Nothing here trains: the runs
these fits read are planned and trained by `nanolib.sweep`.
"""

from __future__ import annotations

import itertools
import math
import warnings
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import torch

from nanolib.lbfgs import batched_lbfgs
from nanolib.model import CONVENTIONS, config_for_depth, flops_per_token, scaling_params

DATA_DIR = Path(__file__).resolve().parent.parent / "data"
CHINCHILLA_CSV = DATA_DIR / "chinchilla" / "chinchilla_extracted.csv"
PUBLISHED_CSV = DATA_DIR / "reference" / "scaling_published.csv"  # published fits, with sources
# Chinchilla's nine isoFLOP budgets (Figure 3 legend); Epoch's points cluster 2-9 % below them.
CHINCHILLA_BUDGETS = (6e18, 1e19, 3e19, 6e19, 1e20, 3e20, 6e20, 1e21, 3e21)


class ScalingWarning(UserWarning):
    """Data a fit flagged or left out; the message says which and why."""


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


def percentile_interval(samples: Iterable[float], ci: float = 0.8) -> tuple[float, float]:
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
        return percentile_interval(self.bootstrap[name], self.ci)

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

    def n_opt_interval(self, flops: float) -> tuple[float, float]:
        """Bootstrap percentile interval (level `ci`) of N_opt at compute `flops`."""
        if self.bootstrap is None:
            raise ValueError("no bootstrap: refit with fit_isoflop(..., n_bootstrap=200)")
        log_n = self.bootstrap["log_n_coef"] + self.bootstrap["a"] * math.log(flops)
        return percentile_interval(np.exp(log_n), self.ci)

    def tokens_per_param_interval(self, flops: float) -> tuple[float, float]:
        """Bootstrap percentile interval (level `ci`) of D_opt/N_opt at compute `flops`."""
        if self.bootstrap is None:
            raise ValueError("no bootstrap: refit with fit_isoflop(..., n_bootstrap=200)")
        boot = self.bootstrap
        log_ratio = (
            boot["log_d_coef"] - boot["log_n_coef"] + (boot["b"] - boot["a"]) * math.log(flops)
        )
        return percentile_interval(np.exp(log_ratio), self.ci)

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
    tokens_col: str | None = "auto",
    n_bootstrap: int = 0,
    seed: int = 0,
    ci: float = 0.8,
) -> IsoFlopFit:
    """Chinchilla's Approach 2: a parabola in log N per budget, then N_opt ∝ C^a and D_opt ∝ C^b.

    D_opt comes from the budget's own runs (log D interpolated linearly in log N at N_opt), which
    respects whatever FLOPs per token and whatever compute the runs actually used. The default
    `tokens_col="auto"` reads the runs' tokens from the first of TOKEN_COLUMNS the data has, and
    only when it has none falls back to the nominal C = 6·N_opt·D_opt (`tokens_rule` says which);
    `tokens_col=None` forces that fallback. The bootstrap resamples runs with replacement within
    each budget (seeded) and reports percentile intervals at level `ci` (0.8: Chinchilla's
    10th/90th).
    Rows whose budget is NaN (runs on no isoFLOP line) are ignored.
    """
    if tokens_col == "auto":
        tokens_col = next((c for c in TOKEN_COLUMNS if c in df.columns), None)
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


TOKEN_COLUMNS = ("tokens", "D")  # the runs' own token counts, where a table records them
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
    x, f, _ = batched_lbfgs(fun, starts, ftol=1e-6, gtol=1e-9, max_iter=300)
    f = torch.where(torch.isfinite(f), f, torch.inf)
    best = torch.argsort(f)[: min(16, len(f))]
    x, f, _ = batched_lbfgs(fun, x[best], ftol=1e-14, gtol=1e-12, max_iter=2000)
    i = int(torch.argmin(f))
    theta = x[i]
    la, lb, le, alpha, beta = (float(v) for v in theta)
    se, boot = None, None
    if n_bootstrap > 0:
        rng = np.random.default_rng(seed)
        idx = rng.integers(0, len(n), size=(n_bootstrap, len(n)))
        counts = np.stack([np.bincount(row, minlength=len(n)) for row in idx])
        fun.weights = torch.as_tensor(counts, dtype=torch.float64)
        xb, _, _ = batched_lbfgs(
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


def load_published() -> pd.DataFrame:
    """Published scaling-law numbers (study, group, quantity, value, se, …) with their sources."""
    return pd.read_csv(PUBLISHED_CSV)


def published_values(study: str, group: str, column: str = "value") -> dict[str, float]:
    """One group of the published numbers as quantity → value (or se, …), e.g. a fitted law."""
    table = load_published()
    rows = table[(table.study == study) & (table.group == group) & table.item.isna()]
    return dict(zip(rows.quantity, rows[column].astype(float)))


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

    def optimum_interval(
        self, fit: Approach3Fit, flops: float, convention: str = "matmul", ci: float = 0.8
    ) -> dict[str, Any]:
        """A fit's optimum along the dial at `flops` (n_opt, D/N ratio), with its bootstrap's
        percentile intervals at level `ci` (n_interval, ratio_interval)."""
        if fit.bootstrap is None:
            raise ValueError("no bootstrap: refit with fit_approach3(..., n_bootstrap=200)")
        point = self.optimum(fit, flops, convention)
        boot = self.optimum(fit.bootstrap, flops, convention)
        return {
            "n_opt": point["n_opt"][0],
            "n_interval": percentile_interval(boot["n_opt"], ci),
            "ratio": point["d_opt"][0] / point["n_opt"][0],
            "ratio_interval": percentile_interval(boot["d_opt"] / boot["n_opt"], ci),
        }


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
