"""A batched L-BFGS: many independent minimisations at once, each with its own history and step.

Fitting a law from thousands of starting points (Chinchilla's Approach 3 uses 4500) is
thousands of independent problems. One `torch.optim.LBFGS` over their summed objective would
share one line search and one curvature estimate across all of them and crawl; here every row
keeps its own curvature pairs, its own Armijo backtracking step and its own stopping test, and
finished rows drop out of the batch.
"""

from __future__ import annotations

from collections.abc import Callable

import torch


def batched_lbfgs(
    fun: Callable[[torch.Tensor, torch.Tensor], tuple[torch.Tensor, torch.Tensor]],
    x0: torch.Tensor,
    *,
    ftol: float,
    gtol: float,
    max_iter: int,
    history: int = 10,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Minimise each row of x0 independently by L-BFGS with Armijo backtracking.

    A row stops when max|grad| ≤ gtol, when an iteration lowers its objective by at most
    ftol·|f|, or when no step along its direction lowers the objective. Returns the final
    rows, their objectives, and the iterations each took.
    """
    n_rows, dim = x0.shape
    x = x0.clone()
    f, g = fun(x, torch.arange(n_rows))
    s_hist = torch.zeros(history, n_rows, dim, dtype=x.dtype)
    y_hist = torch.zeros_like(s_hist)
    rho = torch.zeros(history, n_rows, dtype=x.dtype)
    stored = torch.zeros(n_rows, dtype=torch.long)  # curvature pairs stored so far
    iters = torch.zeros(n_rows, dtype=torch.long)
    active = torch.arange(n_rows)
    for _ in range(max_iter):
        if len(active) == 0:
            break
        xa, fa, ga, ka = x[active], f[active], g[active], stored[active]
        k = len(active)
        cols = torch.arange(k)
        # Two-loop recursion over each row's own history (unused slots have rho = 0: no effect).
        q = ga.clone()
        coef = torch.zeros(history, k, dtype=x.dtype)
        slots = [(ka - 1 - j) % history for j in range(history)]
        for j, slot in enumerate(slots):
            s, y, r = s_hist[slot, active], y_hist[slot, active], rho[slot, active]
            coef[j] = r * (s * q).sum(-1)
            q -= coef[j, :, None] * y
        s, y, r = s_hist[slots[0], active], y_hist[slots[0], active], rho[slots[0], active]
        first = 1.0 / ga.norm(dim=-1).clamp_min(1e-300)  # no history yet: a unit-length step
        gamma = torch.where(r > 0, (s * y).sum(-1) / (y * y).sum(-1).clamp_min(1e-300), first)
        direction = gamma[:, None] * q
        for j in reversed(range(history)):
            slot = slots[j]
            s, y, r = s_hist[slot, active], y_hist[slot, active], rho[slot, active]
            direction += s * (coef[j] - r * (y * direction).sum(-1))[:, None]
        direction = -direction
        slope = (ga * direction).sum(-1)
        uphill = slope >= 0
        direction[uphill] = -ga[uphill] * first[uphill, None]
        slope = (ga * direction).sum(-1)
        # Backtracking line search, per row, evaluating only rows not yet accepted.
        step = torch.ones(k, dtype=x.dtype)
        x_new, f_new, g_new = xa.clone(), fa.clone(), ga.clone()
        accepted = torch.zeros(k, dtype=torch.bool)
        todo = cols
        for _ in range(60):
            trial = xa[todo] + step[todo, None] * direction[todo]
            ft, gt = fun(trial, active[todo])
            good = ft <= fa[todo] + 1e-4 * step[todo] * slope[todo]
            hit = todo[good]
            x_new[hit], f_new[hit], g_new[hit] = trial[good], ft[good], gt[good]
            accepted[hit] = True
            todo = todo[~good]
            if len(todo) == 0:
                break
            step[todo] *= 0.5
        s, y = x_new - xa, g_new - ga
        sy = (s * y).sum(-1)
        update = accepted & (sy > 1e-300)
        rows_u, slot_u = active[update], ka[update] % history
        s_hist[slot_u, rows_u], y_hist[slot_u, rows_u] = s[update], y[update]
        rho[slot_u, rows_u] = 1.0 / sy[update]
        stored[rows_u] += 1
        x[active], f[active], g[active] = x_new, f_new, g_new
        iters[active] += 1
        done = ~accepted | (g_new.abs().amax(-1) <= gtol) | ((fa - f_new) <= ftol * f_new.abs())
        active = active[~done]
    return x, f, iters
