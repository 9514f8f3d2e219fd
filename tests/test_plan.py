"""`nanobook plan`: every preset plans on a CPU; a broken one names chapter, parameter and fix."""

import re
from pathlib import Path

import pytest
import yaml

from nanolib.cli import main
from nanolib.config import load_book
from nanolib.plan import plan_preset

ROOT = Path(__file__).resolve().parent.parent
PRESETS = list(load_book(ROOT / "book.yml").presets)


def set_param(root: Path, preset: str, chapter: str, **values) -> None:
    raw = yaml.safe_load((root / "book.yml").read_text())
    raw["presets"][preset].setdefault("chapters", {}).setdefault(chapter, {}).update(values)
    (root / "book.yml").write_text(yaml.safe_dump(raw, sort_keys=False))


@pytest.mark.parametrize("preset", PRESETS)
def test_every_preset_plans_on_a_cpu(book_copy, capsys, preset):
    assert main(["plan", "--preset", preset]) == 0
    out = capsys.readouterr().out
    assert "total:" in out and "error:" not in out
    assert not {"None", "nan"} & set(out.replace("|", " ").split())
    plan = plan_preset(load_book(), preset)
    pretraining = next(ln for ln in plan.lines if ln.run.startswith("pretraining"))
    assert pretraining.flops > 0 and pretraining.memory > 0
    if plan.cost.dollars_per_hour:  # a GPU preset: priced, and the sweep expanded run by run
        assert "$" in out and "GPU-hours" in out
        assert sum(ln.run.startswith("sweep") for ln in plan.lines) > 1
        assert sum(ln.run.startswith("miniseries") for ln in plan.lines) > 1
    assert plan.totals()["flops"] == pytest.approx(sum(ln.flops or 0 for ln in plan.lines))


def test_speedrun_pretraining_matches_the_cost_block():
    book = load_book(ROOT / "book.yml")
    plan = plan_preset(book, "speedrun", ["03"])
    (line,) = plan.lines
    assert line.model.n_layer == 24 and line.layout == (16, 4, 8)
    cost = book.cost_of("cuda")
    spent = line.flops + line.eval_flops
    assert line.hours == pytest.approx(spent / (8 * cost.flops_per_s) / 3600)
    assert line.dollars == pytest.approx(line.hours * 8 * cost.dollars_per_hour)


def test_a_batch_that_does_not_divide(book_copy, capsys):
    set_param(book_copy, "speedrun", "03_pretraining", device_batch_size=24)
    assert main(["plan", "--preset", "speedrun", "03"]) == 1
    err = [ln for ln in capsys.readouterr().out.splitlines() if ln.startswith("error:")]
    assert len(err) == 1
    assert "chapter 03_pretraining, batch_tokens:" in err[0]
    assert "24 × 2048 × 8" in err[0] and "so that it divides" in err[0]


def test_a_model_too_big_for_80_gb(book_copy, capsys):
    set_param(book_copy, "speedrun", "03_pretraining", device_batch_size=32)
    assert main(["plan", "--preset", "speedrun", "03"]) == 1
    err = [ln for ln in capsys.readouterr().out.splitlines() if ln.startswith("error:")]
    assert len(err) == 1 and "chapter 03_pretraining, device_batch_size:" in err[0]
    assert "device_batch_size=32" in err[0] and "set device_batch_size to 16" in err[0]


def test_a_bad_parameter_and_an_rl_batch(book_copy, capsys):
    set_param(book_copy, "d12", "07_rl", device_batch_size=7)
    assert main(["plan", "--preset", "d12", "07"]) == 1
    out = capsys.readouterr().out
    assert "error: chapter 07_rl, device_batch_size:" in out and "change one of them" in out
    set_param(book_copy, "d12", "04_scaling", sweep_budgets=[-1.0])
    assert main(["plan", "--preset", "d12", "04"]) == 2  # book.yml itself is refused
    assert "'sweep_budgets' must be > 0" in capsys.readouterr().err


def test_missing_upstream_artifacts_and_shards_are_said_not_fatal(book_copy, capsys):
    assert main(["plan", "--preset", "smoke", "05"]) == 0
    out = capsys.readouterr().out
    assert "note: chapter 05_core: needs artifact 'checkpoint', not made yet" in out
    assert main(["plan", "--preset", "d12", "01", "03"]) == 0
    out = capsys.readouterr().out
    assert "warning: chapter 03_pretraining, data: fineweb-edu:" in out
    assert "to download: 27 shard(s)" in out


def _hours(text: str) -> float:
    """'≈ 50 min' / '≈ 1.5 h' → hours."""
    value, unit = re.search(r"([\d.]+) (min|h)\b", text).groups()
    return float(value) / (60 if unit == "min" else 1)


def test_chapter_runtime_tables_agree_with_the_plan():
    """The prose tables of chapters 3 and 4 and their stated MFU and price are the plan's."""
    book = load_book(ROOT / "book.yml")
    cost = book.cost_of("cuda")
    for slug in ("03_pretraining", "04_scaling", "05_core"):
        text = (ROOT / "chapters" / f"{slug}.py").read_text()
        for mfu in re.findall(r"assumed? (\d+)% MFU", text):
            assert int(mfu) == round(cost.mfu * 100), f"{slug} says {mfu}% MFU"
        for price in re.findall(r"\$([\d.]+) per GPU-hour", text):
            if "nanochat" not in text[text.index(f"${price} per GPU-hour") - 80 :][:80]:
                assert float(price) == cost.dollars_per_hour, f"{slug} says ${price}/GPU-hour"
    rows = re.findall(
        r"^# \| `(\w+)` \|.*\| (≈ [\d.]+ (?:min|h)) \| ≈ \$([\d.]+) \|$",
        (ROOT / "chapters/03_pretraining.py").read_text(),
        re.M,
    )
    assert {r[0] for r in rows} == {"d12", "miniseries", "speedrun"}
    for preset, time, dollars in rows:
        (line,) = plan_preset(book, preset, ["03"]).lines
        assert _hours(time) == pytest.approx(line.hours, rel=0.15), preset
        assert float(dollars) == pytest.approx(line.dollars, rel=0.15), preset
    table = (ROOT / "chapters/04_scaling.py").read_text()
    for preset in ("d12", "miniseries"):
        sweep_h, family_h = re.search(
            rf"^# \| `{preset}` \|.*\| ≈ ([\d.]+) \+ ([\d.–]+) h \|$", table, re.M
        ).groups()
        lines = plan_preset(book, preset, ["04"]).lines
        planned = sum(ln.hours for ln in lines if ln.run.startswith("sweep"))
        assert float(sweep_h) == pytest.approx(planned, rel=0.15), preset
        family = sum(ln.hours for ln in lines if ln.run.startswith("miniseries"))
        assert family == pytest.approx(float(family_h.split("–")[-1]), rel=0.15), preset
