"""The report card, from the manifests only: what did it cost, what did it reach, was it expected?

`ledger` prices every chapter's run (wall time, device, FLOPs, GPU-hours and dollars at book.yml's
`cost:`) beside what `nanobook plan` planned; `results` gives one row per headline result with
a human label, its unit, the seed spread where seeds were run, and the expected band of
`data/expected/bands.yml` (or, at `tiny`, of our own seed runs); `flops_figure` puts every model
the runs hold on val bpb and CORE against training FLOPs, with nanochat's published points.
Nothing here prints a raw None or nan: a missing number is "not measured at this preset".
"""

from __future__ import annotations

import math
import statistics
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

from nanolib.config import Book, BookConfigError
from nanolib.files import read_json
from nanolib.runs import MANIFEST, RunState, run_dir_for
from nanolib.seeds import seed_manifests

BANDS = Path("data/expected/bands.yml")  # relative to the book root
NOT_MEASURED = "not measured at this preset"
NOT_RUN = "not run at this preset"


@dataclass(frozen=True)
class Headline:
    """A headline result: which manifest number, its label, unit and format."""

    chapter: str
    key: str
    label: str
    unit: str = ""
    spec: str = ".3f"
    percent: bool = False  # a fraction shown in percent


HEADLINES = (
    Headline(
        "01_tokenizer",
        "val_bytes_per_token",
        "Tokenizer compression (val text)",
        "bytes/token",
        ".2f",
    ),
    Headline("03_pretraining", "val_bpb", "Validation loss of chapter 3's model", "bits/byte"),
    Headline("03_pretraining", "bigram_bpb", "… a bigram model on the same tokens", "bits/byte"),
    Headline(
        "03_pretraining", "uniform_bpb", "… guessing uniformly over the vocabulary", "bits/byte"
    ),
    Headline(
        "04_scaling",
        "tokens_per_param_approach2",
        "Compute-optimal tokens per parameter (isoFLOP profiles)",
        "tokens/param",
        ".1f",
    ),
    Headline(
        "04_scaling", "tokens_per_param_approach3", "… (parametric loss fit)", "tokens/param", ".1f"
    ),
    Headline(
        "04_scaling", "a_approach2", "Exponent a of N_opt ∝ C^a (isoFLOP profiles)", "", ".3f"
    ),
    Headline(
        "04_scaling", "b_approach2", "Exponent b of D_opt ∝ C^b (isoFLOP profiles)", "", ".3f"
    ),
    Headline("04_scaling", "a_approach3", "Exponent a (parametric loss fit)", "", ".3f"),
    Headline("05_core", "core_v1", "CORE of chapter 3's model", "", ".4f"),
    Headline("06_sft", "chatcore_before", "ChatCORE before SFT", "", ".4f"),
    Headline("06_sft", "chatcore_after", "ChatCORE after SFT", "", ".4f"),
    Headline("07_rl", "pass1_before", "pass@1 before RL (sampled)", "%", ".1f", True),
    Headline("07_rl", "pass1_after", "pass@1 after RL (sampled)", "%", ".1f", True),
    Headline("07_rl", "greedy_pass1_after", "Greedy pass@1 after RL", "%", ".1f", True),
    Headline("07_rl", "pass1_gain", "RL pass@1 gain", "points", ".1f", True),
    Headline(
        "08_inference", "kv_speedup", "KV-cache decode speed-up at the longest context", "×", ".1f"
    ),
)


# ---- formatting ---------------------------------------------------------------------------------


def number(value: Any) -> float | None:
    """A finite float, or None for anything else (None, nan, text)."""
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        return None
    return float(value) if math.isfinite(value) else None


def fmt(value: Any, spec: str = ".3g", percent: bool = False) -> str:
    """A number as text; never "None" or "nan"."""
    x = number(value)
    if x is None:
        return NOT_MEASURED if value is None or isinstance(value, float) else str(value)
    return format(x * 100 if percent else x, spec)


def flops_text(value: Any) -> str:
    """FLOPs as 1.23e18, or a dash."""
    x = number(value)
    return f"{x:.3g}" if x else "—"


def duration(seconds: Any) -> str:
    """Seconds as s, min, h or days, or a dash."""
    s = number(seconds)
    if s is None:
        return "—"
    if s < 90:
        return f"{s:.1f} s" if s < 10 else f"{s:.0f} s"
    if s < 5400:
        return f"{s / 60:.1f} min"
    return f"{s / 3600:.1f} h" if s < 48 * 3600 else f"{s / 86400:.1f} days"


# ---- what did it cost? --------------------------------------------------------------------------


def _planned(book: Book, preset: str) -> dict[str, dict[str, float]]:
    """FLOPs and seconds `nanobook plan` plans per chapter; {} when it cannot plan."""
    from nanolib.plan import plan_preset

    try:
        plan = plan_preset(book, preset)
    except (BookConfigError, ValueError, RuntimeError):
        return {}
    out: dict[str, dict[str, float]] = {}
    for ln in plan.lines:
        if ln.flops:
            row = out.setdefault(ln.chapter, {"flops": 0.0, "seconds": 0.0})
            row["flops"] += ln.flops
            row["seconds"] += (ln.hours or 0.0) * 3600
    return out


def ledger(book: Book, preset: str, states: dict[str, RunState]) -> dict[str, Any]:
    """Per chapter and in total: wall time, device, FLOPs, GPU-hours and dollars, planned vs run."""
    pr = book.preset(preset)
    cost = book.cost.get("cpu" if pr.device == "auto" else pr.device)
    planned = _planned(book, preset) if book.cost else {}
    rows, total = [], {"wall": 0.0, "flops": 0.0, "gpu_hours": 0.0, "dollars": 0.0, "plan": 0.0}
    priced = bool(cost and cost.dollars_per_hour)
    for ch in book.chapters:
        m = states[ch.slug].manifest or {}
        wall = number(m.get("wall_time_s"))
        nproc = int(m.get("nproc") or pr.nproc)
        on_gpu = str(m.get("device", pr.device)).startswith("cuda")
        gpu_hours = wall * nproc / 3600 if wall is not None and on_gpu else None
        dollars = gpu_hours * cost.dollars_per_hour if gpu_hours is not None and priced else None
        plan = planned.get(ch.slug, {})
        for key, value in (
            ("wall", wall),
            ("flops", number(m.get("flops"))),
            ("gpu_hours", gpu_hours),
            ("dollars", dollars),
            ("plan", plan.get("seconds")),
        ):
            total[key] += value or 0.0
        device = str(m.get("device_name") or m.get("device") or "—")
        rows.append(
            {
                "label": str(int(ch.number)) if ch.number.isdigit() else ch.number,
                "title": ch.title,
                "href": f"{ch.slug}.html",
                "status": states[ch.slug].status,
                "device": f"{device} × {nproc}" if m else "—",
                "wall": duration(wall),
                "planned": duration(plan.get("seconds")),
                "flops": flops_text(m.get("flops")),
                "planned_flops": flops_text(plan.get("flops")),
                "gpu_hours": f"{gpu_hours:.2f}" if gpu_hours is not None else "—",
                "dollars": f"${dollars:,.2f}" if dollars is not None else "—",
            }
        )
    if cost is None:
        assumed = "book.yml has no cost block for this device"
    elif cost.mfu is not None:
        assumed = f"{cost.name} at {cost.mfu:.0%} MFU, ${cost.dollars_per_hour:g} per GPU-hour"
    else:
        assumed = f"{cost.name} at {cost.flops_per_s:.3g} FLOP/s; CPU runs are not priced"
    return {
        "rows": rows,
        "priced": priced,
        "assumed": assumed,
        "total": {
            "wall": duration(total["wall"]),
            "planned": duration(total["plan"]) if planned else "—",
            "flops": flops_text(total["flops"]),
            "gpu_hours": f"{total['gpu_hours']:.2f}" if total["gpu_hours"] else "—",
            "dollars": f"${total['dollars']:,.2f}" if priced else "—",
        },
    }


# ---- what did it reach, and was it expected? ----------------------------------------------------


def spread(values: list[float]) -> tuple[float, float] | None:
    """(mean, sample standard deviation) of two or more values."""
    return (statistics.fmean(values), statistics.stdev(values)) if len(values) > 1 else None


def load_bands(book: Book) -> tuple[list[dict[str, Any]], list[str]]:
    """The expected bands and the recipe differences of data/expected/bands.yml, checked."""
    path = book.root / BANDS
    if not path.exists():
        return [], []
    raw = yaml.safe_load(path.read_text(encoding="utf-8")) or {}
    bands = raw.get("bands") or []
    for i, b in enumerate(bands):
        missing = {"preset", "chapter", "metric", "source"} - set(b)
        bad = [k for k in ("low", "high") if b.get(k) is not None and number(b[k]) is None]
        if missing or bad or not isinstance(b, dict):
            raise BookConfigError(
                f"{BANDS} bands[{i}]: needs preset, chapter, metric, source and numeric (or null) "
                f"low/high; missing {sorted(missing)}, not numbers {bad}"
            )
    return bands, [str(d) for d in raw.get("differences") or []]


def _verdict(value: float | None, low: float | None, high: float | None) -> str:
    if value is None:
        return ""
    if low is not None and high is not None and low == high:
        return "reference"
    if low is not None and value < low:
        return "below"
    if high is not None and value > high:
        return "above"
    return "inside"


def _band_text(h: Headline, low: float | None, high: float | None) -> str:
    if low is not None and high is not None:
        if low == high:
            return f"≈ {fmt(low, h.spec, h.percent)}"
        return f"{fmt(low, h.spec, h.percent)} – {fmt(high, h.spec, h.percent)}"
    if low is not None:
        return f"≥ {fmt(low, h.spec, h.percent)}"
    return f"≤ {fmt(high, h.spec, h.percent)}"


def _headlines(book: Book, preset: str, states: dict[str, RunState]) -> list[Headline]:
    """The book's headline specs, plus one per task score of the SFT chapter's manifest."""
    specs = [h for h in HEADLINES if any(ch.slug == h.chapter for ch in book.chapters)]
    sft = states.get("06_sft")
    scores = (sft.manifest or {}).get("headline") or {} if sft else {}
    at = next((i for i, h in enumerate(specs) if h.key == "chatcore_after"), len(specs))
    tasks = [k for k in scores if k.endswith("_after") and not k.startswith("chatcore")]
    extra = [
        Headline("06_sft", k, f"{k.removesuffix('_after')} accuracy after SFT", "%", ".1f", True)
        for k in tasks
    ]
    return specs[: at + 1] + extra + specs[at + 1 :]


def results(book: Book, preset: str, states: dict[str, RunState]) -> list[dict[str, Any]]:
    """One row per headline result: label, value (± seed spread), band, verdict and source."""
    bands, _ = load_bands(book)
    rows = []
    for h in _headlines(book, preset, states):
        state = states.get(h.chapter)
        m = (state.manifest or {}) if state else {}
        headline = m.get("headline") or {}
        label = h.label
        if h.key == "core_v1" and headline.get("bundle") == "tiny":
            label = "tiny CORE of chapter 3's model (the tiny bundle, not DCLM's)"
        value = number(headline.get(h.key))
        shown = fmt(value, h.spec, h.percent) if m else NOT_RUN
        seeds = [headline.get(h.key)] + [
            (s.get("headline") or {}).get(h.key)
            for s in seed_manifests(preset, h.chapter, m.get("params"))
        ]
        seen = [x for x in map(number, seeds) if x is not None]
        var = spread(seen) if m else None
        if var:
            k = 100 if h.percent else 1
            shown += f" (seeds: {var[0] * k:{h.spec}} ± {var[1] * k:.2g}, n = {len(seen)})"
        band = next(
            (
                b
                for b in bands
                if (b["preset"], b["chapter"], b["metric"]) == (preset, h.chapter, h.key)
            ),
            None,
        )
        low = high = None
        source = ""
        if band:
            low, high, source = number(band.get("low")), number(band.get("high")), band["source"]
        elif var and book.preset(preset).device == "cpu":
            low, high = var[0] - 2 * var[1], var[0] + 2 * var[1]
            source = f"our {len(seen)} seed runs at this preset (mean ± 2 standard deviations)"
        rows.append(
            {
                "chapter": h.chapter,
                "label": label,
                "unit": h.unit,
                "value": shown,
                "band": _band_text(h, low, high) if (low, high) != (None, None) else "no band yet",
                "verdict": _verdict(value, low, high),
                "source": source,
            }
        )
    return rows


# ---- the plot -----------------------------------------------------------------------------------


def _points(preset: str) -> dict[str, list[tuple[float, float, float | None, str]]]:
    """(FLOPs, val bpb, CORE, name) of every model the runs hold, by series."""
    series: dict[str, list[tuple[float, float, float | None, str]]] = {}
    core: dict[str, float] = {}
    core_csv = run_dir_for("05_core", preset) / "core" / "models.csv"
    if core_csv.exists():
        import pandas as pd

        df = pd.read_csv(core_csv)
        core = {str(r.model): float(r.core_v1) for r in df.itertuples()}
    m3 = run_dir_for("03_pretraining", preset) / MANIFEST
    if m3.exists():
        m = read_json(m3)
        f, bpb = number(m.get("flops")), number((m.get("headline") or {}).get("val_bpb"))
        if f and bpb and m.get("status") == "ok":
            base = next((v for k, v in core.items() if k.startswith("base")), None)
            series["chapter 3's model"] = [(f, bpb, base, "chapter 3")]
    for name, rel in (
        ("isoFLOP sweep", "sweep/sweep.csv"),
        ("miniseries", "miniseries/models.csv"),
    ):
        path = run_dir_for("04_scaling", preset) / rel
        if not path.exists():
            continue
        import pandas as pd

        df = pd.read_csv(path)
        series[name] = [
            (
                float(r.flops),
                float(r.val_bpb),
                core.get(f"miniseries_d{int(r.depth)}") if name == "miniseries" else None,
                f"d{int(r.depth)}",
            )
            for r in df.itertuples()
            if number(r.flops) and number(r.val_bpb)
        ]
    return series


def flops_figure(book: Book, preset: str) -> str | None:
    """Plotly JSON of val bpb and CORE against training FLOPs; None when the runs hold no model."""
    import plotly.io as pio
    from plotly.subplots import make_subplots

    from nanolib.core_fit import load_reference
    from nanolib.plots import COLORS, OURS, PUBLISHED

    series = _points(preset)
    if not series:
        return None
    fig = make_subplots(rows=1, cols=2, subplot_titles=("val bits/byte", "CORE"))
    for i, (name, pts) in enumerate(series.items()):
        color = COLORS[i % len(COLORS)]
        style = {**OURS, "mode": "markers" if name == "isoFLOP sweep" else OURS["mode"]}
        for col in (1, 2):  # a point's p[1] (val bpb) on the left, p[2] (CORE or None) right
            shown = sorted(p for p in pts if p[col] is not None)
            if shown:
                fig.add_scatter(
                    x=[p[0] for p in shown],
                    y=[p[col] for p in shown],
                    text=[p[3] for p in shown],
                    name=name,
                    legendgroup=name,
                    showlegend=col == 1,
                    marker_color=color,
                    row=1,
                    col=col,
                    **style,
                )
    ref = load_reference("nanochat_miniseries_v1")
    for col, y in ((1, "val_bpb"), (2, "core_v1")):
        fig.add_scatter(
            x=ref.flops_derived,
            y=ref[y],
            text=[f"d{d}" for d in ref.depth],
            name="nanochat miniseries v1 (published)",
            legendgroup="nanochat",
            showlegend=col == 1,
            marker_color="#555",
            row=1,
            col=col,
            **PUBLISHED,
        )
    fig.update_xaxes(type="log", title_text="training FLOPs", exponentformat="power")
    fig.update_layout(
        height=420,
        margin={"t": 40, "r": 10, "l": 50, "b": 40},
        legend={"orientation": "h", "y": -0.25},
    )
    return pio.to_json(fig).replace("<", "\\u003c")
