"""nanolib.core_fit: GPT-3's CORE from GPT-2, CORE against FLOPs, and the cost extrapolation."""

from __future__ import annotations

import numpy as np
import pytest

from nanolib import core_fit as core
from nanolib.config import load_book


def test_gpt3_estimates_reproduce_nanochat():
    published = core.load_reference("gpt3_core_nanochat").set_index("model")
    ours = core.estimate_gpt3_core()
    assert list(ours) == list(published.index)
    errors = {m: abs(ours[m] - published.final[m]) for m in ours}
    assert max(errors.values()) < 0.001  # the issue asks for ±0.01; we get 0.00006
    cal = core.calibrate_gpt3()
    table = cal.gpt3.set_index("model")
    for col in ("simple", "ridge", "piqa_only"):
        assert np.allclose(table[col], published[col], atol=0.0002), col
    assert cal.simple == pytest.approx((0.6639, 0.0168), abs=0.0002)
    assert cal.ridge_intercept == pytest.approx(0.0269, abs=0.0002)
    published_w = [0.1155, 0.1000, 0.1226, 0.0959, 0.1023, 0.0513]
    assert list(cal.ridge_weights.values()) == pytest.approx(published_w, abs=0.0006)
    assert (table.low <= table.final).all() and (table.final <= table.high).all()


def test_calibration_without_arc_uses_four_tasks():
    four = core.calibrate_gpt3(tasks=core.FOUR_TASKS)
    six = core.calibrate_gpt3()
    assert core.FOUR_TASKS == ("hellaswag_zeroshot", "lambada_openai", "hellaswag", "piqa")
    assert list(four.ridge_weights) == list(core.FOUR_TASKS)
    # PIQA alone does not depend on the other tasks; the fits that use ARC do.
    np.testing.assert_allclose(four.gpt3.piqa_only, six.gpt3.piqa_only)
    assert not np.allclose(four.gpt3.final, six.gpt3.final)
    assert (four.gpt3.low <= four.gpt3.final).all() and (four.gpt3.final <= four.gpt3.high).all()
    with pytest.raises(ValueError, match="piqa"):
        core.calibrate_gpt3(tasks=("arc_easy", "hellaswag"))


def miniseries():
    df = core.load_reference("nanochat_miniseries_v1")
    return df[df.depth >= 12]


def test_fit_core_vs_flops_recovers_nanochat_fit():
    df = miniseries()
    a, b = core.fit_core_vs_flops(df.flops_derived, df.core_v1)
    assert a == pytest.approx(3.7555, abs=0.002) and b == pytest.approx(0.0344, abs=0.00005)
    a_log, b_log = core.fit_core_vs_flops(df.flops_derived, df.core_v1, space="log")
    assert a_log == pytest.approx(3.7555, rel=0.02) and b_log == pytest.approx(0.0344, rel=0.02)
    flops = np.logspace(17, 21, 7)
    exact = core.core_at_flops(flops, 2.5, 0.03)
    for space in ("core", "log"):
        assert core.fit_core_vs_flops(flops, exact, space) == pytest.approx((2.5, 0.03), rel=1e-5)
    assert core.flops_for_core(core.core_at_flops(3e19, a, b), a, b) == pytest.approx(3e19)


def test_extrapolation_table_against_nanochat_and_gpt3():
    table = core.extrapolation_table(3.7555, 0.0344).set_index("target")
    assert len(table) == 12
    assert table.sort_values("core").flops.is_monotonic_increasing
    row = table.loc["GPT-2 XL"]
    assert row.flops == pytest.approx(2.9e20, rel=0.05)  # nanochat: 2.9e20, 22.7 h, $546
    assumed = load_book().cost_of("cuda")
    assert row.hours == pytest.approx(row.flops / (8 * assumed.flops_per_s) / 3600)
    assert row.dollars == pytest.approx(row.hours * 8 * assumed.dollars_per_hour)
    gpt3 = core.load_reference("gpt3_models").set_index("model")
    ratio = table.loc["GPT-3 175B"].flops / gpt3.train_flops["GPT-3 175B"]
    assert 1.5 < ratio < 2.0  # nanochat's "5.7e23 vs ~3e23"


def test_bootstrap_core_fit_brackets_the_fit():
    df = core.load_reference("nanochat_miniseries_v1")
    df = df[df.depth >= 12]
    fits = core.bootstrap_core_fit(df.flops_derived, df.core_v1, n_boot=50, seed=1)
    assert fits.shape == (50, 2)
    again = core.bootstrap_core_fit(df.flops_derived, df.core_v1, n_boot=50, seed=1)
    assert np.array_equal(fits, again)
    a, b = core.fit_core_vs_flops(df.flops_derived, df.core_v1)
    lo, hi = np.percentile(fits[:, 1], [5, 95])
    assert lo < b < hi
    with pytest.raises(ValueError, match="three distinct"):
        core.bootstrap_core_fit([1e18, 1e18, 2e18], [0.1, 0.1, 0.2])
