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
# # 7. Reinforcement learning
#
# After chapter 6 the model knows the answer format and how to call the calculator, but it gets
# many word problems wrong. Nobody shows it better solutions here: it samples several answers to
# each problem, the right ones are rewarded, and the model is pushed towards what beat its own
# average. This is the policy gradient that nanochat calls GRPO, and that is really REINFORCE with
# a group baseline.
#
# **What you will build**
# - the loss, from REINFORCE to the group baseline, written as per-token weights on the
#   cross-entropy — so the RL stage runs on the very training loop of chapters 3 and 6;
# - rollouts: groups of answers sampled from one shared prompt with the calculator running
#   mid-answer, its forced output tokens masked out of the loss, seeded so a run can resume;
# - the diagnostics that catch a run that silently learns nothing, and pass@1 / pass@k before and
#   after RL on held-out problems, with intervals.
#
# **Prerequisites**: chapter 6's SFT model (this chapter loads it) and chapter 1's tokenizer.
#
# | preset | problems | steps × problems × samples | hardware | time |
# |---|---|---|---|---|
# | `smoke` | tiny world | 2 × 2 × 2 | any CPU | seconds |
# | `tiny` | tiny world (4,000 train, 500 held out) | 40 × 16 × 8 | 2 CPU cores | ≈ 6 min |
# | `d12` … `speedrun` | GSM8K (7,473 train, 1,319 test) | 467 × 16 × 16 | GPUs | ≈ 1–2 h |
#
# The GPU presets use nanochat's settings (`scripts/chat_rl.py`): 16 samples for each of 16
# problems per step, temperature 1, top-k 50, at most 256 new tokens, one epoch of GSM8K, the
# learning rates at 0.05 of the SFT run's, decaying linearly to zero.

# %% tags=["parameters"]
# Every None takes the preset's value (`nanobook params 07 --preset tiny` lists them, with ranges)
preset = "tiny"  # type: str  a preset of book.yml: smoke | tiny | d12 | miniseries | speedrun
task = None  # type: str  generative task with checkable answers: tiny_arithmetic | gsm8k
num_steps = None  # type: int  optimizer steps (None: num_epochs over the problems)
num_epochs = None  # type: float  passes over the training problems (if num_steps is None)
problems_per_step = None  # type: int  problems per step, all ranks together
num_samples = None  # type: int  the group: completions sampled per problem
max_new_tokens = None  # type: int  longest completion, in tokens
temperature = None  # type: float  sampling temperature of the rollouts
top_k = None  # type: int  sample among the k likeliest tokens
device_batch_size = None  # type: int  rollouts per forward/backward on one rank
lr_frac = None  # type: float  × the SFT run's peak learning rates
eval_every = None  # type: int  steps between held-out evaluations (0: at the start and end only)
eval_problems = None  # type: int  held-out problems per evaluation
eval_samples = None  # type: int  samples per problem for pass@k
checkpoint_every = None  # type: int  steps between checkpoints (0: at the end only)
demo_steps = None  # type: int  steps of each short too-hard / too-easy demonstration run
seed = None  # type: int  random seed
run_dir = None  # type: str  where the run is written (None: runs/<preset>/07_rl)

# %%
import resource
import time

import pandas as pd
import torch
from IPython.display import HTML, display
from plotly.subplots import make_subplots

from nanolib.checkpoint import load_model, read_metrics
from nanolib.claims import expect, say
from nanolib.engine import Engine
from nanolib.html import escape_text
from nanolib.plots import OURS, PUBLISHED, figure
from nanolib.rl import (
    diagnostic_sums,
    diagnostics,
    group_advantages,
    policy_gradient_weights,
    training_rows,
    weighted_loss,
)
from nanolib.rl_train import TOOLSETS, RLConfig, launch_rl, plan_rl
from nanolib.rollouts import sample_group
from nanolib.runs import start_chapter
from nanolib.tasks import load_task
from nanolib.tokenizer import Tokenizer

run = start_chapter("07_rl", preset, globals())
sft_dir = run.artifact("sft")
tokenizer_dir = run.artifact("tokenizer")
tokenizer = Tokenizer.load(tokenizer_dir)
print(run.summary())

# %% [markdown]
# ## The problems
#
# At the GPU presets the problems are GSM8K's grade-school word problems; at `tiny` and `smoke`
# they are the tiny world's (chapter 6), written in GSM8K's format: one to three steps of
# arithmetic on small numbers, every step a `<<expr=result>>` calculator call, the answer after
# `####`. The reward reads only that answer: **1 if the number after `####` equals the
# reference, else 0** — GSM8K's rule (`nanolib.rl.answer_reward`). Training problems and
# held-out problems never overlap.

# %%
cfg = RLConfig.from_params(
    run.params,
    out_dir=str(run.path("rl")),
    tokenizer_dir=str(tokenizer_dir),
    init_dir=str(sft_dir),
    device=run.device,
)
train_task = load_task(cfg.task, cfg.train_split)
held_out = load_task(cfg.task, cfg.eval_split)
p = plan_rl(cfg, len(train_task), len(held_out), run.nproc)
example = train_task[0]
print(f"{len(train_task):,} training problems, {len(held_out):,} held out; e.g.")
print("Q:", example["messages"][0]["content"])
print("reference answer:", example["answer"])

# %% [markdown]
# ## From REINFORCE to a group baseline
#
# Let the model (the *policy* π) write a completion y to a problem x, token by token, and let
# R(x, y) be its reward. We want to raise the expected reward J = E_y~π[R]. Its gradient has a
# form we can sample (REINFORCE, Williams 1992):
#
# $$\nabla J = \mathbb{E}_{y\sim\pi}\Big[R(x,y)\,\sum_t \nabla \log \pi(y_t \mid x, y_{<t})\Big].$$
#
# Sampling y and stepping along R · ∇log π(y) pushes up every token of a rewarded answer. It is
# unbiased but noisy: with a 0/1 reward, an easy problem pushes up its (many) right answers as
# hard as a hard problem pushes up its one. Subtracting a **baseline** b that does not depend on
# y keeps the gradient unbiased (E[∇log π] = 0) and cuts the noise; the best simple baseline is
# the expected reward of the problem itself. GRPO estimates it from a **group**: sample G
# answers to the same problem and use their mean reward,
#
# $$A_i = R_i - \frac{1}{G}\sum_{j=1}^G R_j .$$
#
# An answer better than its siblings is pushed up, a worse one down, and a group whose answers all
# earn the same reward — all wrong or all right — has every A_i = 0 and teaches nothing. nanochat
# keeps only this much of GRPO: no ratio clipping (each batch of rollouts is used for exactly one
# gradient step, so the samples are always from the current policy), no KL penalty to the SFT
# model by default, no division by the group's std. The loss averages over the **sampled tokens**
# of the step, N of them:
#
# $$L = -\frac{1}{N}\sum_i A_i \sum_{t\,\text{sampled}} \log \pi(y_{i,t}\mid\cdot).$$
#
# Since −log π(token) is that token's cross-entropy, L is a *weighted* cross-entropy with weight
# A_i / N on every sampled token of answer i and 0 on the prompt and on what the calculator wrote.
# That is exactly the loss the shared training loop (`nanolib.loop`) computes for chapter 3 (every
# weight 1/N) and chapter 6 (1/N on the assistant's tokens): RL gets no loop of its own.

# %% [markdown]
# ## One group, token by token
#
# Here is one group drawn by the SFT model with the engine of chapter 8: one prefill of the prompt,
# copied to every row, then one token per row per step. A green box is a token the model sampled;
# grey ones were forced by the calculator (`<|output_start|> … <|output_end|>`), which the loss
# must not credit to the model.

# %%
sft_model, _ = load_model(sft_dir, run.device)
engine = Engine(sft_model, tokenizer, TOOLSETS[cfg.tools])
group = sample_group(
    engine, example, 0, cfg.num_samples, cfg.max_new_tokens, cfg.temperature, cfg.top_k, cfg.seed
)
advantages = group_advantages([r.reward for r in group])


def token_boxes(r) -> str:
    """A completion as one box per token: green if sampled, grey if forced by the tool."""
    boxes = []
    for token, sampled in zip(r.tokens, r.mask):
        color = "#c8f0c8" if sampled else "#dddddd"
        text = escape_text(tokenizer.decode([token])).replace("\n", "↵")
        boxes.append(f'<span style="background:{color};margin:0 1px">{text}</span>')
    return "".join(boxes)


rows = "".join(
    f"<tr><td>{r.sample}</td><td>{r.reward:.0f}</td><td>{a:+.3f}</td>"
    f'<td style="text-align:left;font-family:monospace">{token_boxes(r)}</td></tr>'
    for r, a in zip(group, advantages.tolist())
)
head = "<tr><th>sample</th><th>reward</th><th>advantage</th><th>completion</th></tr>"
display(HTML(f"<table>{head}{rows}</table>"))
mean_reward = sum(r.reward for r in group) / len(group)
print(f"reference answer {example['answer']}; the group's mean reward {mean_reward:.3f}")

# %% [markdown]
# A teaching version of the loss, one token at a time straight from the formula, against the
# library's weighted cross-entropy on the same group (`nanolib.rl`): the values and the gradients
# agree.


# %%
def teaching_loss(model, group, advantages):
    """−(1/N) Σ_i A_i Σ_{t sampled} log π(y_t | ·), looping over tokens."""
    n = sum(sum(r.mask) for r in group)
    total = torch.zeros((), device=run.device)
    for r, a in zip(group, advantages):
        ids = torch.tensor([r.prompt + r.tokens], device=run.device)
        logp = torch.log_softmax(model(ids[:, :-1])[0], dim=-1)
        for t, (token, sampled) in enumerate(zip(r.tokens, r.mask)):
            if sampled:
                total = total - a * logp[len(r.prompt) - 1 + t, token]
    return total / n


# %%
def gradient(loss) -> torch.Tensor:
    sft_model.zero_grad()
    loss.backward()
    return torch.cat([q.grad.flatten() for q in sft_model.parameters()])


n_sampled = sum(r.sampled_tokens for r in group)
weights = policy_gradient_weights([r.mask for r in group], advantages, n_sampled)
rows = training_rows(group, weights, tokenizer.bos_id)
library = weighted_loss(sft_model, *(t.to(run.device) for t in rows))
taught = teaching_loss(sft_model, group, advantages.tolist())
assert torch.allclose(gradient(library), gradient(taught), rtol=1e-4, atol=1e-6)
print(f"loss: library {library.item():+.6f}, teaching {taught.item():+.6f}; gradients agree")

# %% [markdown]
# ## Diagnostics: how a run that learns nothing looks
#
# An RL run can fail silently: the loss of a policy gradient is not a quantity that should fall,
# so a flat loss curve says nothing. These numbers do, and the run logs them every step:
#
# | diagnostic | what it tells |
# |---|---|
# | mean reward, its spread | the training signal itself; it should rise |
# | groups with all-equal rewards | zero advantage: nothing learned (all 0: too hard, all 1: easy) |
# | mean completion length | a collapse to short answers means the reward favours stopping |
# | mean token entropy | the policy's randomness; near 0 it explores no more |
# | tool-call rate, share with no parsable answer | the format SFT taught, kept or lost |
#
# The run prints a **warning** when every group has been all-equal for `warn_patience` steps,
# when the entropy falls below a fifth of its start, when completions shrink to half, or when the
# mean reward falls clearly below its best. Here are the diagnostics of the group above:

# %%
one_group = pd.Series(diagnostics(diagnostic_sums(group))).drop("kl")
one_group.round(3).to_frame("one group")

# %% [markdown]
# ## Training
#
# The heavy step is one call; `launch_rl` runs in this process at one process per preset, else
# under `torchrun` with the problems of each step dealt to the ranks. It evaluates the held-out
# problems at the start (the SFT model), every `eval_every` steps and at the end. **pass@k** asks
# whether any of k answers sampled as in training (temperature 1) is right, for k up to
# `eval_samples`; **pass@1** is then exactly the expected reward, the quantity RL maximises.
# **Greedy pass@1** (one answer at temperature 0) is how nanochat's report card scores GSM8K.
# A killed run resumes from its last checkpoint and draws exactly the rollouts it would have
# drawn: every sample's seed is a hash of (seed, step, problem, sample).

# %%
pd.Series(
    {
        "steps": p.num_steps,
        "rollouts per step": cfg.problems_per_step * cfg.num_samples,
        "micro-batches per step": f"{p.micro_steps} × {run.nproc} proc. × {cfg.device_batch_size}",
        "peak LRs": ", ".join(f"{k} {v:.2g}" for k, v in p.lrs.items()),
        "held-out problems": p.eval_problems,
    },
    name="plan",
).to_frame()

# %%
summary = launch_rl(cfg, run.nproc)

# %% [markdown]
# ## The diagnostics of our run

# %%
history = pd.DataFrame(read_metrics(cfg.out_dir))
steps = history[history.step > 0]
panels = [
    ("reward_mean", "mean reward"),
    ("groups_all_equal", "groups all-equal"),
    ("completion_len", "completion length (tokens)"),
    ("entropy", "entropy (nats/token)"),
    ("tool_call_rate", "tool-call rate"),
    ("no_answer_rate", "no parsable answer"),
]
fig = make_subplots(rows=2, cols=3, subplot_titles=[t for _, t in panels])
for i, (key, title) in enumerate(panels):
    fig.add_scatter(x=steps.step, y=steps[key], name=title, row=i // 3 + 1, col=i % 3 + 1)
spread = steps.reward_mean + steps.reward_std
fig.add_scatter(x=steps.step, y=spread, line_dash="dot", name="mean + std", row=1, col=1)
fig.update_layout(title="RL diagnostics per step", showlegend=False, height=560)
fig.update_xaxes(title_text="step")
fig.show()

# %%
fired = summary["warnings"]
print("warnings:", "none" if not fired else "; ".join(f"step {s}: {w}" for s, w in fired))
w = min(5, len(steps))
first, last = steps.head(w), steps.tail(w)
print(
    f"mean reward {first.reward_mean.mean():.3f} over the first {w} steps → "
    f"{last.reward_mean.mean():.3f} over the last {w}; all-equal groups "
    f"{first.groups_all_equal.mean():.0%} → {last.groups_all_equal.mean():.0%}"
)

# %% [markdown]
# ## Held-out problems, before and after
#
# The same held-out problems scored with the SFT model (step 0) and with the RL model (the last
# step). pass@k is the unbiased estimate 1 − C(n−c, k)/C(n, k) from n samples of which c are
# right, averaged over problems, with a 95% normal interval over problems; greedy pass@1 has a
# 95% Wilson interval.

# %%
before, after = summary["before"], summary["after"]
ks = [int(k[5:]) for k in before if k.startswith("pass@") and k[5:].isdigit()]


def scores(e: dict) -> dict:
    """One evaluation as 'value [low, high]' strings."""
    out = {}
    for k in ks:
        value, low, high = e[f"pass@{k}"], e[f"pass@{k}_low"], e[f"pass@{k}_high"]
        out[f"pass@{k}"] = f"{value:.3f} [{low:.3f}, {high:.3f}]"
    greedy, low, high = e["greedy_pass1"], e["greedy_low"], e["greedy_high"]
    out["greedy pass@1"] = f"{greedy:.3f} [{low:.3f}, {high:.3f}]"
    return out


pd.DataFrame({"SFT (before)": scores(before), "RL (after)": scores(after)})

# %%
fig = figure(f"pass@k on {after['eval_problems']} held-out problems", "k (samples)", "pass@k")
for name, e in (("SFT (before)", before), ("RL (after)", after)):
    y = [e[f"pass@{k}"] for k in ks]
    err = [e[f"pass@{k}_high"] - e[f"pass@{k}"] for k in ks]
    err_minus = [e[f"pass@{k}"] - e[f"pass@{k}_low"] for k in ks]
    fig.add_scatter(x=ks, y=y, name=name, error_y={"array": err, "arrayminus": err_minus}, **OURS)
fig.show()

# %%
gain = after["pass@1"] - before["pass@1"]
greedy_gain = after["greedy_pass1"] - before["greedy_pass1"]
say(
    f"pass@1: {before['pass@1']:.3f} → **{after['pass@1']:.3f}** ({gain:+.3f}); greedy pass@1: "
    f"{before['greedy_pass1']:.3f} → {after['greedy_pass1']:.3f} ({greedy_gain:+.3f})."
)
resolved = expect(
    after["pass@1_low"] > before["pass@1_high"],
    "RL beats the SFT model's held-out pass@1 by a margin the 95% intervals resolve",
    preset=preset,
)

# %% [markdown]
# ## Beside nanochat
#
# nanochat's d20 report card (October 2025) scored GSM8K greedily at 0.0455 after SFT and 0.0758
# after this RL recipe: the only task RL trains, and a gain of three points on a test where the
# model still fails 92% of the time. Ours is another task and a far smaller model; compare the
# shape (SFT → RL) of the same measure, greedy pass@1, not the digits.

# %%
reference = pd.DataFrame(
    {
        "after SFT": [0.0455, before["greedy_pass1"]],
        "after RL": [0.0758, after["greedy_pass1"]],
    },
    index=["nanochat d20, GSM8K (published)", f"ours, {cfg.task} ({preset})"],
)
reference["gain"] = reference["after RL"] - reference["after SFT"]
reference.round(4)

# %%
ours = [before, after]
error = {
    "array": [e["greedy_high"] - e["greedy_pass1"] for e in ours],
    "arrayminus": [e["greedy_pass1"] - e["greedy_low"] for e in ours],
}
fig = figure("Greedy pass@1 before and after RL", "stage", "greedy pass@1")
fig.add_scatter(x=["SFT", "RL"], y=[0.0455, 0.0758], name="nanochat d20 (GSM8K)", **PUBLISHED)
y = [e["greedy_pass1"] for e in ours]
fig.add_scatter(x=["SFT", "RL"], y=y, name=f"ours ({cfg.task})", error_y=error, **OURS)
fig.show()

# %% [markdown]
# ## When the task is too hard, or too easy
#
# The group baseline has a blind spot: a problem no sample solves gives a group of zeros, one
# every sample solves a group of ones, and both have zero advantage. In the main run above that
# was already the fate of many groups (the "groups all-equal" panel). Two short runs, everything
# else as in the main run, push the task to either end: **too hard** — the answer must fit in 4
# new tokens, less than any worked answer needs; **too easy** — the reward is 1 for any completion
# with a parsable `####` answer, right or wrong (`nanolib.rl.has_answer_reward`), which the SFT
# model learned to write.

# %%
settings = {
    "too hard": {"max_new_tokens": 4},
    "too easy": {"reward": "nanolib.rl:has_answer_reward"},
}
short = {"num_steps": run.p.demo_steps, "eval_problems": 0, "checkpoint_every": 0}
demos = {}
for name, change in settings.items():
    demo = RLConfig.from_params(
        {**run.params, **short, **change, "warn_patience": 3},
        out_dir=str(run.path(name.replace(" ", "_"))),
        tokenizer_dir=str(tokenizer_dir),
        init_dir=str(sft_dir),
        device=run.device,
    )
    launch_rl(demo, run.nproc, progress=False)
    demos[name] = pd.DataFrame(read_metrics(demo.out_dir)).query("step > 0")

# %%
fig = make_subplots(rows=1, cols=2, subplot_titles=["mean reward", "groups all-equal"])
for name, h in {"main run": steps, **demos}.items():
    fig.add_scatter(x=h.step, y=h.reward_mean, name=name, row=1, col=1)
    fig.add_scatter(x=h.step, y=h.groups_all_equal, name=name, row=1, col=2, showlegend=False)
fig.update_layout(title="Too hard, too easy, and the main run", height=420)
fig.update_xaxes(title_text="step")
fig.show()

# %%
for name, h in demos.items():
    said = [w for ws in h.get("warnings", pd.Series(dtype=object)).dropna() for w in ws]
    print(
        f"{name}: mean reward {h.reward_mean.mean():.3f}, groups all-equal "
        f"{h.groups_all_equal.mean():.0%} (all 0: {h.groups_all_zero.mean():.0%}, all 1: "
        f"{h.groups_all_one.mean():.0%}), no parsable answer {h.no_answer_rate.mean():.0%}, "
        f"rollouts trained on {int(h.trained_rollouts.sum())} of {int(h.rollouts.sum())}; "
        f"warnings: {', '.join(said) or 'none'}"
    )

# %%
hard, easy = demos["too hard"], demos["too easy"]
hard_warnings = {w for ws in hard.get("warnings", pd.Series(dtype=object)).dropna() for w in ws}
expect(
    (hard.groups_all_zero == 1).all() and hard.trained_rollouts.sum() == 0,
    "too hard: every group is all-zero, so not one rollout is trained on",
    preset=preset,
)
expect(
    "no_signal" in hard_warnings, "too hard: the run warns that it learns nothing", preset=preset
)
wasted = expect(
    easy.groups_all_one.mean() > steps.groups_all_one.mean()
    and easy.trained_rollouts.sum() < easy.rollouts.sum(),
    "too easy: more groups are all-one than in the main run, and their rollouts are wasted",
    preset=preset,
)

# %% [markdown]
# A run whose groups are all-equal draws rollouts, spends the compute, and moves no weight: its
# gradient is exactly zero. Its loss curve looks as calm as a good run's; only the diagnostics
# tell. A reward the model already earns wastes its all-one groups the same way, and what is left
# to learn is the format, not the arithmetic. The remedies are a task the model solves
# *sometimes* — a curriculum of problems, a token budget the answers fit in, a reward it does not
# already earn — or more samples per problem, so that a rare success shows up in its group.

# %%
k_max = ks[-1]
cpu_s = resource.getrusage(resource.RUSAGE_SELF).ru_utime
say(
    f"At `{preset}`: pass@1 {before['pass@1']:.3f} → {after['pass@1']:.3f} ({gain:+.3f}), "
    f"pass@{k_max} {before[f'pass@{k_max}']:.3f} → {after[f'pass@{k_max}']:.3f}, greedy pass@1 "
    f"{before['greedy_pass1']:.3f} → {after['greedy_pass1']:.3f} on {after['eval_problems']} "
    f"held-out problems. The RL run took {summary['wall_s'] / 60:.1f} min on "
    f"{summary['device']} × {summary['world_size']}; this execution of the chapter "
    f"{(time.time() - run.t0) / 60:.1f} min ({cpu_s / 60:.1f} CPU-min)."
)

# %%
run.finish(
    headline={
        "pass1_before": round(before["pass@1"], 4),
        "pass1_after": round(after["pass@1"], 4),
        "pass1_gain": round(gain, 4),
        "greedy_pass1_before": round(before["greedy_pass1"], 4),
        "greedy_pass1_after": round(after["greedy_pass1"], 4),
        f"pass{k_max}_before": round(before[f"pass@{k_max}"], 4),
        f"pass{k_max}_after": round(after[f"pass@{k_max}"], 4),
        "eval_problems": after["eval_problems"],
        "steps": summary["num_steps"],
        "rl_wall_s": round(summary["wall_s"], 1),
    }
)

# %% [markdown]
# ## Summary
#
# - REINFORCE pushes up the log-probability of sampled answers in proportion to their reward; a
#   group of answers to the same problem gives a baseline, and the advantage is the reward minus
#   the group's mean.
# - The loss is a cross-entropy weighted by advantage / sampled tokens — 0 on the prompt and on
#   the calculator's output — so RL runs on the one training loop, with its checkpoints, resume,
#   DDP and launcher.
# - A flat loss says nothing in RL; the diagnostics do: mean reward, all-equal groups, length,
#   entropy, tool use, parsable answers, and held-out pass@k with intervals.
#
# ## Exercises
#
# 1. Shape the reward: 1 for a right answer plus 0.1 for any parsable one
#    (`answer_reward + 0.1 · has_answer_reward`). Write it as a function
#    `(record, completion) -> float` in a module of your own and pass
#    `reward="mymodule:my_reward"` to `RLConfig`. Does the no-answer rate fall? Does pass@1 rise?
# 2. Turn on `scale_by_std` (GRPO's z-scored advantage). Which groups gain weight?
# 3. Set `kl_coef=0.05` and compare the entropy and the KL to the SFT model logged per step.
# 4. Double `num_samples` and halve `problems_per_step`: the same rollouts per step. How does the
#    share of all-equal groups change, and why?
#
# ## Further reading
#
# - R. J. Williams, *Simple statistical gradient-following algorithms for connectionist
#   reinforcement learning*, 1992 (REINFORCE and baselines).
# - Z. Shao et al., *DeepSeekMath*, 2024, arXiv 2402.03300 (GRPO).
# - Q. Yu et al., *DAPO*, 2025, arXiv 2503.14476 (token-level normalisation).
# - M. Chen et al., *Evaluating Large Language Models Trained on Code*, 2021, arXiv 2107.03374
#   (the unbiased pass@k estimator).
# - karpathy/nanochat, `scripts/chat_rl.py` and the d20 report card (Discussion #1, October
#   2025).
