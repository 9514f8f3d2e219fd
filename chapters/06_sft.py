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
# # 6. Supervised fine-tuning
#
# Chapter 3's model continues text: given the start of a page it writes more page. A chat model
# must do something else — wait for a question, answer it, stop, and call a tool when arithmetic
# is needed. Nothing new in the network makes the difference; the data does. This chapter writes
# conversations as tokens, trains the base model on a mixture of them, and measures what it
# learned on questions it has never seen.
#
# **What you will build**
# - the chat format: special tokens around every turn, and a loss mask that trains the model on
#   its own replies (tool calls included) and on nothing else;
# - the SFT stage: a task mixture packed best-fit into rows that start at `<|bos|>`, trained on
#   the very loop of chapter 3, starting from its learning rates;
# - chat evals: multiple choice read from restricted logits, generative answers written greedily
#   with the calculator and checked, each with a 95% interval, and ChatCORE — before and after.
#
# **Prerequisites**: chapter 3's base model and chapter 1's tokenizer (this chapter loads both).
#
# | preset | base model | conversations | hardware | time |
# |---|---|---|---|---|
# | `smoke` | depth 1 | ≈ 160, 3 steps | any CPU | seconds |
# | `tiny` | depth 4 | the tiny world: 8,800, one pass | 2 CPU cores | ≈ 4–5 min |
# | `d12` | depth 12 | SmolTalk, MMLU ×3, GSM8K ×4: ≈ 790 K | 1 × H100 | ≈ 20–30 min |
# | `miniseries`, `speedrun` | depth 20, 24 | the same | 8 × H100 | ≈ 20–30 min |
#
# The GPU presets follow nanochat's `scripts/chat_sft.py` (2026): one pass over SmolTalk
# (460 K conversations), three epochs of MMLU's auxiliary training set (100 K rows each) and
# four of GSM8K's training set (7.5 K each); the base run's batch and learning rates × 0.8, no
# warmup, a linear warmdown over the second half to zero, no weight decay. Their times are
# estimates (≈ 290 M tokens of training at chapter 3's throughput, plus the evals); the run's
# manifest records what it took.

# %% tags=["parameters"]
# Every None takes the preset's value (`nanobook params 06 --preset tiny` lists them, with ranges)
preset = "tiny"  # type: str  a preset of book.yml: smoke | tiny | d12 | miniseries | speedrun
mixture = None  # type: dict  task name -> epochs of the fine-tuning mixture
eval_tasks = None  # type: list  tasks scored before and after fine-tuning
val_per_task = None  # type: int  held-out conversations per task for the val loss
num_steps = None  # type: int  optimizer steps (None: one pass over the mixture)
batch_tokens = None  # type: int  tokens per step, all ranks (None: the base run's)
device_batch_size = None  # type: int  rows per forward/backward on one rank
lr_frac = None  # type: float  × the base run's peak learning rates
warmup_steps = None  # type: int  steps of linear learning-rate warmup
warmdown_ratio = None  # type: float  last fraction of steps over which the LR decays linearly
final_lr_frac = None  # type: float  the LR at the end, as a fraction of the peak
eval_every = None  # type: int  steps between val-loss evaluations (0: at the start and end only)
checkpoint_every = None  # type: int  steps between checkpoints (0: at the end only)
eval_items = None  # type: int  items scored per eval task (None: all)
max_new_tokens = None  # type: int  longest generated answer, in tokens
eval_batch_size = None  # type: int  prompts generated at once while scoring
temperature = None  # type: float  sampling temperature of the shown conversations
seed = None  # type: int  random seed
run_dir = None  # type: str  where the run is written (None: runs/<preset>/06_sft)

# %%
import time

import pandas as pd
from IPython.display import HTML, display

from nanolib.chat import (
    conversation_html,
    normalize_conversation,
    render_conversation,
    render_for_completion,
)
from nanolib.chat_eval import chatcore, evaluate_tasks
from nanolib.checkpoint import load_model, read_metrics
from nanolib.claims import expect, say
from nanolib.core_fit import load_reference
from nanolib.engine import Engine
from nanolib.plots import OURS, PUBLISHED, figure
from nanolib.runs import start_chapter
from nanolib.sft import SFTConfig, launch_sft, plan_sft, train_mixture
from nanolib.tasks import load_task
from nanolib.tokenizer import Tokenizer

run = start_chapter("06_sft", preset, globals())
base_dir = run.artifact("checkpoint")
tokenizer_dir = run.artifact("tokenizer")
tokenizer = Tokenizer.load(tokenizer_dir)
print(run.summary())

# %% [markdown]
# ## The chat format
#
# A conversation is a list of messages, each with a role — `user` or `assistant` (a `system`
# message is folded into the first user message) — and its content. The tokenizer of chapter 1
# reserved special tokens for the frame: the whole conversation starts with `<|bos|>`, each user
# turn sits between `<|user_start|>` and `<|user_end|>`, each reply between
# `<|assistant_start|>` and `<|assistant_end|>`. An assistant reply may call a tool: the
# expression between `<|python_start|>` and `<|python_end|>` goes to the calculator, and its
# answer comes back between `<|output_start|>` and `<|output_end|>`.
#
# Here is a word problem of the tiny world in that format, token by token. **Green** tokens are
# what the model is trained to write; **grey** ones it only reads: the user's words, the frame
# around them, and the calculator's output — at test time the tool writes that, not the model.

# %%
arithmetic = load_task("tiny_arithmetic", "train")[0]
ids, mask = render_conversation(tokenizer, arithmetic)
display(HTML(conversation_html(tokenizer, ids, mask)))
print(f"{len(ids)} tokens, {sum(mask)} of them trained on")

# %% [markdown]
# A short conversation, with a system message folded into the user's first turn:

# %%
chat_task = load_task("tiny_chat", "train")
chat = next(r for r in chat_task if r["messages"][0]["role"] == "system")
display(HTML(conversation_html(tokenizer, *render_conversation(tokenizer, chat))))

# %% [markdown]
# ### The loss mask, by hand
#
# The rule fits in a few lines: walk the turns; everything of a user turn is 0; in a reply the
# opening `<|assistant_start|>` is 0 (the frame put it there), text and tool calls are 1, a tool
# output is 0, and the closing `<|assistant_end|>` is 1 — the model must learn when to stop.
# The library's `render_conversation` must agree token for token on every kind of conversation:


# %%
def teaching_render(conv) -> tuple[list[int], list[int]]:
    """ids and loss mask of a conversation, one rule per kind of token."""
    special, encode = tokenizer.special_id, tokenizer.encode
    ids, mask = [tokenizer.bos_id], [0]
    for message in normalize_conversation(conv):
        if message["role"] == "user":
            turn = [special("<|user_start|>"), *encode(message["content"]), special("<|user_end|>")]
            ids, mask = ids + turn, mask + [0] * len(turn)
            continue
        ids, mask = ids + [special("<|assistant_start|>")], mask + [0]
        content = message["content"]
        for part in [{"type": "text", "text": content}] if isinstance(content, str) else content:
            body = encode(part["text"])
            if part["type"] == "python":
                body = [special("<|python_start|>"), *body, special("<|python_end|>")]
            elif part["type"] == "python_output":
                body = [special("<|output_start|>"), *body, special("<|output_end|>")]
            ids, mask = ids + body, mask + [int(part["type"] != "python_output")] * len(body)
        ids, mask = ids + [special("<|assistant_end|>")], mask + [1]
    return ids, mask


# %%
samples = [arithmetic, chat, *list(chat_task)[:50]]
samples += [load_task(t, "train")[i] for t in ("tiny_numbers", "tiny_cloze") for i in range(50)]
samples += [load_task("tiny_arithmetic", "train")[i] for i in range(50)]
assert all(teaching_render(c) == render_conversation(tokenizer, c) for c in samples)
print(f"the teaching mask equals nanolib.chat's on {len(samples)} conversations of four kinds")

# %% [markdown]
# ## The task mixture
#
# At the GPU presets the conversations come from public data sets, read with Hugging Face
# `datasets`: SmolTalk's general chat, MMLU's multiple-choice questions (answered with a single
# letter) and GSM8K's grade-school word problems, whose `<<48/2=24>>` calculator notes become
# tool calls. A model of a million parameters trained on old books could learn none of them, so
# at `tiny` and `smoke` the **tiny world** stands in: four tasks generated from a seed, row for
# row in the same schemas, so the same loaders, template, mixture and evals run unchanged.
# All of it is synthetic except the cloze lines, which come from the corpus's held-out split:
#
# - `tiny_chat` (SmolTalk's schema): greetings, what the model is, what it read, what it can do;
# - `tiny_numbers` (MMLU's): "Which of these is a number?", a two-digit number among three words
#   (some of them number words, such as "seven");
# - `tiny_cloze` (ARC's): a held-out line of the corpus with a word blanked; the choices are the
#   word and three reorderings of its letters that are no word of the corpus's held-out split, so
#   the pretrained model's knowledge of the corpus's words is what helps here;
# - `tiny_arithmetic` (GSM8K's): one to three steps on small numbers, each a calculator call.
#
# Both multiple-choice kinds are built so that the right choice can be recognised by looking at
# it alone. Answering with a letter asks the model to bind what it knows about a choice to the
# letter written after it. That binding is easiest when the right choice stands out by itself;
# a choice that is right only relative to the question (the number after n, the largest of four,
# the word of the document that fits the line's sense) asks a million-parameter model, fine-tuned
# for a minute, for much more — exercise 5 lets you try. So these tasks measure the letter format
# and a little knowledge, not reasoning.
#
# Each task has a held-out split that training never sees (a quarter of the items, by a hash of
# their text). The mixture takes each task for its `epochs` and shuffles them together:

# %%
cfg = SFTConfig.from_params(
    run.params,
    out_dir=str(run.path("sft")),
    tokenizer_dir=str(tokenizer_dir),
    init_dir=str(base_dir),
    device=run.device,
)
train_set = train_mixture(cfg)
counts = train_set.counts()
mixture_table = pd.DataFrame(
    {
        "kind": [t.kind for t in train_set.tasks],
        "train rows": [len(t) for t in train_set.tasks],
        "epochs": train_set.epochs,
        "in the mixture": [counts[t.name] for t in train_set.tasks],
    },
    index=[t.name for t in train_set.tasks],
)
mixture_table

# %% [markdown]
# ## Packing conversations into rows
#
# Training rows are `seq_len + 1` tokens, as in chapter 3, and every row must start at
# `<|bos|>` — so rows hold whole conversations. nanochat packs them **best-fit**: a row takes the
# longest of the next 100 conversations that still fits in what is left of it, again and again;
# when none fits, the rest of the row is padding, masked out of the loss, rather than the start
# of a conversation cut in two. A conversation longer than a whole row is cropped, and counted.
# The plan depends only on the mixture, so step *s* always trains on the same rows — which is
# what makes resuming exact and lets rank *r* of *W* take every *W*-th row.

# %%
p = plan_sft(cfg, tokenizer, train_set, run.nproc)
packing = p.packing
print(
    f"{p.conversations:,} conversations, {packing.tokens:,} tokens → {len(packing.rows):,} rows "
    f"of {packing.capacity} ({packing.fill:.1%} filled, {packing.cropped} cropped); "
    f"{p.num_steps:,} steps × {p.rows_per_step} rows"
)

# %% [markdown]
# Each bar is a row, each colour a conversation; what is left white is padding:

# %%
fig = figure("The first rows, packed best-fit", "tokens", "row")
for r, row in enumerate(packing.rows[:12]):
    for i in row:
        n = min(len(render_conversation(tokenizer, train_set[i])[0]), packing.capacity)
        fig.add_bar(y=[r], x=[n], orientation="h", showlegend=False, hovertext=f"conversation {i}")
fig.update_layout(barmode="stack", yaxis_autorange="reversed", height=360)
fig.show()

# %% [markdown]
# The loss of a step is the mean cross-entropy over its assistant tokens — of all its rows, on
# all processes: every target the mask keeps gets weight 1/N, the rest 0, and the shared loop
# computes Σ weight · cross-entropy (RL in chapter 7 uses the same loop with other weights).
# The learning rates start from the base run's, × `lr_frac`:

# %%
pd.DataFrame({"base run": p.base_lrs, "SFT peak": p.lrs}).T

# %% [markdown]
# ## Before: the base model, prompted with the chat template
#
# How well does the base model do on the held-out questions if we simply ask in the chat
# format? Multiple choice is scored without sampling: the question is rendered up to
# `<|assistant_start|>`, and of the next-token logits only the choice letters' are compared; the
# largest wins. A word problem is answered greedily by the engine of chapter 8, calculator
# included, and is right if the number after `####` is the reference answer. Every accuracy
# comes with its number of items and a 95% (Wilson) interval, and **ChatCORE** averages the
# centred accuracies — 0 for guessing (¼ on four choices), 1 for perfect — over the tasks.

# %%
held_out = [load_task(name, "test") for name in run.p.eval_tasks]


def score(model) -> list:
    """Every eval task, scored with intervals."""
    return evaluate_tasks(
        model,
        tokenizer,
        held_out,
        max_items=run.p.eval_items,
        max_new_tokens=run.p.max_new_tokens,
        batch_size=run.p.eval_batch_size,
        seed=run.p.seed,
    )


def results_frame(results) -> pd.DataFrame:
    """One row per task: items, accuracy and its interval, the centred accuracy."""
    rows = [r.to_dict() for r in results]
    return pd.DataFrame(rows).set_index("task")[
        ["kind", "items", "accuracy", "ci_low", "ci_high", "centered"]
    ]


t0 = time.time()
base_model, _ = load_model(base_dir, run.device)
before = score(base_model)
results_frame(before).round(3)

# %%
print(f"ChatCORE of the base model: {chatcore(before):.4f} ({time.time() - t0:.0f} s to score)")

# %% [markdown]
# ## Training
#
# One call, in this process or on every GPU with torchrun (`nanolib.sft`, on the loop of
# `nanolib.loop`): it logs the train loss of every step, evaluates the loss on the assistant
# tokens of `val_per_task` held-out conversations per task every `eval_every` steps, and writes
# checkpoints it resumes from if the kernel dies. The folder it writes is this chapter's `sft`
# artifact, which chapters 7 and 8 load.

# %%
summary = launch_sft(cfg, run.nproc)

# %% [markdown]
# ## The training curve

# %%
history = pd.DataFrame(read_metrics(cfg.out_dir))
train_curve = history.dropna(subset=["train_loss"])
val_curve = history.dropna(subset=["val_loss"])
fig = figure("SFT: loss on assistant tokens", "step", "cross-entropy (nats per token)")
fig.add_scatter(x=train_curve.step, y=train_curve.train_loss, mode="lines", name="train (per step)")
fig.add_scatter(x=val_curve.step, y=val_curve.val_loss, name="held-out conversations", **OURS)
fig.show()

# %%
first_val, last_val = val_curve.val_loss.iloc[0], val_curve.val_loss.iloc[-1]
say(
    f"The loss on held-out assistant tokens fell from **{first_val:.3f}** to **{last_val:.3f}** "
    f"nats per token over {summary['step']:,} steps ({summary['wall_s']:.0f} s of training)."
)

# %% [markdown]
# ## After: the same questions
#
# The fine-tuned model, scored on the same held-out items in the same way:

# %%
sft_model, _ = load_model(cfg.out_dir, run.device)
after = score(sft_model)


def interval(r) -> str:
    """'accuracy [low, high]' of an EvalResult."""
    low, high = r.interval
    return f"{r.accuracy:.3f} [{low:.3f}, {high:.3f}]"


rows = {
    a.task: {
        "items": a.items,
        "base model (chat template)": interval(b),
        "SFT model": interval(a),
        "gain": f"{a.accuracy - b.accuracy:+.3f}",
    }
    for a, b in zip(after, before)
}
core_before, core_after = chatcore(before), chatcore(after)
rows["ChatCORE"] = {
    "items": sum(r.items for r in after),
    "base model (chat template)": f"{core_before:.4f}",
    "SFT model": f"{core_after:.4f}",
    "gain": f"{core_after - core_before:+.4f}",
}
comparison = pd.DataFrame(rows).T
comparison

# %%
fig = figure("Held-out accuracy before and after SFT (95% intervals)", "task", "accuracy")
for name, results in (("base model", before), ("SFT model", after)):
    acc = [r.accuracy for r in results]
    fig.add_scatter(
        x=[r.task for r in results],
        y=acc,
        name=name,
        mode="markers",
        marker={"size": 10},
        error_y={
            "array": [r.interval[1] - r.accuracy for r in results],
            "arrayminus": [r.accuracy - r.interval[0] for r in results],
        },
    )
for r in after:
    fig.add_shape(type="line", x0=r.task, x1=r.task, y0=r.baseline, y1=r.baseline)
fig.update_yaxes(range=[0, 1])
fig.show()

# %% [markdown]
# At `tiny` the fine-tuned model beats the base model on every task by a margin the intervals
# resolve: its interval lies wholly above the base model's.

# %%
resolved = {a.task: a.interval[0] > b.interval[1] for a, b in zip(after, before)}
for a, b in zip(after, before):
    say(f"- `{a.task}` ({a.items} items): {b.accuracy:.3f} → **{a.accuracy:.3f}**")
held = expect(
    all(resolved.values()),
    "the SFT model's 95% interval lies above the base model's on every task",
    preset=preset,
)

# %% [markdown]
# ## What the model says
#
# A few questions answered by the fine-tuned model, sampled at temperature
# `temperature`: boxes in green are tokens the model sampled; grey ones came from the prompt or,
# inside a reply, from the calculator.

# %%
questions = [
    [{"role": "user", "content": "Hello!"}],
    [{"role": "user", "content": "Who are you?"}],
    load_task(run.p.eval_tasks[-1], "test")[0]["messages"][:1],
    load_task(run.p.eval_tasks[0], "test")[0]["messages"][:1],
]
engine = Engine(sft_model, tokenizer)
for q, conversation in enumerate(questions):
    prompt = render_for_completion(tokenizer, conversation)
    room = min(run.p.max_new_tokens * 2, sft_model.config.seq_len - len(prompt))
    if room < 1:  # only at `smoke`, whose model reads 64 tokens
        print(f"question {q}: its {len(prompt)} tokens fill the model's context")
        continue
    gen = engine.generate(prompt, 1, room, run.p.temperature, top_k=50, seed=run.p.seed + q)
    ids, mask = prompt + gen.tokens[0], [0] * len(prompt) + gen.masks[0]
    display(HTML(conversation_html(tokenizer, ids, mask)))

# %% [markdown]
# The arithmetic question above was answered greedily in the evaluation too. How many of the
# held-out problems the model solves — and how many it does not — is what chapter 7 starts from:

# %%
generative = [r for r in after if r.kind == "generative"]
for r in generative:
    low, high = r.interval
    say(
        f"`{r.task}`: the SFT model solves **{r.correct} of {r.items}** held-out problems greedily "
        f"(pass@1 {r.accuracy:.3f}, 95% interval [{low:.3f}, {high:.3f}])."
    )

# %% [markdown]
# ## Beside nanochat
#
# nanochat's d20 speedrun model (561 M parameters) published these chat scores in its October
# 2025 report card, after mid-training and after SFT (`data/reference/nanochat_sft_d20.csv`).
# The GPU presets evaluate the same five tasks the same way; at `tiny` our tasks are the tiny
# world's, so compare the pattern — SFT lifts every task a little above its guessing baseline —
# not the numbers.

# %%
published = load_reference("nanochat_sft_d20").set_index("task")
ours = {r.task: r.accuracy for r in after} | {"chatcore": chatcore(after)}
side = published[["baseline", "mid", "sft"]].rename(
    columns={"mid": "nanochat mid", "sft": "nanochat SFT"}
)
ours_table = pd.Series(ours, name=f"ours, SFT ({preset})")
pd.concat([side, ours_table], axis=1)

# %%
fig = figure("After SFT: nanochat d20 (published) and ours", "task", "accuracy")
fig.add_scatter(x=published.index, y=published.sft, name="nanochat d20 SFT", **PUBLISHED)
fig.add_scatter(
    x=list(ours),
    y=list(ours.values()),
    name=f"ours ({preset})",
    mode="markers",
    marker={"size": 10},
)
fig.show()

# %% [markdown]
# ## The GPU presets
#
# What the same code trains at the GPU presets (from book.yml): nanochat's mixture and recipe on
# the base model of chapter 3 at that preset. The row counts are the data sets' published sizes.

# %%
sizes = {
    "smoltalk": 460_341,
    "mmlu": 99_842,
    "gsm8k": 7_473,
}  # train rows (smol-smoltalk, aux. MMLU, GSM8K)
gpu = {}
for name in ("d12", "miniseries", "speedrun"):
    params = run.book.resolve("06_sft", name)
    rows = sum(sizes.get(t, 0) * e for t, e in params["mixture"].items())
    gpu[name] = {
        "mixture": ", ".join(f"{t} ×{e:g}" for t, e in params["mixture"].items()),
        "conversations": f"{rows:,.0f}",
        "LR × base": params["lr_frac"],
        "warmdown": params["warmdown_ratio"],
        "eval tasks": ", ".join(params["eval_tasks"]),
    }
pd.DataFrame(gpu).T

# %%
scores = {}
for a, b in zip(after, before):
    scores |= {f"{a.task}_before": round(b.accuracy, 4), f"{a.task}_after": round(a.accuracy, 4)}
    scores[f"{a.task}_items"] = a.items
run.finish(
    headline={
        **scores,
        "chatcore_before": round(chatcore(before), 4),
        "chatcore_after": round(chatcore(after), 4),
        "val_loss": round(summary["val_loss"], 4),
        "steps": summary["step"],
    }
)
wall = time.time() - run.t0
say(
    "**This run**: "
    + "; ".join(f"`{a.task}` {b.accuracy:.3f} → {a.accuracy:.3f}" for a, b in zip(after, before))
    + f"; ChatCORE {chatcore(before):.4f} → {chatcore(after):.4f}. The chapter took {wall:.0f} s "
    f"at `{preset}` on {summary['device']}."
)

# %% [markdown]
# ## Summary
#
# - A conversation becomes tokens with a frame of special tokens, and a mask that trains the model
#   on its replies — its tool calls and its `<|assistant_end|>` included — and on nothing else.
# - The SFT stage packs whole conversations best-fit into rows that start at `<|bos|>`, pads
#   instead of cutting, and trains on the same loop as pretraining with a per-token weighted loss.
# - Multiple-choice questions are scored from restricted logits, word problems and code by
#   running what the model writes; every accuracy has its interval, and ChatCORE sums them up.
#
# **Exercises**
# 1. Set `lr_frac = 0.2` and then `2.0`. Which tasks suffer first?
# 2. Drop `tiny_chat` from the mixture. Do the other tasks change? Ask the model "Who are you?".
# 3. Train on `tiny_arithmetic` alone (`mixture = {"tiny_arithmetic": 1.0}`) and score the
#    multiple-choice tasks: what did the model forget, and what did it never know?
# 4. Change the mask so that the model is also trained on the user's words. Does anything get
#    better?
# 5. Make `tiny_numbers` ask "Which number is the largest?" of four two-digit numbers (edit
#    `numbers_row` in `nanolib/tasks/tiny.py`). Does the fine-tuned model beat a fixed letter?
#    Count which letters it answers.
#
# **Further reading**: Ouyang et al. 2022 (*InstructGPT*) on supervised fine-tuning before RL;
# Allal et al. 2025 (*SmolLM2*) on SmolTalk; Hendrycks et al. 2021 (MMLU); Cobbe et al. 2021
# (GSM8K, and its calculator annotations); Chen et al. 2021 (HumanEval); nanochat's
# `scripts/chat_sft.py`, `scripts/chat_eval.py` and `tasks/` for the production versions.
