"""Plotly defaults shared by every chapter: one look, our runs vs published figures told apart.

Styles (`OURS`, `PUBLISHED`, `DOT`, `STAR`, `BOLD`, `COLORS`), an empty titled `figure`, and the
helpers that show an uncertainty: `with_interval` (as text), `interval_column` (a fit table's
column with its `_lo`/`_hi` bounds), `error_bars` and `band` (on a figure).
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import pandas as pd
import plotly.graph_objects as go
import plotly.io as pio
from plotly.colors import qualitative

OURS = {"mode": "lines+markers", "marker": {"size": 8}}
PUBLISHED = {"mode": "markers", "marker": {"size": 11, "symbol": "diamond-open"}}
DOT = {"mode": "lines", "line": {"dash": "dot", "width": 1}, "showlegend": False}  # a fitted curve
STAR = {"mode": "markers", "marker": {"symbol": "star", "size": 14, "color": "black"}}  # optimum
BOLD = {"mode": "lines", "line": {"width": 3, "color": "black"}}  # a prediction
COLORS = qualitative.Plotly

pio.templates["compute_dial"] = go.layout.Template(
    layout={
        "font": {"family": "system-ui, -apple-system, Segoe UI, sans-serif", "size": 13},
        "margin": {"l": 60, "r": 20, "t": 60, "b": 50},
        "legend": {"bgcolor": "rgba(255,255,255,0.6)"},
    }
)
pio.templates.default = "plotly_white+compute_dial"


def figure(title: str, x: str, y: str, log_x: bool = False, log_y: bool = False) -> go.Figure:
    """An empty figure with a title and axis labels (units belong in the labels)."""
    fig = go.Figure()
    fig.update_layout(title=title, xaxis_title=x, yaxis_title=y, height=420)
    if log_x:
        fig.update_xaxes(type="log")
    if log_y:
        fig.update_yaxes(type="log")
    return fig


def color_of(value: object, values: Sequence[object]) -> str:
    """One colour per member of `values` (e.g. per budget), the same in every figure."""
    return COLORS[list(values).index(value) % len(COLORS)]


def with_interval(value: float, bounds: tuple[float, float], spec: str = ".3g") -> str:
    """'value [lo, hi]', or '—' when there is no value."""
    if not np.isfinite(value):
        return "—"
    return f"{value:{spec}} [{bounds[0]:{spec}}, {bounds[1]:{spec}}]"


def interval_column(table: pd.DataFrame, name: str, spec: str = ".3g") -> list[str]:
    """Column `name` of a table with its `name_lo`/`name_hi` interval, as text per row."""
    bounds = zip(table[f"{name}_lo"], table[f"{name}_hi"])
    return [with_interval(v, b, spec) for v, b in zip(table[name], bounds)]


def error_bars(value: np.ndarray, lo: np.ndarray, hi: np.ndarray) -> dict:
    """Asymmetric plotly error bars (`error_x` or `error_y`) from an interval."""
    return {"type": "data", "symmetric": False, "array": hi - value, "arrayminus": value - lo}


def band(fig: go.Figure, x: Sequence[float], lo: Sequence[float], hi: Sequence[float], name: str):
    """Shade the region between lo and hi along x (an interval around a curve)."""
    x, lo, hi = list(x), list(lo), list(hi)
    fig.add_scatter(x=x + x[::-1], y=lo + hi[::-1], fill="toself", line={"width": 0}, name=name)
