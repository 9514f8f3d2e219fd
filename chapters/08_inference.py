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
# # 8. Inference
#
# A trained model is a function from a context to a score for every possible next token. Talking
# to it means calling that function once per new token, and the naive way — the `GPT.generate`
# of chapter 3 — feeds the whole context through the model at every step. This chapter builds
# generation whose cost grows with the answer, not with the context, then the knobs that shape
# what is sampled, the tools a model calls in mid-answer, and the chat you can have with the
# book's models in a terminal or a browser.
#
# **What you will build**
# - a KV cache: a ten-line teaching version checked against `nanolib.engine`, the timings that
#   show why naive decoding is quadratic, the cache's memory formula checked against the tensors
#   the library allocates, and prefill against decode;
# - sampling: temperature, top-k and top-p on one prompt's next-token distribution, and a
#   teaching sampler that draws the same tokens as the library's;
# - tool use traced token by token (which tokens the model chose and which the tool forced), a
#   sandboxed Python call, and a short chat with the book's best chat model at this preset.
#
# **Prerequisites**: chapter 1's tokenizer and chapter 3's model. Chapters 6 (SFT) and 7 (RL)
# make the chat models; when they have not run at this preset, the chat section talks to the
# base model with a plain prompt and says so.
#
# | preset | model | context timed | time |
# |---|---|---|---|
# | `smoke` | chapter 3's depth-1 model | up to 56 tokens | seconds |
# | `tiny` | depth 4, d_model 128 | up to 255 tokens | ≈ 1 min on 2 CPU cores |
# | `d12`, `miniseries`, `speedrun` | depth 12 / 20 / 24 | up to 2,047 tokens | ≈ 1 min on a GPU |

# %% tags=["parameters"]
# Every None takes the preset's value (`nanobook params 08 --preset tiny` lists them, with ranges)
preset = "tiny"  # type: str  a preset of book.yml: smoke | tiny | d12 | miniseries | speedrun
chat_model = None  # type: str  rl | sft | base (None: the best there is at this preset)
context_lengths = None  # type: list  context lengths (tokens) at which one decode step is timed
timing_repeats = None  # type: int  each timing is the best of this many runs
decode_tokens = None  # type: int  tokens put into the cache by prefill and by decode, to compare
cpu_threads = None  # type: int  torch threads on a CPU while timing (None: torch's default)
prompt = None  # type: str  the prompt whose next-token distribution the sampling knobs reshape
temperatures = None  # type: list  temperatures compared on that distribution
top_k = None  # type: int  top-k: sample among the k likeliest tokens
top_p = None  # type: float  top-p: sample among the likeliest tokens holding this much mass
chat_prompts = None  # type: list  the user's messages of the chat transcript
max_new_tokens = None  # type: int  longest reply of the transcript, in tokens
seed = None  # type: int  random seed
run_dir = None  # type: str  where the run is written (None: runs/<preset>/08_inference)

# %%
import copy
import time

import numpy as np
import pandas as pd
import torch
import torch.nn as nn
from IPython.display import HTML, display
from plotly.subplots import make_subplots

from nanolib.chat import conversation_html, render_for_completion
from nanolib.chat_models import find_chat_model, load_chat_engine
from nanolib.chat_session import ChatSession
from nanolib.checkpoint import load_model
from nanolib.claims import expect, say
from nanolib.decode_speed import per_token_seconds, prefill_vs_decode
from nanolib.engine import Engine, KVCache, sample_tokens
from nanolib.html import escape_table, escape_text
from nanolib.model import config_for_depth
from nanolib.plots import OURS, figure
from nanolib.runs import start_chapter
from nanolib.sandbox import protections, run_python
from nanolib.tokenizer import Tokenizer
from nanolib.tools import DEFAULT_TOOLS, calculator, run_tool

run = start_chapter("08_inference", preset, globals())
p = run.p
if run.device == "cpu" and p.cpu_threads:
    torch.set_num_threads(p.cpu_threads)
tokenizer = Tokenizer.load(run.artifact("tokenizer"))
model, meta = load_model(run.artifact("checkpoint"), run.device)
config = model.config
# how far two ways of computing the same thing may differ: fp32 on a CPU, bf16 on a GPU
tolerance = 1e-4 if run.device == "cpu" else 0.05
print(run.summary())
print(f"base model    {config} (chapter 3, step {meta['step']})")

# %% [markdown]
# ## Why naive decoding is quadratic
#
# To sample token t+1, `GPT.generate` runs the model on all t tokens so far and keeps only the
# last position's scores. Every matrix of the model multiplies t vectors, and attention compares
# t queries with t keys: step t costs about 2·N·t FLOPs plus t² for attention, and a reply of n
# tokens costs the sum of those, which grows as n².
#
# But nothing about the first t tokens changes when token t+1 arrives: causal attention never
# lets an earlier position see a later one. So their keys and values — the only thing later
# positions read from them — can be computed once and kept. That store is the **KV cache**. With
# it, step t runs the model on one token, whose query attends over the t cached keys: ≈ 2·N
# FLOPs plus t for attention.
#
# We time one step both ways at several context lengths. The random tokens do not matter to the
# speed; `per_token_seconds` also measures how far the two ways' next-token probabilities
# differ.

# %%
too_long = [n for n in p.context_lengths if n > config.seq_len]
assert not too_long, f"context_lengths {too_long} exceed the model's seq_len {config.seq_len}"
steps = pd.DataFrame(per_token_seconds(model, p.context_lengths, p.timing_repeats, p.seed))
steps["speed-up"] = steps.naive_s / steps.cached_s
for row in steps.itertuples():
    run.log(event="decode_step", context=row.context, naive_s=row.naive_s, cached_s=row.cached_s)
steps.set_index("context")

# %% [markdown]
# Per step, the naive cost grows with the context and the cached one barely moves. Summed over
# a reply, that is the difference between a parabola and a line: the right panel adds up the
# per-step times (interpolated between the measured lengths) for a reply that starts from one
# token.

# %%
lengths = np.arange(1, steps.context.max() + 1)
fig = make_subplots(1, 2, subplot_titles=("one decode step", "a whole reply (cumulative)"))
for way, col in (("naive", "naive_s"), ("KV cache", "cached_s")):
    fig.add_scatter(x=steps.context, y=steps[col] * 1e3, name=way, row=1, col=1, **OURS)
    summed = np.interp(lengths, steps.context, steps[col]).cumsum()
    fig.add_scatter(x=lengths, y=summed * 1e3, name=f"{way}, summed", row=1, col=2)
fig.update_xaxes(title="context length (tokens)")
fig.update_yaxes(title="milliseconds", row=1, col=1)
fig.update_yaxes(title="milliseconds since the first token", row=1, col=2)
fig.update_layout(title="Decoding with and without a KV cache", height=420)
fig.show()

# %%
longest, shortest = steps.iloc[-1], steps.iloc[0]
ms = {k: f"{v * 1e3:.2f} ms" for k, v in longest[["naive_s", "cached_s"]].items()}
say(
    f"At {longest.context:.0f} tokens of context one naive step took {ms['naive_s']} and one "
    f"cached step {ms['cached_s']}: **{longest['speed-up']:.1f}× faster**. At "
    f"{shortest.context:.0f} tokens: {shortest.naive_s * 1e3:.2f} and "
    f"{shortest.cached_s * 1e3:.2f} ms. Their next-token probabilities differed by at most "
    f"{steps.max_prob_gap.max():.1e}."
)
claims = {
    "at the longest context the cached step is over 2× faster": longest["speed-up"] > 2,
    "the naive step grows with the context (over 2× from the shortest to the longest)": (
        longest.naive_s > 2 * shortest.naive_s
    ),
    "both ways give the same next-token probabilities": steps.max_prob_gap.max() < tolerance,
}
for claim, held in claims.items():
    expect(held, claim, preset=preset)

# %% [markdown]
# ### A teaching KV cache
#
# The library's `KVCache` preallocates every layer's keys and values for the longest sequence it
# will hold and writes each step's in place. The idea needs less: per layer, keep what came so
# far and concatenate the new step's keys and values. The model's attention asks a cache two
# things — `pos`, how many tokens it holds, so rotary positions continue from there, and
# `update(k, v)`, which stores the new keys and values and returns all of them:


# %%
class GrowingCache:
    """Per layer, the keys and values so far, grown by concatenation at every step."""

    def __init__(self, n_layer: int) -> None:
        self.pos, self.layers = 0, [GrowingLayer(self) for _ in range(n_layer)]

    def advance(self, n: int) -> None:
        self.pos += n


class GrowingLayer:
    def __init__(self, cache: GrowingCache) -> None:
        self.cache, self.k, self.v = cache, None, None

    @property
    def pos(self) -> int:
        return self.cache.pos

    def update(self, k: torch.Tensor, v: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        self.k = k if self.k is None else torch.cat([self.k, k], dim=2)
        self.v = v if self.v is None else torch.cat([self.v, v], dim=2)
        return self.k, self.v


# %% [markdown]
# Greedy decoding with it: the prompt goes through once, then each chosen token alone. Three
# ways must agree token for token: the naive `GPT.generate`, the teaching cache, and the
# library's engine. (On a GPU the check runs on a CPU copy of the model in fp32, where all three
# compute exactly the same numbers; in bf16 a rounding difference could flip a near-tie.)


# %%
@torch.inference_mode()
def greedy_with_cache(net: nn.Module, ids: list[int], n: int) -> list[int]:
    cache, out = GrowingCache(config.n_layer), []
    logits = net(torch.tensor([ids]), kv_cache=cache)[:, -1]
    for _ in range(n):
        out.append(int(logits.argmax()))
        logits = net(torch.tensor([[out[-1]]]), kv_cache=cache)[:, -1]
    return out


cpu_model = model if run.device == "cpu" else copy.deepcopy(model).cpu().float()
start = tokenizer.encode(p.prompt, prepend=tokenizer.bos_id)
n_new = min(16, config.seq_len - len(start))
naive = cpu_model.generate(torch.tensor([start]), n_new, temperature=0)[0, len(start) :].tolist()
teaching = greedy_with_cache(cpu_model, start, n_new)
library = Engine(cpu_model).generate(start, max_tokens=n_new, temperature=0).tokens[0]
assert naive == teaching == library
print(f"{n_new} greedy tokens agree three ways: {tokenizer.decode(library)!r}")

# %% [markdown]
# ## What the cache costs in memory
#
# Every layer keeps a key and a value vector per KV head per token, so one token of context
# costs
#
# $$\text{bytes per token} = 2 \cdot n_\text{layer} \cdot n_\text{kv heads} \cdot
# d_\text{head} \cdot \text{bytes per number}$$
#
# (the 2 is keys plus values). Grouped-query attention (`kv_ratio` in chapter 2) divides it by
# sharing each key/value head among several query heads. We check the formula against what
# `nanolib.engine.KVCache` allocates for one full-length row of this model:

# %%
engine = Engine(model, tokenizer)


def cache_bytes_per_token(c, bytes_per_number: int) -> int:
    return 2 * c.n_layer * c.n_kv_head * c.head_dim * bytes_per_number


cache = KVCache.for_model(config, batch=1, max_len=config.seq_len, dtype=engine.dtype)
per_token = cache_bytes_per_token(config, cache.k.element_size())
assert cache.nbytes == per_token * config.seq_len
weights = sum(t.numel() * t.element_size() for t in model.parameters())
print(
    f"{per_token:,} bytes per token × {config.seq_len} positions = {cache.nbytes:,} bytes "
    f"({cache.nbytes / weights:.1%} of the model's {weights:,} bytes of weights)"
)

# %% [markdown]
# The same formula for the model of each preset of book.yml (bf16 on a GPU, fp32 on a CPU), for
# one full-length conversation and for the 16 × 16 rollouts of a GPU RL step (chapter 7):

# %%
rows = {}
for name in run.book.presets:
    shape = run.book.resolve("03_pretraining", name)
    vocab = run.book.resolve("01_tokenizer", name)["vocab_size"]
    keys = ("depth", "seq_len", "aspect_ratio", "head_dim")
    c = config_for_depth(shape["depth"], vocab, *(shape[k] for k in keys[1:]))
    per = cache_bytes_per_token(c, 2 if run.book.preset(name).device == "cuda" else 4)
    rows[name] = {
        "layers": c.n_layer,
        "kv heads": c.n_kv_head,
        "head_dim": c.head_dim,
        "seq_len": c.seq_len,
        "KiB per token": per / 1024,
        "MiB per conversation": per * c.seq_len / 2**20,
        "GiB for 256 conversations": 256 * per * c.seq_len / 2**30,
    }
pd.DataFrame.from_dict(rows, orient="index").round(3)

# %% [markdown]
# ## Prefill and decode
#
# A reply has two phases. **Prefill** puts the whole prompt into the cache in one forward pass:
# every matrix multiplies all prompt tokens at once, which is what hardware is good at. **Decode**
# then adds one token per pass: the same weights are read for a single vector, so a step is
# bound by reading memory (and, on a small model, by the fixed cost of launching each
# operation). Putting the same tokens in both ways shows the difference, and that the two caches
# hold the same keys and values:

# %%
phases = prefill_vs_decode(model, min(p.decode_tokens, config.seq_len), p.timing_repeats, p.seed)
n = phases["tokens"]
rates = pd.DataFrame(
    {
        "seconds": [phases["prefill_s"], phases["decode_s"]],
        "tokens per second": [n / phases["prefill_s"], n / phases["decode_s"]],
    },
    index=[f"prefill ({n} tokens, one pass)", f"decode ({n} passes of one token)"],
)
run.log(event="prefill_vs_decode", **phases)
rates

# %%
ratio = phases["decode_s"] / phases["prefill_s"]
say(
    f"Prefill put {n} tokens in the cache {ratio:.1f}× faster than decoding them one by one; "
    f"the two caches differ by at most {phases['max_cache_gap']:.1e} of their largest value."
)
claims = {
    "prefill is over 2× faster per token than decode": ratio > 2,
    "prefill and decode fill the same cache": phases["max_cache_gap"] < tolerance,
}
for claim, held in claims.items():
    expect(held, claim, preset=preset)

# %% [markdown]
# This is why serving systems report two numbers, the time to the first token (prefill, which
# grows with the prompt) and the tokens per second after it (decode), and why the engine
# prefills a prompt once at batch 1 and then copies the cache to every sample: the samples of
# one prompt share their prefix (chapter 7's rollouts rely on it). `bench/inference.py` measures
# both against naive decoding on longer prompts.
#
# ## Sampling knobs
#
# The model gives scores (logits) for every token; sampling turns them into a choice. Three knobs
# reshape the distribution first:
#
# - **temperature** T divides the logits: T < 1 sharpens the distribution towards the likeliest
#   token (T = 0 is greedy), T > 1 flattens it;
# - **top-k** keeps only the k likeliest tokens;
# - **top-p** (nucleus) keeps the likeliest tokens until they hold probability p, however many
#   that is.
#
# Here is the base model's distribution for the token after our prompt (token texts are
# escaped: the vocabulary holds pieces such as `<` that a page must not read as HTML):

# %%
ids = tokenizer.encode(p.prompt, prepend=tokenizer.bos_id)
with torch.inference_mode():
    logits = model(torch.tensor([ids], device=run.device))[0, -1].float().cpu()
top = torch.topk(logits, 15).indices
label = [escape_text(repr(tokenizer.decode([int(t)]))) for t in top]  # token text is escaped
fig = figure(f"Next token after {escape_text(repr(p.prompt))}", "token", "probability")
for t in p.temperatures:
    fig.add_bar(x=label, y=torch.softmax(logits / t, -1)[top], name=f"T = {t}")
fig.show()

# %% [markdown]
# Top-k and top-p at temperature 1, as the share of the probability each keeps and how many
# tokens that is:

# %%
probs = torch.softmax(logits, -1)
ranked = probs.sort(descending=True).values
kept_p = int((ranked.cumsum(0) - ranked < p.top_p).sum())  # stays if the mass before it is < p
knobs = pd.DataFrame(
    {
        "tokens kept": [len(probs), p.top_k, kept_p],
        "probability kept": [1.0, float(ranked[: p.top_k].sum()), float(ranked[:kept_p].sum())],
    },
    index=["no cut", f"top-k = {p.top_k}", f"top-p = {p.top_p}"],
)
knobs

# %% [markdown]
# A teaching sampler: scale by the temperature, keep the top k and renormalise, keep the top p
# of that, then pick by inverse CDF — the first token whose cumulative probability passes a
# uniform random number u (times the kept mass). Fed the same u's, it must pick exactly the
# tokens `nanolib.engine.sample_tokens` picks:


# %%
def kept_tokens(logits: torch.Tensor, t: float, k: int, top_p: float):
    values, ids = torch.topk(logits / t, k)
    probs = torch.softmax(values, -1)
    keep = (probs.cumsum(0) - probs) < top_p  # top-p: stop once the mass before reaches p
    return ids[keep], probs[keep]


def teaching_sample(logits: torch.Tensor, t: float, k: int, top_p: float, u: float) -> int:
    ids, probs = kept_tokens(logits, t, k, top_p)
    cdf = probs.cumsum(0)
    return int(ids[min(int((cdf <= u * cdf[-1]).sum()), len(ids) - 1)])


u = torch.rand(2000, generator=torch.Generator().manual_seed(p.seed))
draws = sample_tokens(logits.expand(2000, -1), 1.0, p.top_k, p.top_p, u)
mine = [teaching_sample(logits, 1.0, p.top_k, p.top_p, float(x)) for x in u[:200]]
assert mine == draws[:200].tolist()
print(f"the teaching sampler and the library drew the same {len(mine)} tokens")

# %%
allowed, kept_probs = kept_tokens(logits, 1.0, p.top_k, p.top_p)
freq = torch.bincount(draws, minlength=len(probs)).double() / len(draws)
target = torch.zeros(len(probs), dtype=torch.double)
target[allowed] = kept_probs.double() / kept_probs.sum()
gap = float((freq - target).abs().max())
allowed = set(allowed.tolist())
say(
    f"Over {len(draws):,} draws, the frequency of every token was within {gap:.3f} of its "
    f"renormalised probability."
)
claims = {
    "no draw falls outside top-k ∩ top-p": set(draws.tolist()) <= allowed,
    "draw frequencies match the renormalised probabilities (within 0.05)": gap < 0.05,
}
for claim, held in claims.items():
    expect(held, claim, preset=preset)

# %% [markdown]
# ## Tool use, token by token
#
# A chat model that has learned the tool format (chapter 6) writes `<|python_start|>`, some code,
# and `<|python_end|>`. The engine watches every row for that: it decodes the code, runs it —
# arithmetic on the calculator, anything else in the sandbox below — and **forces** the result
# into the row as `<|output_start|> … <|output_end|>`, one token per step, before the model goes
# on. The model did not choose the forced tokens, so the engine marks them with mask 0; chapter 7
# leaves them out of the policy gradient.
#
# To watch the state machine without depending on what a small model happens to sample, a
# stand-in plays the model: a table that says which token follows which, scripted to ask the
# calculator for 12·7 and then finish its sentence.


# %%
class ScriptedModel(nn.Module):
    """A stand-in GPT: the token after t is next_of[t] (its logits put all mass there)."""

    def __init__(self, next_of: dict[int, int], end: int) -> None:
        super().__init__()
        self.config, self.next_of, self.end = config, next_of, end
        self.anchor = nn.Parameter(torch.zeros(()))  # gives the engine a device and a dtype

    def forward(self, idx: torch.Tensor, kv_cache=None) -> torch.Tensor:
        kv_cache.advance(idx.size(1))
        logits = torch.full((*idx.shape, self.config.vocab_size), -1e4)
        for row, last in enumerate(idx[:, -1].tolist()):
            logits[row, -1, self.next_of.get(last, self.end)] = 0.0
        return logits


# %%
sp = tokenizer.special_id
script = [
    sp("<|assistant_start|>"),
    sp("<|python_start|>"),
    *tokenizer.encode("12*7"),
    sp("<|python_end|>"),
]
after = [sp("<|output_end|>"), *tokenizer.encode(" is the product."), sp("<|assistant_end|>")]
next_of = dict(zip(script, script[1:])) | dict(zip(after, after[1:]))
assert len(next_of) == len(script) + len(after) - 2, "a token repeats: pick another script"
question = render_for_completion(tokenizer, [{"role": "user", "content": "What is 12 times 7?"}])
traced = Engine(ScriptedModel(next_of, sp("<|assistant_end|>")), tokenizer).generate(
    question, max_tokens=40, temperature=0
)
tokens, mask = traced.tokens[0], traced.masks[0]
display(HTML(conversation_html(tokenizer, tokens, mask)))

# %% [markdown]
# Green tokens were sampled (mask 1), grey ones forced by the engine (mask 0). Step by step:

# %%
trace = pd.DataFrame(
    {
        "token": [tokenizer.decode([t]) for t in tokens],
        "id": tokens,
        "mask": mask,
        "written by": ["model" if m else "tool (forced)" for m in mask],
    }
)
forced = tokenizer.decode([t for t, m in zip(tokens, mask) if m == 0])
assert forced == f"<|output_start|>{calculator('12*7')}<|output_end|>"
escape_table(trace)

# %% [markdown]
# ## Python in a sandbox
#
# The second tool runs code the model wrote, which must never be trusted: it could loop forever,
# fill the memory, read files or open a connection. `nanolib.sandbox.run_python` runs each program
# in a fresh process with a wall-clock timeout (the whole process group is killed), CPU and
# memory limits, an empty temporary directory, a scrubbed environment and capped output; where
# the operating system allows, it also blocks the network, new processes and writes outside
# its directory. What this machine's kernel provides:

# %%
pd.Series(protections(), name="active").to_frame()

# %% [markdown]
# Four programs: one that computes something, one that never ends, one that tries to connect
# (to this machine: nothing leaves it even where the network is not blocked), one that tries to
# write into the book's folder. Each runs with a one-second limit:

# %%
escaped = run.dir / "escaped.txt"  # a file the sandbox must not be able to write
programs = {
    "computes": "print(sum(i * i for i in range(10)))",
    "never ends": "while True:\n    pass",
    "opens a connection": "import socket\nsocket.socket().connect(('127.0.0.1', 9))",
    "writes outside": f"open({str(escaped)!r}, 'w').write('x')",
}


def outcome(code: str) -> dict:
    r = run_python(code, timeout_s=1.0)
    last = (r.stdout or r.stderr).strip().splitlines()[-1:] or [""]
    return {"ok": r.ok, "error": r.error, "says": last[0][:80], "seconds": round(r.seconds, 2)}


outcomes = pd.DataFrame({name: outcome(code) for name, code in programs.items()}).T
escape_table(outcomes)

# %%
kinds = outcomes.error.fillna("none")
say(
    f"The computing program printed `{outcomes.says['computes']}`; the endless one was stopped "
    f"as `{kinds['never ends']}` after {outcomes.seconds['never ends']} s; the error kinds of the "
    f"connection and of the write: `{kinds['opens a connection']}`, `{kinds['writes outside']}`."
)
wrote = escaped.exists()
escaped.unlink(missing_ok=True)
claims = {
    "the sandbox runs ordinary code": outcomes.says["computes"] == "285",
    "an endless program is stopped": outcomes.error["never ends"] == "timeout",
    "where the filesystem is confined, nothing was written outside": (
        not wrote or not protections()["filesystem_confined"]
    ),
}
for claim, held in claims.items():
    expect(held, claim, preset=preset)

# %% [markdown]
# Routed through the engine's tools, code that is not plain arithmetic goes to the sandbox and
# comes back as the text the model would read:

# %%
for code in ("2**10 + 1", "print(sorted('sandbox'))", "import os; os.fork()"):
    print(f"{code!r:32} → {run_tool(code, DEFAULT_TOOLS)!r}")

# %% [markdown]
# ## A chat
#
# Now the real thing: the best chat model this preset has — chapter 7's RL model if it ran,
# else chapter 6's SFT model, else the base model, which never saw the chat template and is
# given a plain prompt to continue. `nanolib.chat_session.ChatSession` keeps the conversation,
# renders it with the template, crops the oldest turns when it outgrows the context, and streams
# the reply as text, tool calls and tool outputs.

# %%
choice = find_chat_model(run.preset, chat_model)
say(choice.describe().capitalize() + ".")
chat_engine = engine if choice.kind == "base" else load_chat_engine(choice, run.device)
session = ChatSession(chat_engine, chat=choice.chat)


# %%
def shown(events: list) -> str:
    """A reply's text with tool calls and outputs in brackets."""
    tools = ("python", "output")
    return "".join(f"[{e.kind}: {e.text}]" if e.kind in tools else e.text for e in events[:-1])


transcript = []
for i, message in enumerate(p.chat_prompts):
    t0 = time.perf_counter()
    events = list(session.reply(message, p.max_new_tokens, 0.6, top_k=50, seed=p.seed + i))
    info, seconds = events[-1].info, time.perf_counter() - t0
    transcript.append(
        {"user": message, choice.kind: shown(events), "tokens": info["tokens"], "seconds": seconds}
    )
    run.log(event="chat", turn=i, **info)
style = {"white-space": "pre-wrap", "text-align": "left"}
escape_table(pd.DataFrame(transcript)).format(precision=2, escape="html").set_properties(**style)

# %% [markdown]
# The same conversation, live, is one command away. In a terminal (tokens appear as they are
# sampled; `/clear` starts over, `/quit` leaves):
#
# ```
# nanobook chat --preset tiny                  # the best model at tiny
# nanobook chat --preset tiny --model base -p "Once upon a time"
# ```
#
# and in a browser, served on your own machine only (127.0.0.1):
#
# ```
# nanobook chat --preset tiny --web --port 8000
# ```
#
# The page streams the reply over server-sent events and inserts everything the model writes as
# text, never as HTML; the server checks every request against limits (messages, lengths,
# temperature, top-k, tokens) and runs one generation at a time.

# %%
run.finish(
    headline={
        "kv_speedup": round(float(longest["speed-up"]), 2),
        "kv_speedup_context": int(longest.context),
        "prefill_over_decode": round(ratio, 2),
        "chat_model": choice.kind,
    }
)

# %% [markdown]
# ## Summary
#
# - Naive decoding recomputes the whole context at every step; a KV cache keeps every layer's
#   keys and values, so a step costs one token's forward pass plus attention over the cache.
# - The cache costs 2 · layers · KV heads · head_dim · bytes per token of context, which is what
#   limits how many conversations (or RL rollouts) fit on a GPU at once; grouped-query attention
#   divides it.
# - Prefill processes the prompt in parallel; decode is one token per pass. The engine prefills
#   once and copies the cache to every sample of a prompt.
# - Temperature, top-k and top-p reshape the next-token distribution before the draw.
# - Tools run mid-answer: the engine runs the code and forces the output with mask 0; model-written
#   Python runs in a sandbox that stops what it must not do.
#
# **Exercises**
# 1. Set `cpu_threads = 2` (or `None`) and re-run the timings. Is one decode step faster or
#    slower than with one thread? Why might many small operations not gain from a second core?
# 2. Build the model with `kv_ratio = 2` (chapter 2) and check the memory formula again. What
#    does grouped-query attention cost in quality, according to Ainslie et al. 2023?
# 3. With `temperatures = [0.1, 1.0, 3.0]`, how many tokens hold 90 % of the mass at each?
# 4. Write a program the sandbox should refuse and check which error kind it gets. Which
#    protections in the table above stopped it?
# 5. Start `nanobook chat --web` and open the page's developer tools: find the server-sent
#    events of one reply.
#
# **Further reading**: Pope et al. 2022, *Efficiently Scaling Transformer Inference* (prefill,
# decode and the KV cache's memory); Holtzman et al. 2020, *The Curious Case of Neural Text
# Degeneration* (top-p); Kwon et al. 2023, *PagedAttention* (vLLM's cache management); Ainslie et
# al. 2023, *GQA*; Schick et al. 2023, *Toolformer*; nanochat's `engine.py` for the production
# version of this engine.
