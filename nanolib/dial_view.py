"""The dial's figures: what each scaling fit predicts at any compute, drawn over the sweep's runs.

A `DialView` holds an isoFLOP sweep (the rows of `nanolib.sweep.read_sweep`), the `Dial` of its
models and one fit per (method, counting convention) — `IsoFlopFit` for "Approach 2",
`Approach3Fit` for "Approach 3". For a compute C it draws each budget's runs and fitted curve,
the isoFLOP curve the fit predicts at C and its optimum (with the depth nearest to it):

- `static(flops_steps, start)`: one plotly figure with a menu (fit × convention) and a slider
  (C), every position precomputed, so it works on a static page without a kernel;
- `live(flops_steps, start, y_range)`: a FigureWidget with ipywidgets controls that also refits
  on the budgets ticked, redrawn on every change (it needs a running kernel).
"""

from __future__ import annotations

import math
import warnings
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import pandas as pd
import plotly.graph_objects as go

from nanolib.model import CONVENTIONS
from nanolib.plots import BOLD, DOT, STAR, color_of, figure
from nanolib.scaling import Dial, ScalingWarning, fit_approach3, fit_isoflop

METHODS = ("Approach 2", "Approach 3")
EMPTY = {"n": [], "loss": [], "n_opt": None, "loss_opt": None, "label": ""}


@dataclass
class DialView:
    """A sweep, the dial of its models, and fits keyed by (method, convention), for drawing."""

    sweep: pd.DataFrame
    dial: Dial
    fits: dict[tuple[str, str], Any]

    @property
    def budgets(self) -> list[float]:
        """The sweep's budgets, ascending."""
        return sorted(self.sweep.budget.unique())

    def fitted_curve(
        self, method: str, convention: str, fit: Any, budget: float, n: np.ndarray
    ) -> np.ndarray | None:
        """One budget's fitted isoFLOP curve at sizes n (None where the fit draws none)."""
        if method == "Approach 3":
            return fit.loss(n, budget / self.dial.flops_per_token(n, convention))
        row = fit.budgets[np.isclose(fit.budgets.budget, budget)]
        return fit.parabola(budget, n) if len(row) and row.c2.iloc[0] > 0 else None

    def predicted(self, method: str, convention: str, fit: Any, flops: float) -> dict:
        """The isoFLOP curve a fit predicts at `flops`, its optimum and a label (EMPTY if none)."""
        if method == "Approach 3":
            opt = self.dial.optimum(fit, flops, convention)
            n_opt, d_opt, loss_opt = opt["n_opt"][0], opt["d_opt"][0], opt["loss"][0]

            def curve(n: np.ndarray) -> np.ndarray:
                return fit.loss(n, flops / self.dial.flops_per_token(n, convention))
        else:
            n_opt, d_opt, loss_opt = fit.n_opt(flops), fit.d_opt(flops), fit.loss_opt(flops)

            def curve(n: np.ndarray) -> np.ndarray:
                return fit.predicted_curve(flops, n)

        if not np.isfinite(n_opt):
            return EMPTY
        n = np.geomspace(n_opt / 8, n_opt * 8, 60)
        depth = self.dial.nearest_depth(n_opt, convention)
        label = (
            f"N ≈ {n_opt:,.0f} (depth ≈ {depth})<br>"
            f"D ≈ {d_opt:,.0f} = {d_opt / n_opt:.1f} per param"
        )
        return {"n": n, "loss": curve(n), "n_opt": n_opt, "loss_opt": loss_opt, "label": label}

    def add_traces(
        self,
        fig: go.Figure,
        method: str,
        convention: str,
        fit: Any,
        flops: float,
        used: Sequence[float],
    ) -> None:
        """Points and fitted curve per budget (`used`: the budgets fitted), then the prediction."""
        budgets = self.budgets
        for b in budgets:
            runs = self.sweep[self.sweep.budget == b]
            n = runs[f"n_params_{convention}"]
            grid = np.geomspace(n.min() / 1.3, n.max() * 1.3, 60)
            color = color_of(b, budgets)
            marker = {"size": 9, "opacity": 1.0 if b in used else 0.3, "color": color}
            fig.add_scatter(x=n, y=runs.val_bpb, mode="markers", name=f"C = {b:.1e}", marker=marker)
            drawn = (
                self.fitted_curve(method, convention, fit, b, grid) if b in used and fit else None
            )
            fig.add_scatter(x=grid, y=drawn, line_color=color, **DOT)
        p = self.predicted(method, convention, fit, flops) if fit else EMPTY
        fig.add_scatter(x=p["n"], y=p["loss"], name="predicted at C", **BOLD)
        text = {"text": [p["label"]], "mode": "markers+text", "textposition": "top center"}
        fig.add_scatter(
            x=[p["n_opt"]], y=[p["loss_opt"]], marker=STAR["marker"], name="optimum", **text
        )

    def static(
        self,
        flops_steps: Sequence[float],
        start: int,
        default: tuple[str, str] = ("Approach 3", "matmul"),
    ) -> go.Figure:
        """Every (method, convention) × every C of `flops_steps`, with a menu and a slider."""
        combos = [(m, c) for c in CONVENTIONS for m in METHODS]
        fig = figure(
            "The dial: predicted isoFLOP curves", "N (matmul parameters)", "val bits per byte", True
        )
        for m, c in combos:
            self.add_traces(fig, m, c, self.fits[m, c], flops_steps[start], self.budgets)
        per_combo = len(fig.data) // len(combos)  # traces per combination; the last two move
        buttons = [
            self._button(i, m, c, per_combo, len(fig.data)) for i, (m, c) in enumerate(combos)
        ]
        moving = [
            i * per_combo + k for i in range(len(combos)) for k in (per_combo - 2, per_combo - 1)
        ]
        steps = [self._step(combos, f, moving) for f in flops_steps]
        active = combos.index(default)
        for trace, shown in zip(fig.data, buttons[active]["args"][0]["visible"]):
            trace.visible = shown
        predicted_y = [np.asarray(y, dtype=float) for step in steps for y in step["args"][0]["y"]]
        lowest = min(np.nanmin(y) for y in predicted_y if np.isfinite(y).any())
        low, high = min(lowest, self.sweep.val_bpb.min()), self.sweep.val_bpb.max()
        menu = {"buttons": buttons, "active": active, "x": 1, "y": 1.18, "xanchor": "right"}
        slider = {"steps": steps, "active": start, "currentvalue": {"prefix": "C = "}}
        return fig.update_layout(
            height=580,
            xaxis_range=buttons[active]["args"][1]["xaxis.range"],
            yaxis_range=[low - 0.05 * (high - low), high + 0.15 * (high - low)],
            updatemenus=[menu],
            sliders=[{**slider, "pad": {"t": 40}}],
        )

    def _button(self, i: int, method: str, convention: str, per_combo: int, total: int) -> dict:
        """The menu entry that shows combination i's traces and its N axis."""
        visible = [j // per_combo == i for j in range(total)]
        n_all = self.sweep[f"n_params_{convention}"]
        x_range = [math.log10(n_all.min() / 2), math.log10(n_all.max() * 20)]
        layout = {"xaxis.title.text": f"N ({convention} parameters)", "xaxis.range": x_range}
        label = f"{method} · N = {convention}"
        return {"label": label, "method": "update", "args": [{"visible": visible}, layout]}

    def _step(self, combos: list[tuple[str, str]], flops: float, moving: list[int]) -> dict:
        """The slider position that moves every combination's prediction to `flops`."""
        ps = [self.predicted(m, c, self.fits[m, c], flops) for m, c in combos]
        data = {
            "x": [v for p in ps for v in (p["n"], [p["n_opt"]])],
            "y": [v for p in ps for v in (p["loss"], [p["loss_opt"]])],
            "text": [v for p in ps for v in (None, [p["label"]])],
        }
        return {"label": f"{flops:.1e}", "method": "restyle", "args": [data, moving]}

    def refit(self, method: str, convention: str, used: Sequence[float]) -> Any:
        """The fit on the `used` budgets only (None with too few runs for it)."""
        runs, n_col = self.sweep[self.sweep.budget.isin(used)], f"n_params_{convention}"
        if method == "Approach 2" and len(used) >= 2:
            with warnings.catch_warnings():  # a flagged budget shows as a missing curve instead
                warnings.simplefilter("ignore", ScalingWarning)
                return fit_isoflop(runs, n_col, tokens_col="tokens")
        if method == "Approach 3" and len(runs) >= 5:
            from_full_fit = np.array([list(self.fits[method, convention].log_params.values())])
            return fit_approach3(runs[n_col], runs.tokens, runs.val_bpb, grid=from_full_fit)
        return None

    def figure(
        self,
        method: str,
        convention: str,
        flops: float,
        used: Sequence[float],
        y_range: Sequence[float],
    ) -> go.Figure:
        """The dial for one setting, refitted on the `used` budgets."""
        fit = self.refit(method, convention, used)
        out = figure(
            f"The dial: {method}, N = {convention}", f"N ({convention} parameters)", "val bpb", True
        )
        self.add_traces(out, method, convention, fit, flops, used)
        return out.update_layout(height=520, yaxis_range=list(y_range))

    def live(self, flops_steps: Sequence[float], start: float, y_range: Sequence[float]) -> Any:
        """ipywidgets controls and a FigureWidget that is redrawn on every change.

        The box's children: HBox(method, convention), HBox(budgets fitted, C), the figure.
        """
        import ipywidgets as widgets

        method = widgets.ToggleButtons(options=METHODS, value="Approach 3")
        convention = widgets.Dropdown(options=CONVENTIONS, value="matmul", description="N counts")
        options = [(f"{b:.1e}", b) for b in self.budgets]
        used = widgets.SelectMultiple(
            options=options, value=tuple(self.budgets), description="fit on"
        )
        lo, hi = math.log10(flops_steps[0]), math.log10(flops_steps[-1])
        flops = widgets.FloatLogSlider(
            value=start, min=lo, max=hi, description="C", readout_format=".2e"
        )

        def draw() -> go.Figure:
            return self.figure(method.value, convention.value, flops.value, used.value, y_range)

        shown = go.FigureWidget(draw())

        def redraw(_change: Any = None) -> None:
            new = draw()
            with shown.batch_update():
                for old, trace in zip(shown.data, new.data):
                    old.update(x=trace.x, y=trace.y, text=trace.text, marker=trace.marker)
                shown.layout.title = new.layout.title
                shown.layout.xaxis.title = new.layout.xaxis.title

        for control in (method, convention, used, flops):
            control.observe(redraw, "value")
        return widgets.VBox(
            [widgets.HBox([method, convention]), widgets.HBox([used, flops]), shown]
        )
