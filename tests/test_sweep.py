"""The isoFLOP sweep: the planner's arithmetic and refusals, a runner that survives SIGKILL, the
miniseries, and reading fits along a dial."""
# ruff: noqa: E402  (the offline switches must be set before datasets is imported)

import os

os.environ["HF_HUB_OFFLINE"] = "1"
os.environ["HF_DATASETS_OFFLINE"] = "1"

import json
import math
import shutil
import signal
import subprocess
import sys
import time
import warnings
from dataclasses import replace
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from nanolib.checkpoint import load_model, read_metrics
from nanolib.config import book_root
from nanolib.data import iter_texts
from nanolib.model import CONVENTIONS, config_for_depth, flops_per_token, scaling_params
from nanolib.scaling import Approach3Fit, Dial, ScalingWarning, fit_isoflop
from nanolib.sweep import (
    FAMILY_TOKENIZER,
    MODELS_CSV,
    SWEEP_COLUMNS,
    SWEEP_CSV,
    SweepFormatError,
    SweepPlanError,
    append_sweep_row,
    curve_crossings,
    depths_per_budget,
    family_tokenizer,
    fitted_family_ratio,
    plan_family,
    plan_isoflop,
    read_sweep,
    run_family,
    run_name,
    run_sweep,
)
from nanolib.tokenizer import Tokenizer
from nanolib.train import TrainConfig, TrainingError

from helpers import tiny_config

VOCAB = 512
ENV = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(book_root())}
# A run of the sweep below takes a few steps of a few milliseconds each.
BASE = dict(
    aspect_ratio=32,
    batch_tokens=1024,
    device_batch_size=16,
    warmup_steps=2,
    eval_every=0,
    checkpoint_every=3,
    num_samples=0,
)
DEPTHS = [1, 2]
STEPS_B1_D1 = 12  # the first budget buys depth 1 this many steps; the second budget 4 times more


def base_config(tokenizer_dir: Path, **kw) -> TrainConfig:
    return tiny_config(tokenizer_dir, **{**BASE, **kw})


def budgets(cfg: TrainConfig) -> list[float]:
    """Two budgets: depth 1 gets STEPS_B1_D1 steps at the first and 4× that at the second."""
    model = config_for_depth(1, VOCAB, cfg.seq_len, cfg.aspect_ratio, cfg.head_dim)
    one = float(flops_per_token(model)) * cfg.batch_tokens * STEPS_B1_D1
    return [one, 4 * one]


def sweep_in_subprocess(cfg: TrainConfig, sweep_dir: Path, **env) -> subprocess.Popen:
    """`run_sweep` in a fresh process (so that a SIGKILL ends it like a killed kernel)."""
    spec = {"base": cfg.__dict__, "budgets": budgets(cfg), "depths": DEPTHS, "dir": str(sweep_dir)}
    code = (
        "import json, sys\n"
        "from nanolib.sweep import plan_isoflop, run_sweep\n"
        "from nanolib.train import TrainConfig\n"
        "s = json.loads(sys.argv[1])\n"
        "base = TrainConfig(**s['base'])\n"
        f"planned = plan_isoflop(base, s['budgets'], s['depths'], {VOCAB})\n"
        "run_sweep(planned, base, s['dir'])\n"
    )
    return subprocess.Popen(
        [sys.executable, "-c", code, json.dumps(spec)],
        env={**ENV, **env},
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )


def finish(proc: subprocess.Popen, timeout: float = 300) -> tuple[int, str]:
    out, _ = proc.communicate(timeout=timeout)
    return proc.returncode, out


def csv_rows(sweep_dir: Path) -> list[str]:
    path = sweep_dir / SWEEP_CSV
    return path.read_text().splitlines()[1:] if path.exists() else []


def summary_of(sweep_dir: Path, budget: float, depth: int) -> dict:
    return json.loads((sweep_dir / run_name(budget, depth) / "summary.json").read_text())


# ------------------------------------------------------------------------------------------------
# the planner


def test_plan_spends_each_budget_in_whole_steps(tokenizer_dir):
    cfg = base_config(tokenizer_dir)
    bs = budgets(cfg)
    planned = plan_isoflop(cfg, bs, DEPTHS, VOCAB)
    assert list(zip(planned.budget, planned.depth)) == [(b, d) for b in bs for d in DEPTHS]
    assert planned.num_steps.tolist()[0::2] == [STEPS_B1_D1, 4 * STEPS_B1_D1]
    assert (planned.tokens == planned.num_steps * cfg.batch_tokens).all()
    assert (planned.flops == planned.flops_per_token * planned.tokens).all()
    # FLOPs miss the budget only by the rounding to whole steps
    assert ((planned.flops / planned.budget - 1).abs() <= 0.5 / planned.num_steps + 1e-12).all()
    for row in planned.itertuples():
        model = config_for_depth(row.depth, VOCAB, cfg.seq_len, cfg.aspect_ratio, cfg.head_dim)
        for c in CONVENTIONS:
            assert getattr(row, f"n_params_{c}") == scaling_params(model, c)


def test_plan_over_the_time_budget_is_rejected_with_the_numbers(tokenizer_dir):
    cfg = base_config(tokenizer_dir)
    bs = budgets(cfg)
    ok = plan_isoflop(cfg, bs, DEPTHS, VOCAB, flops_per_s=1e9, time_budget_s=1e6)
    total = ok.est_s.sum()
    assert total == pytest.approx(((ok.flops + ok.eval_flops) / 1e9).sum())
    with pytest.raises(SweepPlanError) as err:
        plan_isoflop(cfg, bs, DEPTHS, VOCAB, flops_per_s=1e9, time_budget_s=total / 2)
    msg = str(err.value)
    assert f"≈ {total:,.0f} s" in msg and f"time budget of {total / 2:,.0f} s" in msg
    assert f"largest budget, {bs[-1]:.3g}" in msg and "deepest depth, 2" in msg
    # one FLOP/s per depth: a depth without a measurement is named
    with pytest.raises(SweepPlanError, match=r"no measured FLOP/s for depth 2; measured: \[1\]"):
        plan_isoflop(cfg, bs, DEPTHS, VOCAB, flops_per_s={1: 1e9})


def test_plan_rejects_runs_inside_warmup_and_bad_grids(tokenizer_dir):
    cfg = base_config(tokenizer_dir, warmup_steps=20)
    with pytest.raises(SweepPlanError, match=r"buys 12 step\(s\) .* inside the 20-step LR warmup"):
        plan_isoflop(cfg, budgets(cfg), DEPTHS, VOCAB)
    with pytest.raises(SweepPlanError, match="positive and distinct"):
        plan_isoflop(base_config(tokenizer_dir), [1e9, 1e9], DEPTHS, VOCAB)
    with pytest.raises(SweepPlanError, match="needs budgets and depths"):
        plan_isoflop(base_config(tokenizer_dir), [], DEPTHS, VOCAB)


# ------------------------------------------------------------------------------------------------
# the runner


def test_sweep_killed_mid_run_resumes_without_redoing_or_losing_a_row(tokenizer_dir, tmp_path):
    cfg = base_config(tokenizer_dir)
    bs = budgets(cfg)
    sweep = tmp_path / "sweep"
    # Die at step 13: the two runs of the first budget (12 steps and fewer) finish; the first run
    # of the second budget (48 steps) is killed after step 13, its last checkpoint at step 12.
    rc, out = finish(sweep_in_subprocess(cfg, sweep, NANOBOOK_TEST_DIE="13"))
    assert rc == -signal.SIGKILL, out
    before = csv_rows(sweep)
    assert len(before) == 2
    killed = sweep / run_name(bs[1], 1)
    assert json.loads((killed / "meta.json").read_text())["step"] == 12
    finished = {p: p.read_bytes() for p in (sweep / run_name(bs[0], 1)).iterdir()}

    rc, out = finish(sweep_in_subprocess(cfg, sweep))
    assert rc == 0, out
    assert "2 of 4 runs already in" in out
    after = csv_rows(sweep)
    assert after[:2] == before and len(after) == 4  # nothing redone, nothing lost
    df = read_sweep(sweep / SWEEP_CSV)
    assert sorted(zip(df.budget, df.depth)) == sorted((b, d) for b in bs for d in DEPTHS)
    assert summary_of(sweep, bs[1], 1)["resumed_from"] == 12
    assert summary_of(sweep, bs[1], 2)["resumed_from"] is None
    steps = [r["step"] for r in read_metrics(killed) if "train_loss" in r]
    assert steps == list(range(1, 4 * STEPS_B1_D1 + 1))  # every step once, in order
    assert {p: p.read_bytes() for p in (sweep / run_name(bs[0], 1)).iterdir()} == finished
    assert not list(sweep.glob("*/optim_*.pt")), "a finished run keeps its weights only"
    assert list(sweep.glob("*/model_*.pt"))

    # A third call has nothing to do.
    again = run_sweep(plan_isoflop(cfg, bs, DEPTHS, VOCAB), cfg, sweep)
    assert csv_rows(sweep) == after and len(again) == 4


def test_run_finished_but_not_recorded_is_recorded_not_retrained(tokenizer_dir, tmp_path):
    cfg = base_config(tokenizer_dir)
    bs = budgets(cfg)
    sweep = tmp_path / "sweep"
    # Die right after the first run's final checkpoint, before its row is written.
    rc, out = finish(sweep_in_subprocess(cfg, sweep, NANOBOOK_TEST_DIE=str(STEPS_B1_D1)))
    assert rc == -signal.SIGKILL, out
    assert csv_rows(sweep) == []
    rc, out = finish(sweep_in_subprocess(cfg, sweep))
    assert rc == 0, out
    assert summary_of(sweep, bs[0], 1)["resumed_from"] == STEPS_B1_D1
    assert len(csv_rows(sweep)) == 4


def test_sweep_killed_at_random_moments_ends_with_every_row_once(tokenizer_dir, tmp_path):
    cfg = base_config(tokenizer_dir)
    sweep = tmp_path / "sweep"
    for delay in (2.5, 3.0, 3.5):  # process start-up (imports) takes about 2 s
        proc = sweep_in_subprocess(cfg, sweep)
        time.sleep(delay)
        proc.send_signal(signal.SIGKILL)
        proc.communicate()
    rc, out = finish(sweep_in_subprocess(cfg, sweep))
    assert rc == 0, out
    df = read_sweep(sweep / SWEEP_CSV)
    keys = list(zip(df.budget, df.depth))
    assert sorted(keys) == sorted((b, d) for b in budgets(cfg) for d in DEPTHS)


def test_resuming_with_another_configuration_is_refused(tokenizer_dir, tmp_path):
    cfg = base_config(tokenizer_dir)
    bs = budgets(cfg)[:1]
    run_sweep(plan_isoflop(cfg, bs, [1], VOCAB), cfg, tmp_path)
    changed = replace(cfg, seq_len=32)
    with pytest.raises(SweepFormatError, match=r"another configuration \(seq_len: 64 → 32\)"):
        run_sweep(plan_isoflop(changed, bs, [1], VOCAB), changed, tmp_path)
    # what does not change the trajectory may differ (here: evaluation size and output folders)
    run_sweep(plan_isoflop(cfg, bs, [1], VOCAB), replace(cfg, eval_tokens=1024), tmp_path)
    # another tokenizer in another folder is another configuration
    other = tmp_path / "other_tokenizer"
    Tokenizer.train(iter_texts("tiny", "train", max_chars=100_000), VOCAB).save(other)
    retokenized = replace(cfg, tokenizer_dir=str(other))
    with pytest.raises(SweepFormatError, match="tokenizer_sha256"):
        run_sweep(plan_isoflop(retokenized, bs, [1], VOCAB), retokenized, tmp_path)


def test_a_bad_row_in_the_csv_stops_the_runner_with_file_and_line(tokenizer_dir, tmp_path):
    cfg = base_config(tokenizer_dir)
    bs = budgets(cfg)[:1]
    df = run_sweep(plan_isoflop(cfg, bs, [1], VOCAB), cfg, tmp_path)
    assert isinstance(df, pd.DataFrame) and len(df) == 1
    path = tmp_path / SWEEP_CSV
    path.write_text(path.read_text().replace(repr(float(df.val_bpb[0])), "nan"))
    with pytest.raises(SweepFormatError, match=rf"{SWEEP_CSV}:2: column 'val_bpb' is 'nan'"):
        run_sweep(plan_isoflop(cfg, bs, [1], VOCAB), cfg, tmp_path)


def test_runs_side_by_side_match_runs_one_after_another(tokenizer_dir, tmp_path, monkeypatch):
    monkeypatch.setenv("OMP_NUM_THREADS", "1")  # the workers' torch threads, for equal results
    cfg = base_config(tokenizer_dir)
    planned = plan_isoflop(cfg, budgets(cfg), DEPTHS, VOCAB)
    serial = run_sweep(planned, cfg, tmp_path / "serial")
    parallel = run_sweep(planned, cfg, tmp_path / "parallel", workers=2)
    key = ["budget", "depth"]
    serial, parallel = (df.sort_values(key).reset_index(drop=True) for df in (serial, parallel))
    pd.testing.assert_frame_equal(parallel.drop(columns="wall_s"), serial.drop(columns="wall_s"))
    assert not list((tmp_path / "parallel").glob("*/optim_*.pt"))
    assert (
        "val_bpb"
        in (tmp_path / "parallel" / run_name(budgets(cfg)[1], 2) / "train.log").read_text()
    )
    family = run_family(cfg, [1, 2], 1.0, tmp_path / "family", workers=2)
    assert family.depth.tolist() == [1, 2]
    assert pd.read_csv(tmp_path / "family" / MODELS_CSV).checkpoint.tolist() == ["d01", "d02"]


def test_a_failing_run_side_by_side_stops_the_sweep_and_resumes(
    tokenizer_dir, tmp_path, monkeypatch
):
    cfg = base_config(tokenizer_dir)
    bs = budgets(cfg)
    planned = plan_isoflop(cfg, bs, DEPTHS, VOCAB)
    # Every run raises after step 13: the 12-step runs of the first budget finish (and are
    # recorded) unless they are still waiting when the first failure stops new starts.
    monkeypatch.setenv("NANOBOOK_TEST_DIE", "13:0:raise")
    with pytest.raises(TrainingError, match=r"(?s)run b.*failed:.*rank 0 fails after step 13"):
        run_sweep(planned, cfg, tmp_path, workers=2)
    recorded = csv_rows(tmp_path)
    assert len(recorded) < 4
    monkeypatch.setenv("NANOBOOK_TEST_DIE", "7")  # SIGKILL: the worker dies mid-run
    with pytest.raises(TrainingError, match="its worker died"):
        run_sweep(planned, cfg, tmp_path, workers=2)
    monkeypatch.delenv("NANOBOOK_TEST_DIE")
    df = run_sweep(planned, cfg, tmp_path, workers=2)
    assert csv_rows(tmp_path)[: len(recorded)] == recorded  # nothing lost …
    assert sorted(zip(df.budget, df.depth)) == sorted((b, d) for b in bs for d in DEPTHS)
    assert summary_of(tmp_path, bs[1], 1)["resumed_from"] == 12  # … and nothing trained twice


# ------------------------------------------------------------------------------------------------
# the miniseries and reading fits along a dial


def test_family_plan_estimates_and_refuses_over_budget(tokenizer_dir):
    cfg = base_config(tokenizer_dir, eval_every=5)
    plan_ = plan_family(cfg, [2, 1], 4.0, VOCAB, flops_per_s={1: 1e9, 2: 2e9})
    assert plan_.depth.tolist() == [1, 2]
    assert (plan_.tokens == (4 * plan_.n_params_matmul / 1024).round() * 1024).all()
    assert plan_.est_s.tolist() == pytest.approx(
        ((plan_.flops + plan_.eval_flops) / [1e9, 2e9]).tolist()
    )
    with pytest.raises(SweepPlanError, match=r"the family needs ≈ .* depth 2, takes"):
        plan_family(cfg, [1, 2], 4.0, VOCAB, flops_per_s=1e9, time_budget_s=plan_.est_s.min())


def test_family_writes_models_csv_of_loadable_checkpoints(tokenizer_dir, tmp_path):
    cfg = base_config(tokenizer_dir)
    family = run_family(cfg, [2, 1], 1.0, tmp_path)
    table = pd.read_csv(tmp_path / MODELS_CSV)
    needed = ["depth", *(f"n_params_{c}" for c in CONVENTIONS), "tokens", "flops", "val_bpb"]
    assert set(needed + ["checkpoint"]) <= set(table.columns)
    assert table.depth.tolist() == [1, 2] and table.checkpoint.tolist() == ["d01", "d02"]
    for r in table.itertuples():
        model, meta = load_model(tmp_path / r.checkpoint)
        assert scaling_params(model, "matmul") == r.n_params_matmul
        assert r.flops == flops_per_token(model) * r.tokens
        assert r.tokens == pytest.approx(r.n_params_matmul, rel=0.5)  # one token per parameter
    shipped = family_tokenizer(tmp_path)  # the family carries its tokenizer
    assert shipped.mergeable_ranks == Tokenizer.load(cfg.tokenizer_dir).mergeable_ranks
    assert meta["config"]["tokenizer_dir"] == str(tmp_path / FAMILY_TOKENIZER)
    again = run_family(cfg, [1, 2], 1.0, tmp_path)  # finished models: reported, not retrained
    pd.testing.assert_frame_equal(again.drop(columns="wall_s"), family.drop(columns="wall_s"))
    summary = json.loads((tmp_path / "d01" / "summary.json").read_text())
    assert summary["resumed_from"] == summary["num_steps"]
    planned = plan_family(cfg, [2, 1], lambda depth: 1.0, VOCAB)  # what run_family trained
    cols = ["depth", *(f"n_params_{c}" for c in CONVENTIONS), "tokens", "flops"]
    pd.testing.assert_frame_equal(planned[cols], family[cols])
    shutil.rmtree(tmp_path / FAMILY_TOKENIZER)  # a family made before it kept its tokenizer
    with pytest.raises(FileNotFoundError, match=r"nanobook run 04 --force"):
        family_tokenizer(tmp_path)


LAW = {"E": 1.82, "A": 482.0, "B": 2085.0, "alpha": 0.348, "beta": 0.366}


def test_dial_optimum_is_the_closed_form_when_a_token_costs_6n():
    n = np.geomspace(1e6, 1e10, 30)
    dial = Dial(pd.DataFrame({"depth": range(1, 31), "matmul": n, "flops_per_token": 6 * n}))
    law = Approach3Fit.from_constants(**LAW)
    for c in (1e19, 1e21):
        opt = dial.optimum(law, c)
        assert opt["n_opt"][0] == pytest.approx(law.n_opt(c), rel=0.01)
        assert 6 * opt["n_opt"][0] * opt["d_opt"][0] == pytest.approx(c)
        assert opt["loss"][0] == pytest.approx(law.loss(law.n_opt(c), law.d_opt(c)), rel=1e-5)
    draws = dial.optimum({k: np.full(4, v) for k, v in LAW.items()}, 1e21)  # e.g. a bootstrap
    assert draws["n_opt"].shape == (4,) and np.ptp(draws["n_opt"]) == 0
    np.testing.assert_allclose(dial.flops_per_token(n[3:5]), 6 * n[3:5])
    assert dial.flops_per_token(1e11) == pytest.approx(6e11)  # extrapolated past the largest
    assert dial.nearest_depth(n[7] * 1.05) == 8
    assert math.isnan(law.objective) and law.a == pytest.approx(0.366 / (0.348 + 0.366))


def test_dial_of_a_config_counts_like_the_model():
    dial = Dial.of(VOCAB, 64, 32, 32, depths=[1, 2, 3])
    for row in dial.table.itertuples():
        model = config_for_depth(row.depth, VOCAB, 64, 32, 32)
        assert row.matmul == scaling_params(model, "matmul") and row.d_model == model.d_model
        assert row.flops_per_token == flops_per_token(model)


def test_approach2_predicted_curve_passes_through_each_vertex():
    rows = []
    for c in (1e18, 1e19, 1e20):
        n_opt = 0.1 * c**0.5
        for n in n_opt * np.geomspace(0.25, 4, 7):
            rows.append(
                {"budget": c, "N": n, "loss": 2 + 0.05 * np.log(n / n_opt) ** 2 + 1 / c**0.05}
            )
    fit = fit_isoflop(pd.DataFrame(rows), "N", "loss")
    for r in fit.budgets.itertuples():
        assert fit.predicted_curve(r.budget, r.n_opt) == pytest.approx(r.loss_opt, rel=1e-3)
        assert fit.predicted_curve(r.budget, 2 * r.n_opt) > r.loss_opt
    assert fit.loss_opt(1e19) == pytest.approx(2 + 1e19**-0.05, rel=2e-3)


# --- the sweep CSV ----------------------------------------------------------------------------


def sweep_row(budget: float = 1e15, depth: int = 4, val_bpb: float = 1.9) -> dict:
    return {
        "budget": budget,
        "depth": depth,
        "n_params_all": 3_000_000,
        "n_params_non_embedding": 1_000_000,
        "n_params_matmul": 2_000_000,
        "tokens": 50_000_000,
        "flops": budget * 0.98,
        "val_bpb": val_bpb,
        "wall_s": 12.5,
    }


def test_sweep_round_trip(tmp_path):
    path = tmp_path / "sweep.csv"
    for depth, bpb in [(4, 1.9), (6, 1.8), (8, 1.85)]:
        append_sweep_row(path, sweep_row(depth=depth, val_bpb=bpb))
    df = read_sweep(path)
    assert list(df.columns) == list(SWEEP_COLUMNS)
    assert df["depth"].tolist() == [4, 6, 8] and df["val_bpb"].tolist() == [1.9, 1.8, 1.85]
    assert df["tokens"].dtype == np.int64 and df["flops"].dtype == np.float64
    assert df["flops"].iloc[0] == 1e15 * 0.98  # full float precision survives the round trip


def test_sweep_truncated_last_line_is_dropped(tmp_path):
    path = tmp_path / "sweep.csv"
    append_sweep_row(path, sweep_row(depth=4))
    append_sweep_row(path, sweep_row(depth=6))
    with path.open("a") as f:
        f.write("1e+15,8,3000000,100")  # a writer killed mid-line
    with pytest.warns(ScalingWarning, match="truncated"):
        assert read_sweep(path)["depth"].tolist() == [4, 6]
    with pytest.warns(ScalingWarning, match="truncated"):
        append_sweep_row(path, sweep_row(depth=8))
    with warnings.catch_warnings():
        warnings.simplefilter("error", ScalingWarning)
        assert read_sweep(path)["depth"].tolist() == [4, 6, 8]


@pytest.mark.parametrize(
    ("line", "message"),
    [
        (
            "1e15,4,3000000,1000000,2000000,50000000,9.8e14,-1.2,3.0",
            r"sweep.csv:3: .*'val_bpb'.*positive",
        ),
        (
            "1e15,4,3000000,1000000,2000000,50000000,9.8e14,abc,3.0",
            r"sweep.csv:3: .*'val_bpb'.*not a number",
        ),
        (
            "1e15,4.5,3000000,1000000,2000000,50000000,9.8e14,1.2,3.0",
            r"sweep.csv:3: .*'depth'.*integer",
        ),
        ("1e15,4,3000000,1000000,2000000,50000000,nan,1.2,3.0", r"sweep.csv:3: .*'flops'.*finite"),
        ("1e15,4,3000000,1000000", r"sweep.csv:3: 4 fields, expected 9"),
    ],
)
def test_sweep_bad_rows_name_file_and_line(tmp_path, line, message):
    path = tmp_path / "sweep.csv"
    append_sweep_row(path, sweep_row())
    with path.open("a") as f:
        f.write(line + "\n")
    with pytest.raises(SweepFormatError, match=message):
        read_sweep(path)


def test_sweep_bad_header_and_bad_row_to_append(tmp_path):
    path = tmp_path / "sweep.csv"
    path.write_text("budget,depth,loss\n1e15,4,2.0\n")
    with pytest.raises(SweepFormatError, match=r"sweep.csv:1: header"):
        read_sweep(path)
    with pytest.raises(SweepFormatError, match="header"):
        append_sweep_row(path, sweep_row())
    row = sweep_row()
    del row["wall_s"]
    with pytest.raises(SweepFormatError, match=r"missing columns \['wall_s'\]"):
        append_sweep_row(tmp_path / "new.csv", row)
    with pytest.raises(SweepFormatError, match="'tokens'.*positive"):
        append_sweep_row(tmp_path / "new.csv", {**sweep_row(), "tokens": 0})
    assert not (tmp_path / "new.csv").exists()
    with pytest.raises(FileNotFoundError, match="no sweep CSV"):
        read_sweep(tmp_path / "missing.csv")


def test_curve_crossings_finds_a_bigger_model_dipping_below():
    flops = np.geomspace(1e9, 1e11, 9)
    small = pd.DataFrame({"flops": flops, "val_bpb": np.linspace(3.0, 2.0, 9)})
    stacked = pd.DataFrame({"flops": flops * 3, "val_bpb": np.linspace(2.9, 1.5, 9)})
    crossing = pd.DataFrame({"flops": flops * 3, "val_bpb": np.linspace(3.5, 1.0, 9)})
    none = curve_crossings({1: small, 2: stacked.assign(val_bpb=stacked.val_bpb + 1)})
    assert not none.cross.any() and list(none.index) == ["d2 − d1"]
    assert curve_crossings({1: small, 2: crossing}).cross.all()


def test_fitted_family_ratio_solves_ratio_and_compute_together():
    n = np.geomspace(1e4, 1e6, 10)
    dial = Dial(pd.DataFrame({"depth": range(1, 11), "matmul": n, "flops_per_token": 6 * n}))

    class Fit:  # a ratio that grows with compute: D/N = (C / 1e12)^0.1
        def tokens_per_param(self, flops):
            return (flops / 1e12) ** 0.1

    ratio = fitted_family_ratio(Fit(), dial, 5, start_flops=1e12)
    c = 6 * n[4] * ratio * n[4]  # the compute depth 5 spends at that ratio
    assert ratio == pytest.approx(Fit().tokens_per_param(c), rel=1e-9)


def test_depths_per_budget():
    assert depths_per_budget([1e9, 2e9], [3, 1]) == [[1, 3], [1, 3]]
    assert depths_per_budget([1e9, 2e9], [[2, 1], [4, 3]]) == [[1, 2], [3, 4]]
    with pytest.raises(SweepPlanError, match="2 depth lists for 3 budgets"):
        depths_per_budget([1, 2, 3], [[1], [2]])
