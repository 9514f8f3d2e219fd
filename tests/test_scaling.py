"""Scaling-law fits: recovery of a known law, flagged budgets, determinism, Chinchilla/Epoch
reproduction, and the sweep CSV's validation."""

from __future__ import annotations

import hashlib
import math
import re
import warnings

import numpy as np
import pandas as pd
import pytest

from nanolib import scaling
from nanolib.scaling import (
    ScalingWarning,
    approach3_objective,
    depth_for_budget,
    fit_approach3,
    fit_isoflop,
    load_chinchilla,
    percentile_interval,
)

# Epoch's estimate (Besiroglu et al. 2024), rounded: the "true" law of the synthetic data.
TRUE = {"E": 1.82, "A": 482.0, "B": 2085.0, "alpha": 0.348, "beta": 0.366}
TRUE_A = TRUE["beta"] / (TRUE["alpha"] + TRUE["beta"])
TRUE_B = TRUE["alpha"] / (TRUE["alpha"] + TRUE["beta"])
TRUE_G = (TRUE["alpha"] * TRUE["A"] / (TRUE["beta"] * TRUE["B"])) ** (
    1 / (TRUE["alpha"] + TRUE["beta"])
)
BUDGETS = tuple(np.logspace(17, 21, 9))

# Epoch's rerun of Hoffmann's recipe on the 240 points (data_analysis.ipynb, cell 18).
EPOCH = {"A": 477.84, "B": 2143.86, "E": 1.8172, "alpha": 0.34731, "beta": 0.36718}
EPOCH_OBJECTIVE = 0.00101827
HOFFMANN = {"E": 1.69, "A": 406.4, "B": 410.7, "alpha": 0.34, "beta": 0.28}  # eq. 10, rounded


def true_loss(n: np.ndarray, d: np.ndarray) -> np.ndarray:
    return TRUE["E"] + TRUE["A"] / n ** TRUE["alpha"] + TRUE["B"] / d ** TRUE["beta"]


def isoflop_frame(
    budgets=BUDGETS, per_budget: int = 9, centre: float = 1.3, noise: float = 1e-4, seed: int = 0
) -> pd.DataFrame:
    """Runs on an isoFLOP grid: per budget, N log-spaced over ±0.6 dex around centre·N_opt(C)."""
    rng = np.random.default_rng(seed)
    frames = []
    for c in budgets:
        n = centre * TRUE_G * (c / 6) ** TRUE_A * np.logspace(-0.6, 0.6, per_budget)
        d = c / (6 * n)
        loss = true_loss(n, d) * np.exp(noise * rng.standard_normal(len(n)))
        frames.append(pd.DataFrame({"budget": c, "N": n, "D": d, "loss": loss}))
    return pd.concat(frames, ignore_index=True)


@pytest.fixture(scope="module")
def synthetic() -> pd.DataFrame:
    return isoflop_frame()


@pytest.fixture(scope="module")
def synthetic_fit(synthetic):
    return fit_approach3(synthetic["N"], synthetic["D"], synthetic["loss"])


@pytest.fixture(scope="module")
def chinchilla() -> pd.DataFrame:
    return load_chinchilla()


@pytest.fixture(scope="module")
def chinchilla_fit(chinchilla):
    return fit_approach3(chinchilla["N"], chinchilla["D"], chinchilla["loss"])


# --- Approach 3 -------------------------------------------------------------------------------


def test_approach3_recovers_known_law(synthetic_fit):
    # 81 points, loss noise 1e-4 (relative): every parameter within 0.5 % (we see ≤ 0.1 %).
    for name, value in TRUE.items():
        assert getattr(synthetic_fit, name) == pytest.approx(value, rel=5e-3), name
    assert synthetic_fit.a == pytest.approx(TRUE_A, abs=1e-3)
    assert synthetic_fit.b == pytest.approx(TRUE_B, abs=1e-3)
    assert synthetic_fit.n_starts == 4500 and synthetic_fit.n_points == 81


def test_approach3_frontier_is_the_isoflop_minimum(synthetic_fit):
    c = np.array([1e19, 1e21, 1e23])
    n, d = synthetic_fit.n_opt(c), synthetic_fit.d_opt(c)
    np.testing.assert_allclose(6 * n * d, c, rtol=1e-12)
    np.testing.assert_allclose(synthetic_fit.tokens_per_param(c), d / n, rtol=1e-12)
    for k in (0.9, 1.1):  # moving off N_opt along C = 6ND raises the predicted loss
        assert np.all(synthetic_fit.loss(n * k, d / k) > synthetic_fit.loss(n, d))
    frame = synthetic_fit.frontier(c)
    assert list(frame.columns) == ["flops", "n_opt", "d_opt", "tokens_per_param", "loss"]
    assert isinstance(synthetic_fit.n_opt(1e21), float)


def test_chinchilla_reproduces_epochs_rerun_of_hoffmanns_recipe(chinchilla, chinchilla_fit):
    # We get A 477.83, B 2143.42, E 1.81722, α 0.347311, β 0.367172, objective 0.0010182740:
    # the same optimum as Epoch's L-BFGS-B (theirs stopped a hair earlier: 0.0010182748 at their
    # printed parameters).
    fit = chinchilla_fit
    assert len(chinchilla) == 240 and fit.n_points == 240
    assert fit.A == pytest.approx(EPOCH["A"], rel=1e-3)
    assert fit.B == pytest.approx(EPOCH["B"], rel=1e-3)
    assert fit.E == pytest.approx(EPOCH["E"], abs=1e-4)
    assert fit.alpha == pytest.approx(EPOCH["alpha"], abs=5e-5)
    assert fit.beta == pytest.approx(EPOCH["beta"], abs=5e-5)
    assert fit.objective == pytest.approx(EPOCH_OBJECTIVE, abs=5e-9)
    at_epoch = approach3_objective(EPOCH, chinchilla["N"], chinchilla["D"], chinchilla["loss"])
    assert fit.objective <= at_epoch
    # Hoffmann's published constants fit the same points about four times worse.
    at_paper = approach3_objective(HOFFMANN, chinchilla["N"], chinchilla["D"], chinchilla["loss"])
    assert at_paper > 3 * fit.objective
    # …and the implied frontier is ~20 tokens per parameter, not Hoffmann's ~50.
    assert 18 < fit.tokens_per_param(1e21) < 25


def test_approach3_bootstrap_is_seeded(synthetic):
    grid = scaling.chinchilla_grid()[::150]  # 30 starts keep this quick
    args = (synthetic["N"], synthetic["D"], synthetic["loss"])
    first = fit_approach3(*args, grid=grid, n_bootstrap=12, seed=3)
    again = fit_approach3(*args, grid=grid, n_bootstrap=12, seed=3)
    other = fit_approach3(*args, grid=grid, n_bootstrap=12, seed=4)
    pd.testing.assert_frame_equal(first.bootstrap, again.bootstrap)
    assert first.se == again.se and (first.E, first.A) == (again.E, again.A)
    assert not first.bootstrap.equals(other.bootstrap)
    assert set(first.se) == {"E", "A", "B", "alpha", "beta", "a", "b"}
    assert 0 < first.se["alpha"] < 0.05


def test_approach3_rejects_bad_inputs():
    with pytest.raises(ValueError, match=r"loss\[1\] = -1.0"):
        fit_approach3([1e8] * 6, [1e9] * 6, [3.0, -1.0, 3.0, 3.0, 3.0, 3.0])
    with pytest.raises(ValueError, match="differ in length"):
        fit_approach3([1e8] * 6, [1e9] * 5, [3.0] * 6)
    with pytest.raises(ValueError, match="unknown grid"):
        fit_approach3([1e8] * 6, [1e9] * 6, [3.0] * 6, grid="hoffmann")


# --- Approach 2 -------------------------------------------------------------------------------


def test_isoflop_recovers_true_exponents(synthetic):
    with warnings.catch_warnings():
        warnings.simplefilter("error", ScalingWarning)  # nothing to flag on a clean grid
        fit = fit_isoflop(synthetic.drop(columns="D"), "N", "loss", "budget")
    # The grid sits off-centre (1.3·N_opt) by the same factor at every budget, so the parabola's
    # bias is the same everywhere and the exponents come out within 2e-3 (we see 2e-5).
    assert fit.a == pytest.approx(TRUE_A, abs=2e-3)
    assert fit.b == pytest.approx(TRUE_B, abs=2e-3)
    assert fit.budgets["ok"].all() and len(fit.budgets) == len(BUDGETS)
    n_true = TRUE_G * (np.asarray(BUDGETS) / 6) ** TRUE_A
    np.testing.assert_allclose(fit.budgets["n_opt"], n_true, rtol=0.05)
    np.testing.assert_allclose(fit.budgets["tokens_per_param"], fit.budgets["d_opt"] / n_true, 0.05)
    assert fit.tokens_rule == "C/(6N)"


def test_isoflop_tokens_from_a_column(synthetic):
    # D interpolated from the runs themselves equals C/(6N) when the runs obey C = 6ND.
    by_6nd = fit_isoflop(synthetic, "N", "loss", "budget", tokens_col=None)
    by_col = fit_isoflop(synthetic, "N", "loss", "budget", tokens_col="D")
    np.testing.assert_allclose(by_col.budgets["d_opt"], by_6nd.budgets["d_opt"], rtol=1e-9)
    assert by_col.tokens_rule == "column 'D'" and by_6nd.tokens_rule == "C/(6N)"


def test_isoflop_uses_the_runs_own_tokens_by_default(synthetic):
    # Runs that spent less than their nominal budget: the default reads their own D, not C/(6N).
    short = synthetic.assign(D=synthetic["D"] * 0.9)
    default = fit_isoflop(short, "N", "loss", "budget")
    nominal = fit_isoflop(short, "N", "loss", "budget", tokens_col=None)
    assert default.tokens_rule == "column 'D'"
    np.testing.assert_allclose(default.budgets["d_opt"], 0.9 * nominal.budgets["d_opt"], rtol=1e-9)
    renamed = fit_isoflop(short.rename(columns={"D": "tokens"}), "N", "loss", "budget")
    assert renamed.tokens_rule == "column 'tokens'"
    with pytest.raises(KeyError, match="'tokens'"):
        fit_isoflop(short, "N", "loss", "budget", tokens_col="tokens")


def test_isoflop_flags_and_excludes_bad_budgets(synthetic):
    two = isoflop_frame(budgets=[3e21], per_budget=2)
    edge = isoflop_frame(budgets=[1e22], centre=8.0)  # every N above N_opt: loss rises with N
    down = pd.DataFrame({"budget": 3e22, "N": [1e9, 2e9, 4e9, 8e9], "loss": [2.0, 2.2, 2.2, 2.0]})
    data = pd.concat([synthetic, two, edge, down], ignore_index=True)
    with pytest.warns(ScalingWarning) as record:  # `down` records no D: tokens from C/(6N)
        fit = fit_isoflop(data, "N", "loss", "budget", tokens_col=None)
    messages = " | ".join(str(w.message) for w in record)
    assert "3e+21" in messages and "1e+22" in messages and "3e+22" in messages
    assert messages.count("excluded from the power-law fit") == 3
    flags = fit.budgets.set_index("budget")["flag"]
    assert flags[3e21] == "too_few_points"
    assert flags[1e22] in ("minimum_outside_range", "minimum_at_edge")
    assert flags[3e22] == "opens_downward"
    excluded = fit.excluded.set_index("budget")
    assert set(excluded.index) == {3e21, 1e22, 3e22}
    assert "needs at least 3" in excluded.loc[3e21, "reason"]
    assert "smaller" in excluded.loc[1e22, "reason"] or "beyond" in excluded.loc[1e22, "reason"]
    # The exponents come from the good budgets only: identical to the clean fit.
    clean = fit_isoflop(synthetic, "N", "loss", "budget")
    assert fit.a == pytest.approx(clean.a, abs=1e-12) and fit.b == pytest.approx(clean.b, 1e-12)


def test_isoflop_flags_an_unbracketed_minimum():
    # The vertex lies inside the sampled N, but the lowest loss is the smallest model's.
    n = 1e8 * np.exp(np.arange(5.0))
    data = pd.DataFrame({"budget": 1e19, "N": n, "loss": [1.00, 1.03, 1.04, 1.10, 1.30]})
    with pytest.warns(ScalingWarning) as record:
        fit = fit_isoflop(data, "N", "loss", "budget")
    assert "add smaller models" in str(record[0].message)
    assert fit.budgets["flag"].tolist() == ["minimum_at_edge"]
    assert "smaller end (N=1e+08)" in fit.budgets["reason"].iloc[0]


def test_isoflop_with_one_usable_budget_warns_and_gives_nan():
    data = isoflop_frame(budgets=[1e19, 1e20])
    data = data[(data["budget"] == 1e19) | (data.index % 9 < 2)]
    with pytest.warns(ScalingWarning) as record:
        fit = fit_isoflop(data, "N", "loss", "budget")
    assert "only 1 usable budget" in str(record[-1].message)
    assert math.isnan(fit.a) and math.isnan(fit.n_opt(1e19))


def test_isoflop_bootstrap_is_seeded(synthetic):
    data = isoflop_frame(noise=3e-3)
    first = fit_isoflop(data, "N", "loss", "budget", n_bootstrap=200, seed=1)
    again = fit_isoflop(data, "N", "loss", "budget", n_bootstrap=200, seed=1)
    other = fit_isoflop(data, "N", "loss", "budget", n_bootstrap=200, seed=2)
    pd.testing.assert_frame_equal(first.bootstrap, again.bootstrap)
    pd.testing.assert_frame_equal(first.budgets, again.budgets)
    assert not first.bootstrap.equals(other.bootstrap)
    lo, hi = first.interval("a")
    assert lo < first.a < hi and hi - lo < 0.1
    assert (first.budgets["tokens_per_param_lo"] <= first.budgets["tokens_per_param_hi"]).all()
    lo, hi = first.n_opt_interval(1e19)
    assert lo < first.n_opt(1e19) < hi
    with pytest.raises(ValueError, match="n_bootstrap"):
        fit_isoflop(data, "N", "loss", "budget").interval("a")


def test_percentile_interval():
    assert percentile_interval(range(101)) == pytest.approx((10.0, 90.0))
    assert percentile_interval([1.0, float("nan"), 3.0], ci=1.0) == (1.0, 3.0)
    lo, hi = percentile_interval([float("nan")] * 3)
    assert math.isnan(lo) and math.isnan(hi)


def test_isoflop_parabola_passes_near_its_points(synthetic):
    fit = fit_isoflop(synthetic, "N", "loss", "budget")
    one = synthetic[synthetic["budget"] == BUDGETS[4]]
    np.testing.assert_allclose(fit.parabola(BUDGETS[4], one["N"]), one["loss"], rtol=3e-3)
    with pytest.raises(KeyError, match="no budget"):
        fit.parabola(123.0, 1e9)


def test_isoflop_on_chinchilla_matches_table_2(chinchilla):
    fit = fit_isoflop(chinchilla, "N", "loss", "budget", tokens_col="D")
    assert fit.budgets["ok"].all() and len(fit.budgets) == 9
    # Hoffmann et al. Table 2, Approach 2: a = 0.49 (0.462, 0.534), b = 0.51 (0.483, 0.529).
    assert 0.46 < fit.a < 0.54 and 0.46 < fit.b < 0.54
    assert 15 < fit.tokens_per_param(1e21) < 30


# --- data, frontier, depth --------------------------------------------------------------------


def test_chinchilla_data_is_epochs_file():
    readme = (scaling.CHINCHILLA_CSV.parent / "README.md").read_text()
    (expected,) = re.findall(r"`([0-9a-f]{64})`", readme)
    assert hashlib.sha256(scaling.CHINCHILLA_CSV.read_bytes()).hexdigest() == expected


def test_load_chinchilla(chinchilla):
    assert list(chinchilla.columns) == ["N", "C", "D", "loss", "budget"]
    assert len(chinchilla) == 240 and chinchilla["loss"].max() < 3.447
    np.testing.assert_allclose(chinchilla["D"], chinchilla["C"] / (6 * chinchilla["N"]))
    assert set(chinchilla["budget"].dropna()) == set(scaling.CHINCHILLA_BUDGETS)
    assert len(load_chinchilla(drop_highest=0)) == 245


def test_published_reference_has_sources():
    path = scaling.DATA_DIR / "reference" / "scaling_published.csv"
    pub = pd.read_csv(path)
    assert pub["source"].notna().all() and pub["value"].notna().all()
    replication = pub[pub["group"] == "hoffmann_recipe_replication"].set_index("quantity")["value"]
    assert {k: replication[k] for k in EPOCH} == EPOCH
    assert replication["objective"] == EPOCH_OBJECTIVE
    rounded = pub[pub["group"] == "eq10_rounded"].set_index("quantity")["value"]
    assert rounded.to_dict() == HOFFMANN


def test_depth_for_budget():
    def params(depth: int) -> float:
        return 1e6 * depth**2

    def flops_per_token(depth: int) -> float:
        return 6 * params(depth)

    depths = range(4, 21)
    # 20 tokens/param at depth 10 (N = 1e8): C = 6·N·20·N = 1.2e18.
    assert depth_for_budget(1.2e18, depths, params, flops_per_token, 20.0) == 10
    assert depth_for_budget(1.3e18, depths, params, flops_per_token, lambda c: 20.0) == 10
    assert depth_for_budget(1e30, depths, params, flops_per_token, 20.0) == 20
    assert depth_for_budget(1.0, depths, params, flops_per_token, 20.0) == 4
