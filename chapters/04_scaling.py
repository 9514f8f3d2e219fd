# ---
# jupyter:
#   jupytext:
#     formats: ipynb,py:percent
#   kernelspec:
#     display_name: Python 3 (ipykernel)
#     language: python
#     name: python3
# ---

# %% [markdown]
# # 4. Scaling laws
#
# Chapter 3 trained one model for one budget. With twice the compute, should the next model be
# bigger, or the same model trained longer? Scaling laws answer with a measurement: train many
# models at a few fixed compute budgets, find the best size at each, and fit how that best size
# grows with compute. The fit then tells you, for a budget you have not tried, how big a model to
# train and on how many tokens — the **tokens-per-parameter ratio** that chapter 3 took on trust.
#
# **What you will build**
# - Chinchilla's two fitting methods — isoFLOP parabolas (Approach 2) and the parametric law
#   L(N, D) (Approach 3) — checked against the published re-analysis of Chinchilla's own runs;
# - an isoFLOP sweep of our own: a planner that turns budgets × depths into runs, and a runner
#   you can kill and restart, then both fits on it, a dial that replots them, and our ratio
#   beside nanochat's and Chinchilla's;
# - the miniseries (a family of compute-optimal models that tests the fit, and which chapter 5
#   evaluates) and a look at how a model's shape, not only its size, sets its speed.
#
# **Prerequisites**: chapter 1's tokenizer and chapter 3's training recipe (this chapter reuses
# both); chapter 2's three ways of counting parameters.
#
# | preset | isoFLOP sweep | miniseries | hardware | time |
# |---|---|---|---|---|
# | `smoke` | 3 budgets × 3 depths, ≤ 2 × 10⁹ FLOPs | depths 1–2 | any CPU | ≈ 30 s |
# | `tiny` | 3 budgets × 5 depths, 1–4 × 10¹¹ FLOPs | depths 2–4 | 2 CPU cores | ≈ 8 min |
# | `d12` | 3 budgets × 5 depths, 3 × 10¹⁶–3 × 10¹⁷ | depths 4–12 | 1 × H100 | ≈ 1.5 + 0.9–1.2 h |
# | `miniseries` | 3 budgets × 4 depths, 1–4.6 × 10¹⁸ | d10…d20 | 8 × H100 | ≈ 3 + 4–5 h |
# | `speedrun` | as `miniseries` | as `miniseries` | 8 × H100 | ≈ 3 + 4–5 h |
#
# The miniseries trains every model at the ratio the sweep fits (at `smoke` a fixed one). GPU
# times are sweep + miniseries at an assumed 40% MFU (the miniseries at nanochat's ratios, 8 to
# 10.5 tokens per parameter, until our sweep has fitted one); the section *The GPU presets*
# derives them from book.yml with the same planner, and a run's manifest records what it took.

# %% tags=["parameters"]
# Every None takes the preset's value (`nanobook params 04 --preset tiny` lists them, with ranges)
preset = "tiny"  # type: str  a preset of book.yml: smoke | tiny | d12 | miniseries | speedrun
sweep_budgets = None  # type: list  FLOPs budgets of the IsoFLOP sweep
sweep_depths = None  # type: list  per budget, the depths trained at that budget
sweep_vocab_size = None  # type: int  vocabulary of the sweep's own tokenizer
aspect_ratio = None  # type: int  model width per block: d_model is aspect_ratio × depth
head_dim = None  # type: int  channels per attention head
batch_tokens = None  # type: int  tokens per optimizer step
device_batch_size = None  # type: int  rows per forward/backward
warmup_steps = None  # type: int  steps of linear learning-rate warmup
eval_tokens = None  # type: int  val tokens per evaluation
checkpoint_every = None  # type: int  steps between checkpoints (0: at the end only)
sweep_time_budget_s = None  # type: int  seconds the sweep may take: a longer plan fails at once
cpu_threads = None  # type: int  torch threads per sweep run on a CPU (None: torch's default)
family_depths = None  # type: list  depths of the miniseries trained at the fitted ratio
family_tokens_per_param = None  # type: float  the miniseries' tokens per parameter (None: fitted)
n_bootstrap = None  # type: int  bootstrap resamples behind each fit's band
shape_depth = None  # type: int  depth of the model-shape comparison
shape_configs = None  # type: list  [d_model, heads] pairs of the model-shape comparison
seed = None  # type: int  random seed (runs and bootstraps)
run_dir = None  # type: str  where the run is written (None: runs/<preset>/04_scaling)

# %%
import math
import os
import time
from dataclasses import replace
from functools import partial

import numpy as np
import pandas as pd
import torch
from IPython.display import display

from nanolib import plots, scaling, sweep
from nanolib.claims import expect, say
from nanolib.data import iter_texts
from nanolib.device import gpu_cost
from nanolib.dial_view import DialView
from nanolib.model import CONVENTIONS
from nanolib.parallel import side_by_side
from nanolib.plots import OURS, PUBLISHED, figure, with_interval
from nanolib.runs import start_chapter
from nanolib.tokenizer import META_FILE, Tokenizer
from nanolib.train import plan, recipe_for, vocab_size_for

# %%
run = start_chapter("04_scaling", preset, globals())
if run.device == "cpu" and run.p.cpu_threads:
    torch.set_num_threads(run.p.cpu_threads)  # why one thread: see "Planning from measured speed"
recipe = recipe_for(run.book, preset)  # chapter 3's data, context and optimiser
tokenizer_dir = run.artifact("tokenizer")
print(run.summary())

# %% [markdown]
# ## Two ways to read a scaling law
#
# Fix a compute budget C. A model of N parameters trained on D tokens costs about C = 6·N·D
# FLOPs (chapter 2: 6 per parameter per token, forward and backward), so at fixed C a bigger
# model sees fewer tokens. Too small a model cannot hold what the data teaches; too big a one has
# not seen enough data. In between is a best size N_opt(C) — and with it D_opt(C) and the ratio
# D_opt/N_opt. Hoffmann et al. (2022, "Chinchilla") measured it three ways; we use two:
#
# - **Approach 2, isoFLOP profiles.** Train several sizes at each budget; fit a parabola to the
#   final loss against log N; its vertex is N_opt(C). Then fit straight lines in log-log:
#   N_opt ∝ C^a and D_opt ∝ C^b.
# - **Approach 3, a parametric law.** Fit every run at once with
#   $L(N, D) = E + A/N^{\alpha} + B/D^{\beta}$ — an irreducible loss E, a penalty for a small
#   model and one for little data. Minimising it along C = 6ND gives the frontier in closed form,
#   $N_{opt} \propto C^{\beta/(\alpha+\beta)}$ and $D_{opt} \propto C^{\alpha/(\alpha+\beta)}$.
#
# Both live in `nanolib.scaling`. Before trusting them on our runs, we check them on Chinchilla's.

# %% [markdown]
# ## Warm-up: Chinchilla's own runs
#
# Chinchilla did not publish its runs, but its Figure 4 shows them as coloured dots. Besiroglu et
# al. (2024, Epoch AI) extracted the 245 dots from the figure's SVG: size N, compute C and the loss
# read off the colour bar; tokens follow as D = C/(6N). Epoch drop the five highest losses
# (outliers of the colour decoding) and fit the other 240; so do we.

# %%
chinchilla = scaling.load_chinchilla()
n_span, c_span = f"{chinchilla.N.min():.3g}…{chinchilla.N.max():.3g}", f"{chinchilla.C.min():.2g}…"
print(f"{len(chinchilla)} runs: N {n_span}, C {c_span}{chinchilla.C.max():.2g}")
fig = figure("Chinchilla's runs (Epoch's extraction)", "parameters N", "loss (nats/token)", True)
for budget, runs in chinchilla.dropna(subset=["budget"]).groupby("budget"):
    fig.add_scatter(x=runs.N, y=runs.loss, mode="markers", name=f"C = {budget:.0e}")
fig.show()

# %% [markdown]
# ### Approach 3, reproduced
#
# `fit_approach3` follows Hoffmann et al.'s recipe as Epoch re-ran it: a Huber loss (δ = 10⁻³)
# on log L, summed over the runs, minimised by L-BFGS from each of 4,500 starting points, the best
# kept; then bootstrap resamples of the runs, each refitted, give standard errors. Epoch report
# the same recipe's optimum (their rerun of Hoffmann's method) and, separately, their own
# maximum-likelihood estimate; Hoffmann et al. published eq. 10.

# %%
t0 = time.perf_counter()
chin3 = scaling.fit_approach3(
    chinchilla.N, chinchilla.D, chinchilla.loss, n_bootstrap=run.p.n_bootstrap, seed=run.p.seed
)
chin3_s = time.perf_counter() - t0
n_boot = run.p.n_bootstrap
print(f"4,500 starts + {n_boot:,} bootstrap refits on {chin3.n_points} runs: {chin3_s:.1f} s")

# %%
published = scaling.published_values
epoch_est, hoffmann = published("epoch", "epoch_estimate"), published("chinchilla", "eq10_rounded")
compare = pd.DataFrame({
    "ours": {k: getattr(chin3, k) for k in (*scaling.PARAM_NAMES, "a")},
    "ours: SE": chin3.se,
    "Epoch: Hoffmann's recipe rerun": published("epoch", "hoffmann_recipe_replication"),
    "Epoch: estimate": epoch_est,
    "Epoch: SE": published("epoch", "epoch_estimate", "se"),
    "Hoffmann et al. eq. 10": hoffmann,
})  # fmt: skip
published_a = compare.loc["beta"] / (compare.loc["alpha"] + compare.loc["beta"])
compare.loc["a"] = compare.loc["a"].fillna(published_a.drop(["ours: SE", "Epoch: SE"]))
compare.loc[[*scaling.PARAM_NAMES, "a"]].round(4)

# %% [markdown]
# (Where a study printed no a, the row shows β/(α+β) from its printed α and β.)
#
# Our optimum is Epoch's rerun of the recipe to three or four digits, and our bootstrap standard
# errors are theirs to within the scatter of a bootstrap. Epoch's own estimate (a slightly
# different likelihood) lands within one standard error. The last row is the exponent of
# N_opt ∝ C^a, a = β/(α+β) ≈ 0.51: parameters and tokens should grow about equally with compute.

# %% [markdown]
# ### The objective, written out
#
# What did the optimiser minimise? The law predicts log L as a log-sum-exp of three terms,
# log(A/N^α + B/D^β + E), and each run's residual against its observed log L goes through a
# Huber function: quadratic for residuals below δ = 10⁻³, linear beyond, so a few badly
# extracted points cannot drag the fit. Summed over the runs — here by hand, evaluated at the
# optimum `fit_approach3` found, and checked against the library's value:


# %%
def huber(r: np.ndarray, delta: float = 1e-3) -> np.ndarray:
    """Quadratic within ±delta, linear outside: a loss that outliers cannot dominate."""
    return np.where(np.abs(r) <= delta, 0.5 * r**2, delta * (np.abs(r) - 0.5 * delta))


def objective(E, A, B, alpha, beta, N=chinchilla.N, D=chinchilla.D, loss=chinchilla.loss):
    """Σ Huber(log L(N, D) − log loss) over the runs, L = E + A/N^α + B/D^β."""
    terms = [np.log(A) - alpha * np.log(N), np.log(B) - beta * np.log(D), np.log(E) + 0 * N]
    return huber(np.logaddexp.reduce(terms) - np.log(loss)).sum()


# %%
best = {k: getattr(chin3, k) for k in scaling.PARAM_NAMES}
by_hand = objective(**best)
assert np.isclose(by_hand, chin3.objective, rtol=1e-9), (by_hand, chin3.objective)
nudged = {k: objective(**{**best, k: v * 1.01}) / by_hand for k, v in best.items()}
assert all(ratio > 1 for ratio in nudged.values()), nudged
print(f"objective at the optimum: by hand {by_hand:.8f}, library {chin3.objective:.8f}")
pd.Series(nudged, name="objective ÷ optimum, one parameter × 1.01").round(4).to_frame().T

# %% [markdown]
# Every nudge of 1% raises the objective (the cell checks it): the optimum is a minimum, and the
# sum above is all the fit is. The same function scores any set of constants, which is how the
# published laws are judged next.

# %% [markdown]
# ### The replication critique
#
# Hoffmann et al.'s eq. 10 does not describe these points. Evaluate each set of constants on the
# same 240 runs: the objective (lower is better), the residuals, and the tokens per parameter
# each prescribes. The paper's own Table 3 (Approach 1) prescribes ≈ 20.


# %%
def law(constants: dict) -> scaling.Approach3Fit:
    """An L(N, D) from published constants E, A, B, alpha, beta."""
    return scaling.Approach3Fit.from_constants(**{k: constants[k] for k in scaling.PARAM_NAMES})


laws = {
    "ours (= Epoch's rerun)": chin3,
    "Epoch's estimate": law(epoch_est),
    "Hoffmann eq. 10 (rounded)": law(hoffmann),
    "Hoffmann eq. 10 (TeX digits)": law(published("chinchilla", "eq10_tex")),
}
critique = pd.DataFrame({
    name: {"objective": objective(**{k: getattr(fit, k) for k in scaling.PARAM_NAMES}),
           "D/N at 1e21 FLOPs": fit.tokens_per_param(1e21),
           "D/N at 5.88e23 (Chinchilla's)": fit.tokens_per_param(5.88e23)}
    for name, fit in laws.items()
}).T  # fmt: skip
critique.style.format("{:.1f}").format("{:.6f}", subset=["objective"])

# %%
fig = figure("Chinchilla's runs against three laws", "training FLOPs C", "ln(observed/predicted)")
fig.update_xaxes(type="log")
for name in ("ours (= Epoch's rerun)", "Hoffmann eq. 10 (TeX digits)", "Hoffmann eq. 10 (rounded)"):
    residual = np.log(chinchilla.loss / laws[name].loss(chinchilla.N, chinchilla.D))
    fig.add_scatter(x=chinchilla.C, y=residual, mode="markers", name=name)
fig.add_hline(y=0, line_dash="dot")
fig.show()

# %% [markdown]
# The constants as printed predict every run's loss 1–2% too high: their objective is four
# times ours. With all the digits of the paper's TeX source they fit the points almost as well as
# our optimum — and still prescribe about 34 tokens per parameter at 10²¹ FLOPs (50 with the
# printed digits) where the runs say ≈ 21: the frontier D/N = G⁻²(C/6)^(b−a) is sensitive to
# small changes of α and β. Epoch showed the difference is far beyond noise (a likelihood-ratio
# test rejects Hoffmann's values) and traced it to an optimiser stopped early and to rounding.
# Refitted properly, Approach 3 agrees with Approaches 1 and 2: ≈ 20 tokens per parameter, slowly
# falling with compute.

# %% [markdown]
# ### Approach 2 on the same runs
#
# The same 240 points, read the other way: a parabola in log N per budget, its vertex, then power
# laws. The interval is the 10th–90th percentile of bootstrap resamples of the runs within each
# budget — Chinchilla's own convention in its Table 2. D_opt is read off the runs' own token
# counts (the `D` column, each run's own C over 6N), not off the nominal budget: the extracted
# runs do not sit exactly on their isoFLOP lines, and C_budget/(6N) would shift every ratio.
# `fit_isoflop` does this by default — it uses a `tokens` or `D` column when the data has one and
# falls back to C/(6N) only when it has neither; `tokens_rule` says which it used.

# %%
t0 = time.perf_counter()
chin2 = scaling.fit_isoflop(
    chinchilla, n_col="N", loss_col="loss", n_bootstrap=n_boot, seed=run.p.seed
)
chin2_s = time.perf_counter() - t0
nominal = scaling.fit_isoflop(chinchilla, n_col="N", loss_col="loss", tokens_col=None)
on_line = chinchilla.dropna(subset=["budget"])
off = on_line.C / on_line.budget - 1
print(f"Approach 2 with {n_boot:,} bootstrap refits: {chin2_s:.2f} s; D from {chin2.tokens_rule}")
print(f"runs' C vs their budget: median {off.median():+.1%}, {off.min():+.0%} to {off.max():+.0%}")
lo_c = chin2.budgets.budget.min()
print(f"D/N at {lo_c:.0e}: {chin2.budgets.tokens_per_param.iloc[0]:.1f} from the runs' D, "
      f"{nominal.budgets.tokens_per_param.iloc[0]:.1f} from C_budget/(6N)")  # fmt: skip
chin2.budgets[["budget", "n_points", "n_opt", "d_opt", "tokens_per_param", "loss_opt", "flag"]]

# %% [markdown]
# Each row is one parabola. Here is the one of C = 10²⁰ by hand: a least-squares quadratic in
# x = ln N through that budget's runs, loss ≈ c₂x² + c₁x + c₀, whose vertex x* = −c₁/(2c₂) is
# ln N_opt — checked against the library's row:

# %%
one = chinchilla[chinchilla.budget == 1e20]  # the runs of one isoFLOP line
c2, c1, c0 = np.polyfit(np.log(one.N), one.loss, 2)
assert c2 > 0  # it opens upward: the U has a bottom
n_vertex, loss_vertex = math.exp(-c1 / (2 * c2)), c0 - c1**2 / (4 * c2)
row = chin2.budgets.set_index("budget").loc[1e20]
assert np.isclose(n_vertex, row.n_opt, rtol=1e-6), (n_vertex, row.n_opt)
assert np.isclose(loss_vertex, row.loss_opt, rtol=1e-9), (loss_vertex, row.loss_opt)
print(f"C = 1e20, {len(one)} runs: N_opt = {n_vertex:.4g} by hand, {row.n_opt:.4g} in the library")

# %% [markdown]
# Then the power laws N_opt ∝ C^a and D_opt ∝ C^b are straight lines through the vertices in
# log-log, and a bootstrap (runs resampled within each budget) gives their intervals:

# %%
table2 = published("chinchilla", "approach_2")
ratio_1e21 = with_interval(chin2.tokens_per_param(1e21), chin2.tokens_per_param_interval(1e21))
pd.DataFrame({
    "a (N_opt ∝ C^a)": [with_interval(chin2.a, chin2.interval("a")), table2["a"], chin3.a],
    "b (D_opt ∝ C^b)": [with_interval(chin2.b, chin2.interval("b")), table2["b"], chin3.b],
    "D/N at 1e21": [ratio_1e21, "—", chin3.tokens_per_param(1e21)],
}, index=["ours, Approach 2 [80%]", "Chinchilla Table 2, Approach 2",
          "ours, Approach 3"]).T  # fmt: skip

# %%
fig = figure("Approach 2 on Chinchilla", "parameters N", "loss (nats/token)", True)
for r in chin2.budgets.itertuples():
    runs, grid = chinchilla[chinchilla.budget == r.budget], np.geomspace(r.n_lo, r.n_hi)
    style = {"legendgroup": f"{r.budget}"}
    fig.add_scatter(x=runs.N, y=runs.loss, mode="markers", name=f"{r.budget:.0e}", **style)
    fig.add_scatter(x=grid, y=chin2.parabola(r.budget, grid), **style, **plots.DOT)
fig.add_scatter(x=chin2.budgets.n_opt, y=chin2.budgets.loss_opt, name="vertex: N_opt", **plots.STAR)
fig.show()

# %% [markdown]
# ## Our sweep: the plan
#
# Now our own runs. The models are chapter 2's dial — depth sets the width (`aspect_ratio` ×
# depth, in heads of `head_dim` channels) — trained with chapter 3's recipe (data, context,
# Muon and AdamW, warmup and warmdown); only the batch, the warmup and the evaluation are sized
# for short runs. Each run gets a FLOPs **budget** instead of a ratio, and `plan_isoflop` turns
# budgets × depths into steps: steps = budget / (flops_per_token × batch_tokens), rounded, with
# chapter 2's flops_per_token (6·N_matmul plus attention, forward and backward). Every run
# spends its budget to within one step. Each budget samples five depths around where its
# optimum should be.
#
# At `tiny` two choices make the sweep affordable. A **512-token vocabulary**, trained here on
# the same text: with chapter 1's 4,096 tokens even a one-layer model is mostly embedding and
# output head, its best size at CPU budgets lies below the smallest depth, and the work per token
# is dominated by the 4,096-way softmax. Bits per byte do not depend on the tokenizer, so the runs
# still measure the same thing. And **one CPU thread per run, one run per core**: models this
# small gain little from a second thread, and an OpenMP thread spinning on a core that other
# processes share can slow training several-fold; the runs are independent, so every core trains
# one of them at a time (`nanolib.parallel`, one worker process per core — or per GPU on a
# multi-GPU node). The GPU presets use chapter 1's tokenizer and nanochat's dial.

# %%
sweep_dir = run.path("sweep")  # this chapter's `sweep` artifact
sweep_tokenizer_dir = sweep_dir / "tokenizer" if run.p.sweep_vocab_size else tokenizer_dir
if run.p.sweep_vocab_size and not (sweep_tokenizer_dir / META_FILE).exists():
    # chapter 1's recipe, a smaller vocabulary
    tok = run.book.resolve(run.book.producer_of("tokenizer").slug, preset)
    texts = iter_texts(recipe.data, "train", tok["max_chars"], tok["doc_cap"])
    Tokenizer.train(texts, run.p.sweep_vocab_size).save(sweep_tokenizer_dir)
vocab_size = Tokenizer.load(sweep_tokenizer_dir).vocab_size
base = sweep.sweep_base(
    run.book, preset, run.params, tokenizer_dir=str(sweep_tokenizer_dir), device=run.device
)
dial = scaling.Dial.of(vocab_size, base.seq_len, base.aspect_ratio, base.head_dim)
print(f"vocabulary {vocab_size:,}; the dial's first depths:")
dial.table.head(8).set_index("depth")

# %% [markdown]
# ### Planning from measured speed
#
# A plan is only useful if it finishes. We time a few training steps of each depth on random
# tokens (`nanolib.sweep.measure_flops_per_s`, the measurement `bench/train_throughput.py`
# prints too), turn tokens per second into achieved FLOP/s, and let the planner estimate every
# run — training plus evaluations. A plan over this preset's time budget
# (`sweep_time_budget_s`) is refused, with the numbers to change, before anything trains. Note
# how few FLOP/s the smallest models reach: their time goes to the embedding, the softmax over
# the vocabulary and per-operation overheads that a FLOPs count ignores — so at a fixed budget
# the *smallest* model is the slowest run.


# %%
def flops_per_s(cfg) -> float:
    """Achieved training FLOP/s of a config on this run's device and processes."""
    return sweep.measure_flops_per_s(cfg, vocab_size, run.device, run.nproc)


per_budget = sweep.depths_per_budget(run.p.sweep_budgets, run.p.sweep_depths)
speed = {d: flops_per_s(replace(base, depth=d)) for d in sorted(set().union(*per_budget))}
pd.Series(speed, name="achieved FLOP/s").rename_axis("depth").to_frame().T.map("{:.2e}".format)

# %%
limit, budgets_asked = run.p.sweep_time_budget_s, run.p.sweep_budgets
planned = sweep.plan_isoflop(
    base, budgets_asked, per_budget, vocab_size, run.nproc, flops_per_s=speed, time_budget_s=limit
)
total_s = planned.est_s.sum()
print(
    f"{len(planned)} runs, {planned.flops.sum():.3g} FLOPs, ≈ {total_s:.0f} s (allowed {limit:,})"
)
shown = ["budget", "depth", "d_model", "n_params_matmul", "num_steps", "tokens", "tokens_per_param"]
planned[[*shown, "flops", "est_s"]].round({"tokens_per_param": 2, "est_s": 1})

# %% [markdown]
# ## Our sweep: the runs
#
# The heavy step is one call. `run_sweep` trains each planned run through chapter 3's launcher
# (`nanolib.train.launch`: in this process, or `torchrun` on several GPUs) into its own folder of
# `sweep/`, and appends one row to `sweep/sweep.csv` — budget, depth, N under each counting
# convention, tokens, FLOPs, final val bits per byte, wall time — only after the run has
# finished. If the kernel dies, run the notebook again: rows already in the CSV are skipped, a
# run killed mid-way resumes from its last checkpoint, and nothing is trained twice (the tests
# kill a sweep with SIGKILL and check exactly that). The runs train side by side, as many as
# there are cores (or GPUs), the longest first, under one progress bar; each run's own lines go
# to the `train.log` in its folder.

# %%
workers = side_by_side(run.device, run.nproc)
t0 = time.perf_counter()
sweep_runs = sweep.run_sweep(planned, base, sweep_dir, run.nproc, workers=workers)
sweep_s = time.perf_counter() - t0
budgets = sorted(sweep_runs.budget.unique())
print(f"{len(sweep_runs)} runs in {sweep_dir / sweep.SWEEP_CSV}; this call took {sweep_s:.0f} s")
print(f"{workers} side by side; the runs' own times add up to {sweep_runs.wall_s.sum():.0f} s")
sweep_runs.round({"val_bpb": 4, "wall_s": 1})

# %% [markdown]
# ## U-shaped curves and Approach 2
#
# Each budget's runs trace a U: on the left, models too small for the data they see; on the
# right, models too big for the few tokens the budget buys them. Approach 2 fits a parabola in
# log N (N counted as `matmul` parameters, this book's convention) through each budget and takes
# its vertex; D_opt is read off the budget's own runs at that N (our FLOPs per token are not
# 6·N, so D = C/6N would be off). A budget whose minimum its runs do not bracket is flagged and
# left out of the power laws, with a warning that says why. We fit all three counting
# conventions now; the section after next compares them.

# %%
t0 = time.perf_counter()
fits2 = {
    c: scaling.fit_isoflop(sweep_runs, f"n_params_{c}", n_bootstrap=n_boot, seed=run.p.seed)
    for c in CONVENTIONS
}
print(f"D_opt from the runs' own {fits2['matmul'].tokens_rule}")
fit2_s, fit2 = time.perf_counter() - t0, fits2["matmul"]
vertices = fit2.budgets[fit2.budgets.ok]
print(f"Approach 2 on {len(sweep_runs)} runs × 3 conventions: {fit2_s:.2f} s")

# %%
fig = figure("isoFLOP curves of our sweep", "N (matmul parameters)", "val bits per byte", True)
for r in fit2.budgets.itertuples():
    runs, grid = sweep_runs[sweep_runs.budget == r.budget], np.geomspace(r.n_lo / 1.3, r.n_hi * 1.3)
    dots = {"mode": "markers", "marker": {"size": 9, "color": plots.color_of(r.budget, budgets)}}
    fig.add_scatter(x=runs.n_params_matmul, y=runs.val_bpb, name=f"C = {r.budget:.1e}", **dots)
    curve = fit2.parabola(r.budget, grid) if r.c2 > 0 else None
    fig.add_scatter(x=grid, y=curve, line_color=plots.color_of(r.budget, budgets), **plots.DOT)
fig.add_scatter(x=vertices.n_opt, y=vertices.loss_opt, name="vertex: N_opt", **plots.STAR)
fig.show()

# %%
optima = fit2.budgets.assign(
    n_opt=plots.interval_column(fit2.budgets, "n_opt", ",.0f"),
    tokens_per_param=plots.interval_column(fit2.budgets, "tokens_per_param", ".1f"),
)
shown = ["budget", "n_opt", "d_opt", "tokens_per_param", "loss_opt", "flag"]
display(optima[shown].round({"d_opt": 0, "loss_opt": 4}))
expect(fit2.budgets.ok.all(), "each budget's runs trace a U whose minimum lies inside them",
       preset=run.preset)  # fmt: skip

# %% [markdown]
# ## Approach 3 on our sweep, and how the two differ
#
# The parametric law fits every run at once (N = matmul parameters, D = tokens, loss = val bits
# per byte). Its closed-form frontier assumes C = 6ND; our models spend 6·N_matmul plus attention
# per token, so we minimise the fitted L(N, D) along our own dial instead (`Dial.optimum`:
# D = C / flops_per_token of the model of size N). Both approaches are compared at the
# geometric middle of our budgets, with 10th–90th percentile bootstrap intervals.

# %%
t0 = time.perf_counter()
fits3 = {
    c: scaling.fit_approach3(
        sweep_runs[f"n_params_{c}"],
        sweep_runs.tokens,
        sweep_runs.val_bpb,
        n_bootstrap=n_boot,
        seed=run.p.seed,
    )
    for c in CONVENTIONS
}
fit3_s, fit3 = time.perf_counter() - t0, fits3["matmul"]
c_mid = float(np.exp(np.log(budgets).mean()))
print(f"Approach 3 × 3 conventions: {fit3_s:.1f} s")
print(f"L(N, D) = {fit3.E:.3f} + {fit3.A:.4g}/N^{fit3.alpha:.3f} + {fit3.B:.4g}/D^{fit3.beta:.3f}")

# %%
a3_mid, interval = dial.optimum_interval(fit3, c_mid), scaling.percentile_interval
approach2 = [
    with_interval(fit2.a, fit2.interval("a"), ".2f"),
    with_interval(fit2.b, fit2.interval("b"), ".2f"),
    with_interval(fit2.n_opt(c_mid), fit2.n_opt_interval(c_mid), ",.0f"),
    with_interval(fit2.tokens_per_param(c_mid), fit2.tokens_per_param_interval(c_mid), ".1f"),
]
approach3 = [
    with_interval(fit3.a, interval(fit3.bootstrap.a), ".2f"),
    with_interval(fit3.b, interval(fit3.bootstrap.b), ".2f"),
    with_interval(a3_mid["n_opt"], a3_mid["n_interval"], ",.0f"),
    with_interval(a3_mid["ratio"], a3_mid["ratio_interval"], ".1f"),
]
rows = ["a (N_opt ∝ C^a)", "b (D_opt ∝ C^b)", f"N_opt at {c_mid:.2g}", f"D/N at {c_mid:.2g}"]
pd.DataFrame({"Approach 2 (parabolas)": approach2, "Approach 3 (L(N, D))": approach3}, index=rows)

# %%
grid = np.geomspace(budgets[0] / 3, budgets[-1] * 3, 25)
line = pd.DataFrame([dial.optimum_interval(fit3, f) for f in grid], index=grid)
fig = figure("Compute-optimal size: both approaches", "training FLOPs C", "N_opt (matmul)", 1, 1)
plots.band(
    fig,
    grid,
    [lo for lo, _ in line.n_interval],
    [hi for _, hi in line.n_interval],
    "Approach 3, 80%",
)
fig.add_scatter(x=grid, y=line.n_opt, mode="lines", name="Approach 3 along our dial")
dash = {"mode": "lines", "line": {"dash": "dash"}}
fig.add_scatter(x=grid, y=fit2.n_opt(grid), name="Approach 2 power law", **dash)
bars = plots.error_bars(vertices.n_opt, vertices.n_opt_lo, vertices.n_opt_hi)
fig.add_scatter(
    x=vertices.budget, y=vertices.n_opt, error_y=bars, name="Approach 2 vertices", **plots.STAR
)
fig.show()

# %% [markdown]
# The two approaches answer the same question with different assumptions. Approach 2 trusts only
# each budget's neighbourhood of the minimum and assumes nothing about the loss away from it — but
# it needs each budget's U bracketed, and with three budgets its exponents rest on three points.
# Approach 3 uses every run, the far arms of each U included, through one functional form: its
# answer is only as good as that form across the whole range, and where the form fits the arms
# poorly its optimum drifts away from the vertices. Where they agree, believe both; where they
# disagree, the disagreement is part of the error bar. What this run found, from the table above:

# %%
ratio2, ratio3 = float(fit2.tokens_per_param(c_mid)), float(a3_mid["ratio"])
say(f"At C = {c_mid:.2g} Approach 2 puts the best model at {fit2.n_opt(c_mid):,.0f} matmul "
    f"parameters and **{ratio2:.1f} tokens per parameter**, Approach 3 at "
    f"{a3_mid['n_opt']:,.0f} and **{ratio3:.1f}**; in Approach 2 D grows "
    f"{'faster' if fit2.b > fit2.a else 'slower'} than N (b = {fit2.b:.2f}, a = {fit2.a:.2f}). "
    f"Chinchilla found ≈ 20 and nanochat ≈ 10.5 (`matmul`): ours are {ratio2 / 20:.1f}× and "
    f"{ratio3 / 20:.1f}× Chinchilla's.")  # fmt: skip

# %% [markdown]
# Our models have 5 to 200 thousand parameters and a 512-token vocabulary at `tiny`, seven decades
# of compute below nanochat's, and nothing obliges a ratio to hold across that range. What
# transfers is the method.

# %% [markdown]
# ## Which N? The counting convention moves the ratio
#
# Chapter 2 counted parameters three ways. The runs do not change, but the N we call "the model
# size" does — and with it every tokens-per-parameter ratio. At small sizes the embedding and the
# output head are a large share of a model, so the conventions disagree most there:

# %%
by_convention = {}
for c in CONVENTIONS:
    f2, f3 = fits2[c], dial.optimum_interval(fits3[c], c_mid, c)
    by_convention[c] = {
        "a, Approach 2": with_interval(f2.a, f2.interval("a"), ".2f"),
        "b, Approach 2": with_interval(f2.b, f2.interval("b"), ".2f"),
        "D/N, Approach 2": with_interval(f2.tokens_per_param(c_mid),
                                         f2.tokens_per_param_interval(c_mid)),
        "D/N, Approach 3": with_interval(f3["ratio"], f3["ratio_interval"]),
    }  # fmt: skip
pd.DataFrame(by_convention).rename_axis(f"at C = {c_mid:.2g}")

# %% [markdown]
# nanochat lived through exactly this. Its miniseries v1 (7 January 2026) counted **all**
# parameters and found ≈ 8 tokens per parameter. Ten days later it added value embeddings — large
# tables that add parameters but almost no FLOPs — and with all-parameter counting the ratio
# "halved from 8 to 4". That step changed the architecture as well as the count, so it does not
# isolate the convention; much of it is the count of N growing, but the models changed too.
# Recounted as `matmul` parameters (the transformer's matrices plus the output head: the
# parameters that cost FLOPs) the same sweep gave ≈ 10.5, with N and D both growing about as
# C^0.5; counting the transformer's matrices alone gave N ∝ C^0.70. nanochat's isoFLOP optima of
# 27 January 2026 (`dev/LOG.md`), one set of runs under three counts:

# %%
reference = scaling.load_published()
ratios = reference[reference.quantity == "tokens_per_param"]
jan26 = ratios[ratios.group.str.startswith("jan26")]
jan26.pivot(index="at_flops", columns="params_convention", values="value").rename_axis("FLOPs")

# %% [markdown]
# The same pattern runs through both tables: counting all parameters gives the smallest ratio
# and the smallest exponent a; counting only the transformer's matrices gives the largest a (N
# then grows fastest with compute, so the ratio falls with it); `matmul` lies between — in
# nanochat's sweep and, checked here, in ours. Before comparing a ratio with someone else's, ask
# what they counted.

# %%
a_of = {c: fits2[c].a for c in CONVENTIONS}
ratio_of = {c: float(fits2[c].tokens_per_param(c_mid)) for c in CONVENTIONS}
shown_a = ", ".join(f"{c} {a_of[c]:.2f}" for c in CONVENTIONS)
expect(ratio_of["all"] == min(ratio_of.values()),
       f"counting all parameters gives our smallest ratio ({ratio_of['all']:.1f})",
       preset=run.preset)  # fmt: skip
expect(a_of["all"] <= a_of["matmul"] <= a_of["non_embedding"],
       f"our `matmul` exponent a lies between the other two conventions' ({shown_a})",
       preset=run.preset)  # fmt: skip

# %% [markdown]
# ## Ours beside nanochat's and Chinchilla's
#
# One plot, seventeen decades of compute: the tokens-per-parameter ratio each study found
# compute-optimal. Compare ratios only under the same counting convention (the legend says which),
# and remember that data, tokenizer and model recipe differ between the three.

# %%
fig = figure("Compute-optimal tokens per parameter", "training FLOPs C", "D_opt / N_opt", 1, 1)
fig.update_xaxes(exponentformat="power")
for c in ("matmul", "all"):
    ok = fits2[c].budgets[fits2[c].budgets.ok]
    bars = plots.error_bars(ok.tokens_per_param, ok.tokens_per_param_lo, ok.tokens_per_param_hi)
    fig.add_scatter(x=ok.budget, y=ok.tokens_per_param, error_y=bars, name=f"ours ({c})", **OURS)
for group, label in (("jan26_isoflop_matmul", "nanochat Jan 27 (matmul)"),
                     ("jan26_isoflop_all", "nanochat Jan 27 (all)"),
                     ("miniseries_v1_isoflop", "nanochat v1, Jan 7 (all)")):  # fmt: skip
    rows = ratios[ratios.group == group]
    fig.add_scatter(x=rows.at_flops, y=rows.value, name=label, **PUBLISHED)
table3 = reference[reference.group == "table3_approach_1"].pivot(
    index="at_flops", columns="quantity"
)
ratio3 = table3.value.d_opt / table3.value.n_opt
fig.add_scatter(x=table3.index, y=ratio3, name="Chinchilla Approach 1 (all)", **PUBLISHED)
c_chin = np.geomspace(1e18, 1e26, 30)
fig.add_scatter(x=c_chin, y=chin3.tokens_per_param(c_chin), mode="lines",
                name="Chinchilla runs, our fit (all)")  # fmt: skip
hoffmann_tex = laws["Hoffmann eq. 10 (TeX digits)"].tokens_per_param(c_chin)
dotted = {"mode": "lines", "line": {"dash": "dot"}}
fig.add_scatter(x=c_chin, y=hoffmann_tex, name="Hoffmann eq. 10 (all)", **dotted)
fig.show()

# %% [markdown]
# ## The dial
#
# Everything above in one figure you can turn. The menu picks the fit and the parameter count; the
# slider sets a compute budget — inside our sweep or well beyond it — and the figure draws the
# isoFLOP curve each fit predicts there, its optimum, and the depth of our dial nearest to it.
# Approach 3 predicts a whole curve, L(N, C / flops_per_token(N)); Approach 2 models only the
# optima, so its curve is the budgets' mean parabola moved to N_opt(C), at the loss of a power
# law through their vertices (`IsoFlopFit.predicted_curve`). On this static page slider and menu
# work without a kernel: every position is precomputed. The drawing lives in
# `nanolib.dial_view.DialView`; below it, the same dial built live with ipywidgets refits on the
# budgets you tick.

# %%
fits = {("Approach 2", c): fits2[c] for c in CONVENTIONS}
fits |= {("Approach 3", c): fits3[c] for c in CONVENTIONS}
view = DialView(sweep_runs, dial, fits)
dial_flops = np.geomspace(budgets[0] / 3, budgets[-1] * 30, 13)
start = int(np.argmin(np.abs(np.log(dial_flops / c_mid))))
static = view.static(dial_flops, start)
static.show()

# %% [markdown]
# The label at the optimum is `DialView.predicted`; here it is at ten times our largest budget,
# for both fits (N counted as `matmul` parameters) — where the extrapolations start to part:

# %%
far = 10 * budgets[-1]
for method in ("Approach 2", "Approach 3"):
    p = view.predicted(method, "matmul", fits[method, "matmul"], far)
    label = p["label"].replace("<br>", "; ") or "no prediction (this fit has no optimum)"
    print(f"{method} at C = {far:.2g}: {label}")

# %% [markdown]
# The live version: the same traces in a `plotly` `FigureWidget`, driven by `ipywidgets` — a slider
# for the budget, menus for the counting convention and the fit, and the budgets to fit on. Untick
# one and watch how far the predicted optimum moves: a quick measure of how much three budgets can
# be trusted. It needs a running kernel; on this static page the cell shows its starting view.


# %%
y_range = static.layout.yaxis.range
live_dial = partial(view.live, dial_flops, c_mid, y_range)  # controls and a FigureWidget
if os.environ.get("JPY_SESSION_NAME"):  # Jupyter sets it for a notebook's kernel; papermill not
    display(live_dial())
else:
    print("no live frontend: the dial's starting view (open the notebook in Jupyter to turn it)")
    view.figure("Approach 3", "matmul", c_mid, tuple(budgets), y_range).show()

# %% [markdown]
# ## The miniseries
#
# A fit is a prediction; a family of models trained along it is the test. nanochat's miniseries
# trained one model per depth, d10 to d20, each at the fitted ratio, and showed that a bigger
# budget buys a lower curve. `run_family` trains ours into `miniseries/`, an artifact chapter 5
# evaluates: one checkpoint per depth, the tokenizer they share, and `models.csv` (sizes in each
# convention, tokens, FLOPs, val bits per byte, checkpoint folder).
#
# The family is the sweep's own — the same dial, tokenizer and recipe — and each model trains at
# the ratio Approach 2 fitted (`matmul`), evaluated at the compute that model itself spends (the
# ratio drifts with C as C^(b−a), so ratio and compute are solved together). Where each model
# lands against the sweep's budgets is printed under the plan; the largest lands beyond them, a
# prediction the sweep never saw. A ratio measured on one family is only a hypothesis for
# another: chapter 3's models, with their 4,096-token vocabulary, would need a sweep of their own.

# %%
family_dir = run.path("miniseries")  # this chapter's `miniseries` artifact
fitted_ratio = partial(sweep.fitted_family_ratio, fit2, dial, start_flops=c_mid)  # of a depth
ratio = run.p.family_tokens_per_param or fitted_ratio
family_base = replace(base, eval_every=recipe.eval_every)
for depth in sorted(set(run.p.family_depths) - set(speed)):  # depths the sweep did not time
    speed[depth] = flops_per_s(replace(base, depth=depth))
family_plan = sweep.plan_family(family_base, run.p.family_depths, ratio, vocab_size, run.nproc,
                                flops_per_s=speed, time_budget_s=limit)  # fmt: skip
est_s = family_plan.est_s.sum()
print(f"{len(family_plan)} models, {family_plan.flops.sum():.3g} FLOPs, ≈ {est_s:.0f} s")
shown = ["depth", "n_params_matmul", "num_steps", "tokens", "tokens_per_param", "flops", "est_s"]
display(family_plan[shown].round({"tokens_per_param": 1, "est_s": 1}))
lands = ", ".join(f"d{r.depth} at {r.flops / max(budgets):.2g}×"
                  for r in family_plan.itertuples())  # fmt: skip
say(f"Against the largest budget ({max(budgets):.2g} FLOPs): {lands}; the sweep's budgets span "
    f"{min(budgets) / max(budgets):.2g}× to 1×.")  # fmt: skip
expect(family_plan.flops.max() > max(budgets), "the largest model lands beyond the sweep's budgets",
       preset=run.preset)  # fmt: skip

# %%
t0 = time.perf_counter()
family = sweep.run_family(
    family_base, run.p.family_depths, ratio, family_dir, run.nproc, workers=workers
)
print(f"{len(family)} models in {time.perf_counter() - t0:.0f} s → {family_dir / sweep.MODELS_CSV}")
family.round({"tokens_per_param": 2, "val_bpb": 4, "wall_s": 1})

# %% [markdown]
# Bits per byte against compute for each model, and nanochat's observation checked: over the
# compute two neighbours share, past warmup, does the bigger model's curve ever dip below the
# smaller one's? If it does, the smaller model was not compute-optimal for its own budget — at the
# same compute a bigger model was already better. Trained at the fitted ratio, the curves should
# stack: each model ends its warmdown below where the next one stands at the same compute, and
# the next one ends lower still.
#
# The check reads the **validation** curves: every point measured on the same held-out tokens.
# The training loss (thin lines, smoothed) is measured on each step's own batch, and with batches
# of 2,048 tokens it swings by half a bit per byte between a page of the Bible and a page of a
# play — far more than the gaps between the models.

# %%
histories = sweep.family_histories(family_dir, family)  # depth → its metrics.jsonl
val_curves = {d: h.dropna(subset=["val_bpb"]).query("flops > 0") for d, h in histories.items()}
fig = figure("The miniseries: bits per byte against compute", "training FLOPs", "bits per byte", 1)
for i, (depth, history) in enumerate(histories.items()):
    train_, val = history.dropna(subset=["train_bpb"]), val_curves[depth]
    tint, group = plots.COLORS[i % len(plots.COLORS)], f"d{depth}"
    smoothed = train_.train_bpb.ewm(alpha=0.05).mean()
    fig.add_scatter(x=train_.flops, y=smoothed, name=f"d{depth} train", legendgroup=group,
                    line={"color": tint, "width": 1}, opacity=0.35, showlegend=False)  # fmt: skip
    fig.add_scatter(x=val.flops, y=val.val_bpb, name=f"d{depth}", legendgroup=group,
                    mode="lines+markers", line_color=tint)  # fmt: skip
fig.show()

# %%
crossing = sweep.curve_crossings(val_curves)
crossed = list(crossing.index[crossing.cross.astype(bool)])
display(crossing)
expect(not crossed, "trained at the fitted ratio, the miniseries' validation curves stack without "
       f"crossing (crossing: {', '.join(crossed) or 'none'})", preset=run.preset)  # fmt: skip

# %% [markdown]
# ### The bits-per-byte frontier
#
# The frontier is the best bits per byte a family of models reaches at each compute. Measured, it
# is the best run of each of our budgets; between and beyond them, each fit predicts it —
# Approach 2 as a power law through its vertices' losses, Approach 3 as the minimum of L(N, D)
# along our dial. The miniseries tests both: models trained where the fit said, the largest
# beyond the sweep's budgets. Beside ours, nanochat's miniseries (eleven
# models, d10…d20 on FineWeb-Edu, 8×H100, FLOPs by nanochat's count): the same dial seven decades
# of compute apart. Bits per byte compare across tokenizers; across datasets only roughly.

# %%
grid = np.geomspace(budgets[0] / 3, budgets[-1] * 30, 30)
best = sweep_runs.loc[sweep_runs.groupby("budget").val_bpb.idxmin()]
v1 = pd.read_csv(scaling.DATA_DIR / "reference" / "nanochat_miniseries_v1.csv")
fig = figure("The bits-per-byte frontier", "training FLOPs", "val bits per byte", True)
fig.update_xaxes(exponentformat="power")
grey = {"mode": "markers", "marker": {"color": "silver"}}
fig.add_scatter(x=sweep_runs.flops, y=sweep_runs.val_bpb, name="our sweep", **grey)
fig.add_scatter(x=best.flops, y=best.val_bpb, name="our sweep, best per budget", **OURS)
frontier = [dial.optimum(fit3, f)["loss"][0] for f in grid]
fig.add_scatter(x=grid, y=frontier, name="Approach 3 frontier", **dash)
fig.add_scatter(x=grid, y=fit2.loss_opt(grid), name="Approach 2 frontier", **dotted)
squares = {"mode": "lines+markers", "marker": {"size": 10, "symbol": "square"}}
fig.add_scatter(x=family.flops, y=family.val_bpb, name="our miniseries", **squares)
fig.add_scatter(x=v1.flops_derived, y=v1.val_bpb, name="nanochat miniseries v1", **PUBLISHED)
fig.show()

# %%
tested = pd.DataFrame({
    "depth": family.depth,
    "FLOPs": family.flops.map("{:.2e}".format),
    "× largest budget": (family.flops / max(budgets)).round(2),
    "measured bpb": family.val_bpb,
    "Approach 2 predicted": fit2.loss_opt(family.flops.to_numpy()),
    "Approach 3 predicted": [dial.optimum(fit3, f)["loss"][0] for f in family.flops],
}).set_index("depth")  # fmt: skip
for method in ("Approach 2", "Approach 3"):
    tested[f"{method} error"] = tested[f"{method} predicted"] - tested["measured bpb"]
print(f"Approach 3's irreducible loss E = {fit3.E:.3f} bpb")
tested.round(4)

# %%
errors = tested.filter(like="error")
inside = errors[(family.flops <= max(budgets)).to_numpy()]
if inside.empty:
    say("No model of this miniseries lies inside the sweep's budgets: each one tests an "
        "extrapolation.")  # fmt: skip
else:
    worst = float(inside.abs().max().max())
    expect(worst < 0.1, "inside the sweep's budgets both fits predict the miniseries' bits per "
           f"byte within a tenth of a bit (worst {worst:.3f})", preset=run.preset)  # fmt: skip
top = errors.iloc[-1]
say(f"The largest model (d{errors.index[-1]}, {tested['× largest budget'].iloc[-1]:g}× the "
    f"largest budget): Approach 2 is off by {top.iloc[0]:+.3f} bpb, Approach 3 by "
    f"{top.iloc[1]:+.3f}; its {tested['measured bpb'].iloc[-1]:.3f} bpb is "
    f"{tested['measured bpb'].iloc[-1] - fit3.E:+.3f} from Approach 3's floor E.")  # fmt: skip

# %% [markdown]
# Read the error columns (predicted − measured; positive: the model did better than predicted).
# Where the miniseries lies inside the sweep's budgets both fits should be within a tenth of a bit
# (checked above); a model beyond the largest budget is the real test. There the fits part:
# Approach 2 extrapolates only the optima's power law, while Approach 3 carries its irreducible
# loss E — pinned by budgets within a factor of four of each other — and a model a few times
# beyond them can come close to E or even pass below it, which the law says is impossible: the
# line above says how close this run's largest model came. That is why nanochat and
# Chinchilla sweep over one to two decades of compute before trusting an extrapolation, and why
# a frontier measured on one family of models is only a hypothesis for another (chapter 3's
# 4,096-token models would need a sweep of their own).

# %% [markdown]
# ## Model shape and speed
#
# Scaling laws count parameters and FLOPs; the hardware counts how well they fit its units.
# BigScience, sizing BLOOM for a million A100-hours, benchmarked hundreds of shapes first: hidden
# sizes divisible by 128 (the GPU's matrix tiles), head counts its fused softmax kernel accepted,
# and between shapes of equal size the faster one — 13,824 instead of 14,400 hidden units ran 27%
# faster, and fewer, larger heads were usually faster. nanochat's dial bakes the lessons in:
# width 64 × depth in heads of 128 channels, the vocabulary padded to a multiple of 64.
#
# The rule: **measure tokens per second per shape** before a long run. Here, with the same
# measurement as the planner's, at a fixed depth: widths on and off round numbers, and one width
# cut into different numbers of heads. On a CPU the differences are small and noisy; at the GPU
# presets the same cell times GPU shapes.

# %%
shape_rows = []
for d_model, n_head in run.p.shape_configs:
    aspect, depth = d_model // run.p.shape_depth, run.p.shape_depth
    cfg = replace(base, depth=depth, aspect_ratio=aspect, head_dim=d_model // n_head)
    model = plan(cfg, vocab_size).model
    assert (model.d_model, model.n_head) == (d_model, n_head), f"{d_model, n_head}: no dial shape"
    shape = {"d_model": d_model, "heads": n_head, "head_dim": model.head_dim}
    shape_rows.append(shape | {"d_model % 128": d_model % 128, "FLOP/s": flops_per_s(cfg)})
shapes = pd.DataFrame(shape_rows)
shapes["vs fastest"] = (shapes["FLOP/s"] / shapes["FLOP/s"].max()).map("{:.0%}".format)
shapes.assign(**{"FLOP/s": shapes["FLOP/s"].map("{:.3g}".format)})

# %% [markdown]
# ## The GPU presets
#
# The same planner on the GPU presets' values in book.yml: the sweep and the miniseries, their
# FLOPs (training plus evaluations), and the hours and dollars `nanolib.device.gpu_cost` gives
# at the book's assumed MFU of H100s and price per GPU-hour. Where the family ratio is "fitted",
# the estimate brackets it with nanochat's two measured ratios, 8 (miniseries v1) and 10.5
# (later, with another parameter count), until our sweep has measured ours.

# %%
NANOCHAT_RATIOS = (8.0, 10.5)


def gpu_estimate(name: str) -> dict:
    """Sweep and miniseries of a GPU preset: runs, FLOPs, hours and dollars."""
    nproc, params = run.book.preset(name).nproc, run.book.resolve(run.slug, name)
    gbase, vocab = sweep.sweep_base(run.book, name, params), vocab_size_for(run.book, name)
    grid_ = params["sweep_budgets"], params["sweep_depths"]
    sweep_plan = sweep.plan_isoflop(gbase, *grid_, vocab, nproc)
    ratios = sorted({params["family_tokens_per_param"] or r for r in NANOCHAT_RATIOS})
    families = [sweep.plan_family(gbase, params["family_depths"], r, vocab, nproc) for r in ratios]
    sweep_cost = gpu_cost(sweep_plan.flops.sum() + sweep_plan.eval_flops.sum(), gpus=nproc)
    family_costs = [gpu_cost(f.flops.sum() + f.eval_flops.sum(), gpus=nproc) for f in families]
    return {
        "sweep": f"{len(sweep_plan)} runs, {sweep_plan.flops.sum():.2g} FLOPs",
        "miniseries": f"depths {params['family_depths'][0]}…{params['family_depths'][-1]}",
        "tokens/param": "–".join(f"{r:g}" for r in ratios),
        "GPUs": nproc,
        "sweep hours": round(sweep_cost["hours"], 1),
        "miniseries hours": "–".join(f"{c['hours']:.1f}" for c in family_costs),
        "cost": "–".join(f"${sweep_cost['dollars'] + c['dollars']:,.0f}" for c in family_costs),
    }


# %%
assumed = run.book.cost_of("cuda")  # book.yml `cost:`, the book's one set of assumptions
print(f"assumed: {assumed.name}, {assumed.mfu:.0%} MFU, ${assumed.dollars_per_hour:g} per GPU-hour")
pd.DataFrame({name: gpu_estimate(name) for name in ("d12", "miniseries", "speedrun")}).T

# %%
run.finish(
    headline={
        "sweep_runs": len(sweep_runs),
        "a_approach2": round(fit2.a, 3),
        "b_approach2": round(fit2.b, 3),
        "tokens_per_param_approach2": round(float(fit2.tokens_per_param(c_mid)), 2),
        "a_approach3": round(fit3.a, 3),
        "tokens_per_param_approach3": round(float(a3_mid["ratio"]), 2),
        "chinchilla_a_approach3": round(chin3.a, 4),
        "chinchilla_fit_s": round(chin3_s, 2),
        "miniseries_models": len(family),
    },
    flops=float(sweep_runs.flops.sum() + family.flops.sum()),
)

# %% [markdown]
# ## Summary
#
# - Chinchilla's Approach 3, re-run on Epoch's extraction of its runs, reproduces Epoch's numbers;
#   the constants printed in the paper do not fit those runs, and the refitted law says ≈ 20
#   tokens per parameter, like Chinchilla's other two approaches.
# - Our isoFLOP sweep is planned from measured speed, survives being killed, and shows a U per
#   budget; Approaches 2 and 3 turn it into exponents and a tokens-per-parameter ratio, with
#   bootstrap intervals that say how far three budgets can be trusted.
# - A ratio is a statement about a counting convention as much as about models: nanochat's went
#   from 8 to 4 when value embeddings (an architecture change, nearly free in FLOPs) swelled the
#   all-parameter count, and to 10.5 when the same runs were recounted as `matmul` parameters.
# - A miniseries trained at the fitted ratio tests the fit: its loss curves stack without
#   crossing and, inside the sweep, both fits predict its bits per byte (both checked above);
#   beyond the sweep the extrapolations part, and the parametric law's floor E, pinned by
#   budgets a factor of four apart, is the weakest part of an extrapolation.
# - A model's shape decides how fast its FLOPs run: measure tokens per second per shape before a
#   long run.
#
# **Exercises**
# 1. Add a fourth budget (twice the largest) to `sweep_budgets` and re-run: the first three
#    budgets' rows come from the CSV. How much do the intervals on a and b shrink?
# 2. Refit Approach 3 on Chinchilla's runs with Huber δ = 10⁻² and 10⁻⁴ (`fit_approach3(...,
#    delta=…)`). Which parameters move? Why did Hoffmann et al. choose a small δ?
# 3. Set `sweep_vocab_size = None` at `tiny` (chapter 1's 4,096-token vocabulary) and run only the
#    planning cells: where would each budget's optimum be, and what would the sweep cost?
# 4. Add depth 5 to `family_depths` (≈ 4 more CPU minutes). Does Approach 2's error grow with the
#    distance beyond the largest budget? Train the family at half the fitted ratio
#    (`family_tokens_per_param`): do the curves still stack?
# 5. In the live dial, untick the largest budget. How far does the predicted optimum at ten times
#    that budget move, for each approach?
#
# **Further reading**: Hoffmann et al. 2022, *Training Compute-Optimal Large Language Models*;
# Besiroglu et al. 2024, *Chinchilla Scaling: A replication attempt*, and Epoch AI's
# `analyzing-chinchilla` repository; Kaplan et al. 2020, *Scaling Laws for Neural Language
# Models*; Pearce & Song 2024, *Reconciling Kaplan and Chinchilla Scaling Laws*; nanochat's
# Discussion #420 (miniseries v1) and `dev/LOG.md`; BigScience, *What Language Model to Train if
# You Have One Million GPU Hours?*, and the BLOOM training chronicles.
