"""nanolib.dial_view: the live dial builds in-process (plotly's FigureWidget needs anywidget)."""

import numpy as np
import pandas as pd
import plotly.graph_objects as go
import pytest

from nanolib.dial_view import DialView
from nanolib.model import CONVENTIONS
from nanolib.scaling import Dial, fit_approach3, fit_isoflop

BUDGETS = (1e11, 2e11, 4e11)


@pytest.fixture(scope="module")
def view() -> DialView:
    """A sweep of a small dial with a Chinchilla-like loss, and both fits per convention."""
    dial = Dial.of(vocab_size=512, seq_len=64, aspect_ratio=8, head_dim=8, depths=range(1, 11))
    rows = []
    for budget in BUDGETS:
        for depth in range(1, 9):
            row = dial.table[dial.table.depth == depth].iloc[0]
            tokens = budget / row.flops_per_token
            n = row["matmul"]
            loss = 1.0 + 40 * n**-0.35 + 60 * tokens**-0.35
            counts = {f"n_params_{c}": row[c] for c in CONVENTIONS}
            rows.append(
                {"budget": budget, "depth": depth, "tokens": tokens, "val_bpb": loss, **counts}
            )
    sweep = pd.DataFrame(rows)
    start = np.array([[np.log(40), np.log(60), np.log(1.0), 0.35, 0.35]])
    fits = {}
    for c in CONVENTIONS:
        n = sweep[f"n_params_{c}"]
        fits["Approach 2", c] = fit_isoflop(sweep, f"n_params_{c}", tokens_col="tokens")
        fits["Approach 3", c] = fit_approach3(n, sweep.tokens, sweep.val_bpb, grid=start)
    return DialView(sweep, dial, fits)


def test_live_dial_is_a_figure_widget_that_redraws(view):
    """Built in this process, no kernel: plotly's FigureWidget is an anywidget, so without
    anywidget installed this fails (the dependency pyproject.toml declares for it)."""
    box = view.live(np.geomspace(1e10, 1e13, 7), 1e11, (1.0, 3.0))
    method, flops, shown = box.children[0].children[0], box.children[1].children[1], box.children[2]
    assert isinstance(shown, go.FigureWidget)
    before = [list(t.y) if t.y is not None else None for t in shown.data]
    flops.value = flops.value * 100
    after = [list(t.y) if t.y is not None else None for t in shown.data]
    assert after != before, "moving C redrew nothing"
    method.value = "Approach 2"
    assert shown.layout.title.text.startswith("The dial: Approach 2")
