"""Plotly defaults shared by every chapter: one look, our runs vs published figures told apart."""

from __future__ import annotations

import plotly.graph_objects as go
import plotly.io as pio

OURS = {"mode": "lines+markers", "marker": {"size": 8}}
PUBLISHED = {"mode": "markers", "marker": {"size": 11, "symbol": "diamond-open"}}

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
