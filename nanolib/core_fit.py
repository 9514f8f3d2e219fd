"""GPT-3's CORE estimated from GPT-2, and CORE as a function of training compute.

The calibration (nanochat's `dev/estimate_gpt3_core.ipynb` method, our code): GPT-3 was never
scored on CORE, but its paper reports six of CORE's tasks in the same regime (`SIX_TASKS`). On
GPT-2, whose CORE is measured, fit CORE from those six centred accuracies two ways — a line on
their mean and a ridge regression on each — and apply both to GPT-3's six; the estimate is
their mean, the band every alternative (PIQA alone, each GPT-2 model left out).

CORE against compute: the saturating power law CORE = 1 − a·C^(−b) nanochat fits to its
miniseries (`fit_core_vs_flops`, with a bootstrap), inverted to the FLOPs, hours and dollars
that reach a target CORE (`extrapolation_table`, costs from `nanolib.device.gpu_cost`).
Published numbers come from `data/reference/` (`load_reference`).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import pandas as pd

from nanolib.config import DeviceCost, book_root
from nanolib.core_bundle import core_tasks
from nanolib.device import gpu_cost

REFERENCE_DIR = "data/reference"
# The six tasks that CORE and the GPT-3 paper both report in the same regime (nanochat's choice).
SIX_TASKS = (
    "hellaswag_zeroshot",
    "lambada_openai",
    "hellaswag",
    "piqa",
    "arc_easy",
    "arc_challenge",
)
# GPT-3 scored ARC with unconditional-probability normalisation (its §2.4), CORE does not: the
# four of the six that both score alike, for a variant of the calibration without ARC.
FOUR_TASKS = tuple(t for t in SIX_TASKS if not t.startswith("arc_"))


# ------------------------------------------------------------------------------------------------
# GPT-3 calibration (nanochat dev/estimate_gpt3_core.ipynb's method, our code)


def load_reference(name: str) -> pd.DataFrame:
    """A published-numbers table from data/reference/<name>.csv."""
    return pd.read_csv(book_root() / REFERENCE_DIR / f"{name}.csv")


def _centered(frame: pd.DataFrame, tasks: Sequence[str] = SIX_TASKS) -> np.ndarray:
    """Centred accuracies (rows × tasks) from accuracies in percent, v1 baselines."""
    base = {t.label: t.baseline_v1 for t in core_tasks()}
    b = np.array([base[t] for t in tasks])
    return (frame[list(tasks)].to_numpy(float) / 100 - b) / (1 - b)


def _r2(y: np.ndarray, pred: np.ndarray) -> float:
    return float(1 - np.sum((y - pred) ** 2) / np.sum((y - y.mean()) ** 2))


def fit_ridge(x: np.ndarray, y: np.ndarray, alpha: float) -> tuple[np.ndarray, float]:
    """Ridge regression with an unpenalised intercept: (weights, intercept)."""
    xm, ym = x.mean(0), y.mean()
    xc = x - xm
    w = np.linalg.solve(xc.T @ xc + alpha * np.eye(x.shape[1]), xc.T @ (y - ym))
    return w, float(ym - xm @ w)


def _predict_both(x2: np.ndarray, y2: np.ndarray, x3: np.ndarray, alpha: float) -> tuple:
    """Predictions for x3 of the simple and the ridge fit on (x2, y2)."""
    slope, intercept = np.polyfit(x2.mean(1), y2, 1)
    w, b = fit_ridge(x2, y2, alpha)
    return slope * x3.mean(1) + intercept, x3 @ w + b


@dataclass(frozen=True)
class Gpt3Calibration:
    """The fits from GPT-2 (six centred accuracies → CORE) and GPT-3's estimated CORE per size."""

    simple: tuple[float, float]  # slope, intercept of CORE on the six-task mean
    simple_r2: float
    ridge_weights: dict[str, float]
    ridge_intercept: float
    ridge_r2: float
    gpt2: pd.DataFrame  # per GPT-2 model: six-task mean, CORE, both fits' predictions
    gpt3: (
        pd.DataFrame
    )  # per GPT-3 size: six_mean, simple, ridge, piqa_only, final, loo_*, low, high


def calibrate_gpt3(
    calibration: pd.DataFrame | None = None,
    alpha: float = 0.01,
    tasks: Sequence[str] = SIX_TASKS,
) -> Gpt3Calibration:
    """Fit CORE on GPT-2's task scores two ways; GPT-3's CORE is the mean of both fits.

    The band (low, high) spans every alternative: the single-task PIQA fit and the final
    estimate refitted with each GPT-2 model left out in turn. `tasks` (a subset of SIX_TASKS
    that includes PIQA) picks the tasks; `six_mean` is then the mean over those.
    """
    unknown = [t for t in tasks if t not in SIX_TASKS]
    if unknown or "piqa" not in tasks:
        raise ValueError(f"tasks must be a subset of {SIX_TASKS} with 'piqa'; got {list(tasks)}")
    df = load_reference("gpt_core_calibration") if calibration is None else calibration
    g2, g3 = df[df.family == "gpt2"], df[df.family == "gpt3"]
    x2, y2, x3 = _centered(g2, tasks), g2.core_v1.to_numpy(float), _centered(g3, tasks)
    slope, intercept = np.polyfit(x2.mean(1), y2, 1)
    w, b = fit_ridge(x2, y2, alpha)
    simple3, ridge3 = slope * x3.mean(1) + intercept, x3 @ w + b
    final = (simple3 + ridge3) / 2
    p = list(tasks).index("piqa")
    piqa = np.polyval(np.polyfit(x2[:, p], y2, 1), x3[:, p])
    loo = []
    for j in range(len(y2)):
        keep = np.arange(len(y2)) != j
        s, r = _predict_both(x2[keep], y2[keep], x3, alpha)
        loo.append((s + r) / 2)
    loo = np.vstack(loo)
    spread = np.vstack([simple3, ridge3, piqa, loo])
    gpt2 = pd.DataFrame(
        {
            "model": g2.model.to_numpy(),
            "six_mean": x2.mean(1),
            "core": y2,
            "simple": slope * x2.mean(1) + intercept,
            "ridge": x2 @ w + b,
        }
    )
    gpt3 = pd.DataFrame(
        {
            "model": g3.model.to_numpy(),
            "params_M": g3.params_M.to_numpy(),
            "six_mean": x3.mean(1),
            "simple": simple3,
            "ridge": ridge3,
            "piqa_only": piqa,
            "final": final,
            "loo_low": loo.min(0),
            "loo_high": loo.max(0),
            "low": spread.min(0),
            "high": spread.max(0),
        }
    )
    return Gpt3Calibration(
        simple=(float(slope), float(intercept)),
        simple_r2=_r2(y2, gpt2.simple.to_numpy()),
        ridge_weights=dict(zip(tasks, map(float, w))),
        ridge_intercept=b,
        ridge_r2=_r2(y2, gpt2.ridge.to_numpy()),
        gpt2=gpt2,
        gpt3=gpt3,
    )


def estimate_gpt3_core() -> dict[str, float]:
    """Our estimate of each GPT-3 size's CORE (v1), e.g. {"GPT-3 Small": 0.148, …}."""
    table = calibrate_gpt3().gpt3
    return dict(zip(table.model, map(float, table.final)))


# ------------------------------------------------------------------------------------------------
# CORE vs training compute


def core_at_flops(flops: Any, a: float, b: float) -> Any:
    """CORE = 1 − a·C^(−b): the saturating power law nanochat fits to its miniseries."""
    return 1.0 - a * np.asarray(flops, dtype=float) ** (-b)


def fit_core_vs_flops(
    flops: Sequence[float], core: Sequence[float], space: str = "core"
) -> tuple[float, float]:
    """Fit CORE = 1 − a·C^(−b); returns (a, b).

    space="log" is the straight line log(1 − CORE) = log a − b·log C. space="core" (default,
    what nanochat's published fit matches) minimises the squared error in CORE itself: for each
    b the best a is linear least squares, and b is found by a golden-section search started from
    the log-space fit.
    """
    c, y = np.asarray(flops, dtype=float), np.asarray(core, dtype=float)
    if np.any(y >= 1) or len(c) < 2:
        raise ValueError("need at least two points with CORE < 1")
    slope, intercept = np.polyfit(np.log(c), np.log(1 - y), 1)
    a, b = float(np.exp(intercept)), float(-slope)
    if space == "log":
        return a, b
    if space != "core":
        raise ValueError(f"space must be 'core' or 'log', got {space!r}")

    def best_a(bb: float) -> tuple[float, float]:
        f = c ** (-bb)
        aa = float(np.sum((1 - y) * f) / np.sum(f * f))
        return aa, float(np.sum((1 - y - aa * f) ** 2))

    lo, hi = b / 4, b * 4
    g = (np.sqrt(5) - 1) / 2
    for _ in range(200):
        m1, m2 = hi - g * (hi - lo), lo + g * (hi - lo)
        if best_a(m1)[1] < best_a(m2)[1]:
            hi = m2
        else:
            lo = m1
    b = (lo + hi) / 2
    return best_a(b)[0], float(b)


def bootstrap_core_fit(
    flops: Sequence[float], core: Sequence[float], n_boot: int = 500, seed: int = 0
) -> np.ndarray:
    """(a, b) of fit_core_vs_flops on n_boot resamples of the points drawn with replacement.

    A resample with fewer than three distinct FLOPs values says nothing about a curve and is
    drawn again; at least three distinct points are needed.
    """
    c, y = np.asarray(flops, dtype=float), np.asarray(core, dtype=float)
    if len(np.unique(c)) < 3:
        raise ValueError(f"need at least three distinct FLOPs values, got {len(np.unique(c))}")
    rng = np.random.default_rng(seed)
    fits = []
    while len(fits) < n_boot:
        i = rng.integers(0, len(c), len(c))
        if len(np.unique(c[i])) >= 3:
            fits.append(fit_core_vs_flops(c[i], y[i]))
    return np.array(fits)


def flops_for_core(target: Any, a: float, b: float) -> Any:
    """Training FLOPs at which 1 − a·C^(−b) reaches target CORE: (a / (1 − target))^(1/b)."""
    return (a / (1.0 - np.asarray(target, dtype=float))) ** (1.0 / b)


def core_targets() -> dict[str, float]:
    """CORE to reach: GPT-2's four measured scores and our eight GPT-3 estimates."""
    df = load_reference("gpt_core_calibration")
    gpt2 = df[df.family == "gpt2"]
    return {**dict(zip(gpt2.model, map(float, gpt2.core_v1))), **estimate_gpt3_core()}


def extrapolation_table(
    a: float,
    b: float,
    targets: Mapping[str, float] | None = None,
    gpus: int = 8,
    cost: DeviceCost | None = None,
) -> pd.DataFrame:
    """FLOPs, hours on a node of `gpus` GPUs and dollars (at `cost`, default book.yml's) to reach
    each target CORE."""
    targets = core_targets() if targets is None else targets
    core = np.array(list(targets.values()), dtype=float)
    flops = flops_for_core(core, a, b)
    spent = gpu_cost(flops, gpus, cost)
    return pd.DataFrame(
        {
            "target": list(targets),
            "core": core,
            "flops": flops,
            "hours": spent["hours"],
            "days": spent["hours"] / 24,
            "dollars": spent["dollars"],
        }
    )
