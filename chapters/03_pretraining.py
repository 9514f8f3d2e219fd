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
# # 3. Pretraining
#
# Chapter 2 built a GPT whose first guess is uniform: every next token equally likely. This
# chapter trains it on text until its guesses are good, and measures how good in a unit that does
# not depend on the tokenizer — bits per byte. The same code trains a 1-million-parameter model
# on two CPU cores and a GPT-2-grade one on eight GPUs; only the preset changes.
#
# **What you will build**
# - a data pipeline that tokenises documents, packs them into rows that start at `<|bos|>`,
#   shares them out between GPUs and can stop and resume at any row;
# - a training run: a horizon from a tokens-per-parameter ratio, gradient accumulation, Muon and
#   AdamW on a warmup–flat–warmdown schedule, validation in bits per byte, checkpoints you can
#   kill and resume, and throughput and MFU;
# - a count-based bigram baseline on the same tokens, which the model must beat clearly.
#
# **Prerequisites**: chapter 1's tokenizer (this chapter loads it) and chapter 2's model.
#
# | preset | model | training tokens | hardware | time | cost |
# |---|---|---|---|---|---|
# | `smoke` | depth 1 | ≈ 8 thousand | any CPU | seconds | — |
# | `tiny` | depth 4, d_model 128 (chapter 2's) | ≈ 2 million | 2 CPU cores | ≈ 6 min | — |
# | `d12` | depth 12, d_model 768 | 1.3 B (12 per param) | 1 × H100 | ≈ 50 min | ≈ $2.5 |
# | `miniseries` | depth 20, d_model 1280 | 5.2 B (12 per param) | 8 × H100 | ≈ 1.5 h | ≈ $36 |
# | `speedrun` | depth 24, d_model 1536 | 5.8 B (8 per param) | 8 × H100 | ≈ 2.7 h | ≈ $65 |
#
# The GPU times assume 40% MFU and $3 per GPU-hour; the section *The GPU presets* below derives
# them from book.yml, and a run's own manifest records what it really took (the `tiny` time was
# measured on a quiet 2-core machine; the throughput section prints this run's).

# %% tags=["parameters"]
# Every None takes the preset's value (`nanobook params 03 --preset tiny` lists them, with ranges)
preset = "tiny"  # type: str  a preset of book.yml: smoke | tiny | d12 | miniseries | speedrun
data = None  # type: str  text source: tiny | fineweb-edu
depth = None  # type: int  the dial: transformer blocks of the model we train
aspect_ratio = None  # type: int  model width per block: d_model is aspect_ratio × depth
head_dim = None  # type: int  channels per attention head
seq_len = None  # type: int  context length in tokens
batch_tokens = None  # type: int  tokens per optimizer step, summed over ranks and micro-steps
device_batch_size = None  # type: int  rows per forward/backward on one rank
tokens_per_param = None  # type: float  horizon: training tokens per parameter (if no steps/FLOPs)
target_flops = None  # type: float  horizon: training FLOPs (None: from tokens_per_param)
num_steps = None  # type: int  horizon: optimizer steps (None: from target_flops or the ratio)
matrix_lr = None  # type: float  peak learning rate of the matrices (Muon)
embedding_lr = None  # type: float  peak learning rate of the token embedding (AdamW)
unembedding_lr = None  # type: float  peak learning rate of the output layer (AdamW)
weight_decay = None  # type: float  weight decay of the matrices
warmup_steps = None  # type: int  steps of linear learning-rate warmup
warmdown_ratio = None  # type: float  last fraction of steps over which the LR decays linearly
final_lr_frac = None  # type: float  the LR at the end, as a fraction of the peak
eval_every = None  # type: int  steps between val evaluations (0: at the start and end only)
eval_tokens = None  # type: int  val tokens per evaluation
checkpoint_every = None  # type: int  steps between checkpoints (0: at the end only)
num_samples = None  # type: int  text samples drawn from the model at each evaluation
sample_tokens = None  # type: int  tokens per sample
bigram_max_tokens = None  # type: int  training tokens the bigram baseline counts (None: all)
seed = None  # type: int  random seed
run_dir = None  # type: str  where the run is written (None: runs/<preset>/03_pretraining)

# %%
import html
import math
import statistics
from itertools import islice

import pandas as pd
import torch
from IPython.display import HTML, display

from nanolib.checkpoint import CONFIG, read_meta, read_metrics
from nanolib.claims import expect, say
from nanolib.data import TokenLoader
from nanolib.device import gpu_cost
from nanolib.model import GPT, estimate_memory
from nanolib.optim import build_optimizer, orthogonalize
from nanolib.plots import OURS, figure
from nanolib.runs import start_chapter
from nanolib.seeds import seed_manifests
from nanolib.tokenizer import Tokenizer
from nanolib.train import (
    TrainConfig,
    launch,
    lr_multiplier,
    plan,
    recipe_for,
    torchrun_command,
    val_batches,
    vocab_size_for,
)

# %%
run = start_chapter("03_pretraining", preset, globals())
tokenizer_dir = run.artifact("tokenizer")
tokenizer = Tokenizer.load(tokenizer_dir)
print(run.summary())

# %% [markdown]
# ## From documents to rows
#
# The model trains on rows of `seq_len + 1` token ids: the first `seq_len` are the inputs, and
# the same row shifted by one is the targets, so every position predicts the next token. The
# loader (`nanolib.data.TokenLoader`) reads the documents in order, tokenises them in batches with
# `<|bos|>` in front of each, lays them end to end and cuts the stream into rows.
#
# Every row starts with `<|bos|>`, so the model always knows where its context begins. A row that
# begins at a document takes that document's own `<|bos|>`; when a document does not fit in what
# is left of a row, its remainder is **carried** into the next row behind a fresh `<|bos|>`.
# nanochat instead crops the remainder and throws it away — cheap when web documents are shorter
# than its 2,048-token rows, but our shipped corpus has documents of about 1,300 tokens against
# rows of 256, and cropping would discard most of it. Here are the first rows, `⟨bos⟩` in red:

# %%
loader = TokenLoader(tokenizer, run.p.data, "train", batch_size=4, seq_len=run.p.seq_len)
x, y = next(iter(loader))
assert (x[:, 0] == tokenizer.bos_id).all() and torch.equal(x[:, 1:], y[:, :-1])
print(f"inputs {tuple(x.shape)}, targets {tuple(y.shape)}; position now {loader.state_dict()}")

# %%


def show(ids: list[int]) -> str:
    """Token ids as text, with every BOS marked."""
    bos = '<b style="color:#c0392b">⟨bos⟩</b>'
    return "".join(
        bos if i == tokenizer.bos_id else html.escape(tokenizer.decode([i])) for i in ids
    )


rows_html = [f"<p><b>row {r}</b>: {show(x[r, :48].tolist())} …</p>" for r in range(3)]
display(HTML(f'<div style="font-family:monospace;white-space:pre-wrap">{"".join(rows_html)}</div>'))

# %% [markdown]
# The position is five integers — epoch, shard, document, token offset and the number of rows
# made — and it is all a checkpoint needs to put the data back exactly where it was. With several
# GPUs, rank *r* of *W* keeps rows *r*, *r + W*, …: the ranks never see the same row, and together
# they see exactly what one process would. Both claims, checked:


# %%
def first_rows(n: int, rank: int = 0, world_size: int = 1, state: dict | None = None) -> list:
    """The first n rows a rank's loader yields, from a saved position if one is given."""
    ld = TokenLoader(
        tokenizer, run.p.data, "train", 1, run.p.seq_len, rank=rank, world_size=world_size
    )
    if state:
        ld.load_state_dict(state)
    return [x[0].tolist() for x, _ in islice(ld, n)]


one = first_rows(8)
assert first_rows(4, 0, 2) == one[0::2] and first_rows(4, 1, 2) == one[1::2]
assert first_rows(4, state=loader.state_dict()) == first_rows(8)[4:]
print("2 ranks: disjoint rows that interleave to the 1-process stream; a saved position resumes")

# %% [markdown]
# ## The horizon: how long to train
#
# A run is planned from the model and a budget. nanochat sets the number of training tokens as a
# multiple of the parameters, `tokens = tokens_per_param × N` with N the `matmul` parameters of
# chapter 2 (its default ratio is 12; chapter 4 measures what the best ratio is). The same plan
# also takes a FLOPs budget (`target_flops`, with FLOPs = `flops_per_token × tokens`) or a plain
# step count; the first one set wins. Each optimizer step sees `batch_tokens` tokens, gathered as
# `grad_accum` micro-batches of `device_batch_size` rows on each of `nproc` processes.

# %%
out_dir = run.path("checkpoint")  # this chapter's `checkpoint` artifact
cfg = TrainConfig.from_params(
    run.params, out_dir=str(out_dir), tokenizer_dir=str(tokenizer_dir), device=run.device
)
p = plan(cfg, tokenizer.vocab_size, run.nproc)
rows = {
    "model": f"depth {p.model.n_layer}, d_model {p.model.d_model}, {p.model.n_head} heads",
    "N (matmul params)": f"{p.num_params:,}",
    "tokens per param": f"{p.tokens_per_param:.2f}",
    "training tokens": f"{p.tokens:,}",
    "steps × batch_tokens": f"{p.num_steps:,} × {cfg.batch_tokens:,}",
    "micro-batches per step": f"{p.grad_accum} × {run.nproc} proc. × {cfg.device_batch_size} rows",
    "training FLOPs": f"{p.flops:.3g} = {p.flops_per_token:,} per token × tokens",
    "GiB per process (est.)": f"{estimate_memory(p.model, cfg.device_batch_size) / 2**30:.2f}",
}
pd.Series(rows, name="plan").to_frame()

# %% [markdown]
# ## Two optimizers, one schedule
#
# The hidden matrices of the blocks train with Muon, the embedding and the head with AdamW
# (`nanolib.optim`). A hidden matrix is a linear map whose every input direction matters; an
# embedding row or a head row is a lookup that a token touches only when it occurs — so the two
# kinds want different updates (the next section shows Muon's). Each group has its own peak
# learning rate; one multiplier moves them together: a short linear **warmup** (the first updates
# of Adam are noisy), a flat middle, and a linear **warmdown** over the last `warmdown_ratio` of
# the run to `final_lr_frac` of the peak — nanochat found a long warmdown its "biggest free win".

# %%
with torch.device("meta"):  # a model without memory: we only need its parameter groups
    opt = build_optimizer(
        GPT(p.model),
        matrix_lr=cfg.matrix_lr,
        embedding_lr=cfg.embedding_lr,
        unembedding_lr=cfg.unembedding_lr,
        weight_decay=cfg.weight_decay,
    )
groups = [
    {"group": g["name"], "peak LR": g["initial_lr"], "params": sum(q.numel() for q in g["params"])}
    for g in opt.param_groups
]
pd.DataFrame(groups).set_index("group")

# %%
steps = list(range(p.num_steps))
lrm = [
    lr_multiplier(s, p.num_steps, cfg.warmup_steps, cfg.warmdown_ratio, cfg.final_lr_frac)
    for s in steps
]
fig = figure("Learning-rate schedule", "optimizer step", "LR ÷ peak LR")
fig.add_scatter(x=steps, y=lrm, mode="lines", name="every group")
fig.show()

# %% [markdown]
# ### Muon's update: the gradient, orthogonalised
#
# A gradient matrix G = U·S·Vᵀ usually has a few large singular values and many tiny ones, so a
# plain step moves the weights almost only along a few directions. Muon keeps a momentum of G and
# steps along U·Vᵀ instead — the same directions with every singular value set to 1. An SVD per
# step is slow on a GPU; a few **Newton–Schulz** iterations get there with matrix products only.
# Scale G so that every singular value is at most 1, then repeat x ← a·x + (b·xxᵀ + c·(xxᵀ)²)·x,
# which maps each singular value σ to aσ + bσ³ + cσ⁵: a polynomial tuned to push small values up
# fast (and to land in roughly 0.55–1.15 rather than exactly at 1). By hand:


# %%
def newton_schulz(g: torch.Tensor, steps: int = 5) -> torch.Tensor:
    """≈ U·Vᵀ of a wide matrix g = U·S·Vᵀ, by the quintic Newton–Schulz iteration."""
    a, b, c = 3.4445, -4.7750, 2.0315
    x = g / g.norm()  # the Frobenius norm bounds the largest singular value
    for _ in range(steps):
        gram = x @ x.T
        x = a * x + (b * gram + c * gram @ gram) @ x
    return x


# %%
g = torch.randn(64, 256, generator=torch.Generator().manual_seed(0))
g[:, :8] *= 30  # a few dominant directions, like a real gradient
ortho = newton_schulz(g)
assert torch.allclose(ortho, orthogonalize(g), atol=1e-5)  # the library's, to float precision
u, _, vt = torch.linalg.svd(g, full_matrices=False)
sv_before, sv_after = torch.linalg.svdvals(g), torch.linalg.svdvals(ortho)
cosine = (ortho * (u @ vt)).sum() / (ortho.norm() * (u @ vt).norm())
print(f"singular values: {sv_before.min():.2f}…{sv_before.max():.2f} → {sv_after.min():.2f}…"
      f"{sv_after.max():.2f}; cosine with the exact U·Vᵀ: {cosine:.3f}")  # fmt: skip

# %% [markdown]
# ### One training step
#
# Everything the loop below repeats, once, on the first batch of the loader above: the forward
# pass and its loss, the backward pass, every group's learning rate set by the schedule, and the
# two optimizers' step. The loss on the same batch, measured again, has gone down:

# %%
torch.manual_seed(cfg.seed)
with torch.device(run.device):
    model = GPT(p.model)
lrs = {k: getattr(cfg, k) for k in ("matrix_lr", "embedding_lr", "unembedding_lr")}
opt = build_optimizer(model, **lrs, weight_decay=cfg.weight_decay)
bx, by = x.to(run.device), y.to(run.device)
loss = model(bx, by)
loss.backward()
for group in opt.param_groups:
    group["lr"] = group["initial_lr"] * lrm[0]  # the schedule's first multiplier
opt.step()
opt.zero_grad(set_to_none=True)
with torch.no_grad():
    after = model(bx, by).item()
assert after < loss.item(), (loss.item(), after)
print(f"loss on the batch: {loss.item():.4f} → {after:.4f} nats per token after one step")
del model, opt  # the run below builds its own

# %% [markdown]
# ## Bits per byte
#
# The training loss is the cross-entropy in nats per *token*, and a token is a different amount of
# text for every tokenizer. Bits per byte divides the summed loss by the number of UTF-8 bytes
# the targets stand for (and by ln 2): the cost of encoding the text with the model's
# predictions, per byte. Special tokens have no bytes and count in neither sum. A model that
# guesses uniformly pays log₂(vocab) bits per token, so its bits per byte is log₂(vocab) divided
# by the bytes per token — where every run starts (chapter 2: the head starts near zero):

# %%
val_x, val_y = (torch.cat(t) for t in zip(*val_batches(tokenizer, cfg)))
token_bytes = torch.tensor(tokenizer.token_bytes())
val_bytes = token_bytes[val_y]
bytes_per_token = val_bytes.sum().item() / (val_bytes > 0).sum().item()
uniform_bpb = math.log2(tokenizer.vocab_size) / bytes_per_token
print(f"val set: {val_y.numel():,} tokens, {val_bytes.sum().item():,} bytes")
print(
    f"uniform guess: log2({tokenizer.vocab_size:,}) / {bytes_per_token:.3f} = {uniform_bpb:.3f} bpb"
)

# %% [markdown]
# ## Training
#
# The heavy step is one call. `launch` trains in this process when the preset has one process,
# and otherwise starts `torchrun` (next section) and streams rank 0's lines here. Either way the
# run writes into `checkpoint/` in this chapter's run directory: `metrics.jsonl` as it goes, a
# checkpoint every `checkpoint_every` steps and at the end, and `summary.json`. If the kernel
# dies, run the notebook again: the run continues from its last checkpoint, and a finished run is
# not trained twice. Everything below reads the results back from those files.
#
# The run also decides for itself whether `torch.compile` pays (`nanolib.compiling`): it times
# its first steps eager, compiles the model and Muon's update, times a few compiled steps and
# keeps the faster mode. Compiling costs tens of seconds once, so a short run does not try. The
# progress lines say what the first compiled step cost and what was decided; the verdict is kept
# per machine and model shape under `runs/.cache/`, beside inductor's compiled code, so a re-run
# decides at once and compiles warm.

# %%
summary = launch(cfg, run.nproc)

# %% [markdown]
# ## The loss curve

# %%
history = pd.DataFrame(read_metrics(cfg.out_dir))
train_curve = history.dropna(subset=["train_bpb"])
val_curve = history.dropna(subset=["val_bpb"])
final = val_curve.iloc[-1]
print(f"after {final.tokens:,.0f} tokens ({final.flops:.3g} FLOPs): val {final.val_bpb:.4f} bpb")
expect(final.val_bpb < min(val_curve.val_bpb.iloc[0], uniform_bpb),
       "training lowers val bits per byte below where the run started and below a uniform guess",
       preset=run.preset)  # fmt: skip
val_curve[["step", "tokens", "flops", "val_bpb"]].set_index("step").round(4)

# %% [markdown]
# ## A baseline to beat: counting bigrams
#
# Is that good? The simplest language model that learns anything predicts the next token from the
# previous one by counting: P(b | a) = (count(a, b) + k) / (count(a) + k·V), with a little
# add-k smoothing for pairs never seen. We count every (input, target) pair of the rows the
# model trained on (up to `bigram_max_tokens`), score the same val rows in bits per byte, and let
# the baseline choose its best k on val — a generous comparison.


# %%
def count_bigrams(batches, vocab_size: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Sorted pair ids a·V + b of every (input, target) pair, and how often each occurs."""
    keys, counts = torch.empty(0, dtype=torch.long), torch.empty(0, dtype=torch.long)
    for x, y in batches:
        pairs = torch.cat([keys, (x * vocab_size + y).flatten()])
        weights = torch.cat([counts, torch.ones(x.numel(), dtype=torch.long)])
        keys, inverse = torch.unique(pairs, return_inverse=True)
        counts = torch.zeros_like(keys).index_add_(0, inverse, weights)
    return keys, counts


# %%
def bigram_bpb(keys, counts, x, y, k: float, vocab_size: int) -> float:
    """Bits per byte of the add-k bigram model on the pairs (x, y)."""
    totals = torch.zeros(vocab_size, dtype=torch.float64).index_add_(
        0, keys // vocab_size, counts.double()
    )
    pairs = (x * vocab_size + y).flatten()
    i = torch.searchsorted(keys, pairs).clamp(max=len(keys) - 1)
    seen = torch.where(keys[i] == pairs, counts[i], 0).double()
    nats = -torch.log((seen + k) / (totals[x.flatten()] + k * vocab_size))
    b = token_bytes[y.flatten()]
    return (nats * (b > 0)).sum().item() / (math.log(2) * b.sum().item())


# %%
seen = min(summary["tokens"], run.p.bigram_max_tokens or summary["tokens"]) // run.p.seq_len  # rows
chunk = 4096  # rows counted at a time
rows_seen = TokenLoader(tokenizer, run.p.data, "train", batch_size=chunk, seq_len=run.p.seq_len)
batches = ((x[:n], y[:n]) for (x, y), n in zip(rows_seen, range(seen, 0, -chunk)))
keys, counts = count_bigrams(batches, tokenizer.vocab_size)
ks = [0.003, 0.01, 0.03, 0.1, 0.3, 1.0]
baseline = pd.Series(
    {k: bigram_bpb(keys, counts, val_x, val_y, k, tokenizer.vocab_size) for k in ks}
)
bigram, model_bpb = baseline.min(), summary["val_bpb"]
print(f"bigram counts from {seen * run.p.seq_len:,} tokens: {len(keys):,} distinct pairs")
print(f"val bpb: bigram {bigram:.4f} (best k = {baseline.idxmin()}), model {model_bpb:.4f}")
verdict = "beats" if model_bpb < bigram else "does NOT beat"
print(f"the model {verdict} the bigram baseline by {bigram - model_bpb:+.3f} bpb")
expect(model_bpb < bigram, "the trained model beats the bigram baseline", preset=run.preset)

# %%
fig = figure("Pretraining: bits per byte against tokens", "tokens seen", "bits per byte")
fig.add_scatter(
    x=train_curve.tokens, y=train_curve.train_bpb, mode="lines", name="train (per step)"
)
fig.add_scatter(x=val_curve.tokens, y=val_curve.val_bpb, name="val", **OURS)
fig.add_hline(y=bigram, line_dash="dot", annotation_text="bigram counts")
fig.add_hline(y=uniform_bpb, line_dash="dash", annotation_text="uniform guess")
fig.update_yaxes(range=[0.9 * min(train_curve.train_bpb.min(), bigram), 1.05 * uniform_bpb])
fig.show()

# %% [markdown]
# Against compute the same curve is the one chapter 4 is about: training FLOPs on a log axis. A
# bigger budget buys a lower curve; the question there is how to spend it.

# %%
fig = figure(
    "Pretraining: bits per byte against compute", "training FLOPs", "val bits per byte", log_x=True
)
later = val_curve[val_curve.flops > 0]
fig.add_scatter(x=later.flops, y=later.val_bpb, name=f"ours, depth {p.model.n_layer}", **OURS)
fig.add_hline(y=bigram, line_dash="dot", annotation_text="bigram counts")
fig.show()

# %% [markdown]
# ## Throughput and MFU
#
# Tokens per second is what the run achieved; times `flops_per_token` it is FLOP/s; divided by
# the device's published peak (a table in `nanolib.device`) it is the **model FLOPs utilisation**,
# the share of the hardware the model really used. nanochat reaches about 40–50% on H100s. A CPU
# has no entry in the table, so at `tiny` MFU is empty and the FLOP/s is the number to read.

# %%
compiled = "on" if summary.get("compiled") else "off"
if summary.get("compile_s"):
    compiled += f" (its first step took {summary['compile_s']:.0f} s)"
pd.Series(
    {
        "device": f"{summary['device']} × {summary['world_size']}",
        "tokens/s": f"{summary['tokens_per_s']:,.0f}",
        "achieved FLOP/s": f"{summary['tokens_per_s'] * p.flops_per_token:.3g}",
        "MFU": f"{summary['mfu']:.1%}"
        if summary["mfu"]
        else "— (no published peak for this device)",
        "torch.compile": compiled,
        "precision": "bf16 autocast" if summary.get("bf16") else "fp32",
        "wall time": f"{summary['wall_s']:.0f} s",
    },
    name="throughput",
).to_frame()

# %%
wall_s = summary["wall_s"]
took = f"{wall_s:.0f} s" if wall_s < 120 else f"{wall_s / 60:.1f} min"
say(f"This run trained for {took} on {summary['device']} ({summary['tokens']:,} tokens).")

# %% [markdown]
# On a CPU that multiplies bf16 natively (AVX-512 BF16 or AMX, as on recent Xeons and EPYCs),
# training autocasts to bf16 just as it does on a GPU (`nanolib.device.training_bf16`); the
# evaluations stay in fp32. `bench/train_throughput.py --bf16` measures what each choice is worth
# on your machine, side by side.
#
# ## How much of this is luck?
#
# Another seed draws other initial weights (the batches are the same). How much does the final
# val bpb move? `nanobook run 03 --preset tiny --seeds 0 1 2` runs the chapter once per seed (the
# other seeds first, into `seeds/<k>/`, then this canonical run), and this cell reads them:

# %%
others = seed_manifests(run.preset, run.slug, run.params)
seed_bpb = {run.p.seed: summary["val_bpb"]}
seed_bpb |= {m["params"]["seed"]: m["headline"]["val_bpb"] for m in others}
if len(seed_bpb) > 1:
    values = list(seed_bpb.values())
    mean, sd = statistics.mean(values), statistics.stdev(values)
    say(
        f"Over {len(values)} seeds the final val bpb is **{mean:.4f} ± {sd:.4f}** (mean ± standard "
        f"deviation; {min(values):.4f}–{max(values):.4f}): differences between runs smaller than "
        f"about {2 * sd:.1g} bpb are within what a seed alone changes."
    )
else:
    say(f"No other seeds were run at `{run.preset}` yet: the spread is not measured here.")
pd.Series(seed_bpb, name="val bpb").rename_axis("seed").to_frame()

# %% [markdown]
# ## What it writes
#
# Eight words from the middle of held-out documents (works the model never saw), continued by
# the trained model (temperature 0.8, top-k 50). At `tiny` expect the look of the corpus —
# speakers' names, verse lines, Bible verse numbers — more than sense.

# %%
from nanolib.html import escape_table

escape_table(pd.DataFrame(summary["samples"])).set_properties(
    **{"white-space": "pre-wrap", "text-align": "left"}
)

# %% [markdown]
# ## Checkpoints and resuming
#
# A checkpoint is the weights, the optimizer state (Muon's momenta, Adam's moments and step
# counts), the random-number states and the loader position (`source`: where the stage's data
# stands), written to temporary names and renamed; `meta.json` is written last, so a run killed
# mid-save still has its previous complete checkpoint. The tests kill a run with SIGKILL, resume
# it, and require the same loss at every step as a run that was never interrupted. Chapters 5–8
# load the weights from here.

# %%
meta = read_meta(out_dir)
print(sorted(f.name for f in out_dir.iterdir()))
{
    "step": meta["step"],
    "num_steps": meta["num_steps"],
    "loader position": meta["source"],
    "val_bpb": meta["last_eval"].get("val_bpb"),
}

# %% [markdown]
# ## Many GPUs
#
# With `nproc > 1` (the `miniseries` and `speedrun` presets) `launch` writes the config to
# `checkpoint/config.json` and starts one process per GPU with `torchrun`. Each process runs the
# same `nanolib.train.train`: it wraps the model in `DistributedDataParallel`, which averages the
# gradients across processes during the last micro-step's backward pass, and reads its own rows
# from the loader. So 8 GPUs × 4 micro-steps see the same 32 micro-batches as 1 GPU × 32
# micro-steps, and the loss curve is the same (the tests check it with 2 CPU processes). If a
# rank fails, `launch` raises with that rank's error. The command at 8 GPUs:

# %%
print(" ".join(torchrun_command(out_dir / CONFIG, 8, "<log dir>")))

# %% [markdown]
# ## The GPU presets
#
# The same plan at the GPU presets, from book.yml. Their hyper-parameters are nanochat's reference
# values: d12 with a batch of 2¹⁹ tokens and 12 tokens per parameter; depth 20 and 24 with a batch
# of 2²⁰ and every learning rate × √2 (nanochat scales them with √batch), Muon's weight decay
# 0.28 · √(B / 2¹⁹) · (D_ref / D). The time and cost come from `nanolib.device.gpu_cost`, at the
# book's assumed MFU on H100s and price per GPU-hour:

# %%
assumed = run.book.cost_of("cuda")  # book.yml `cost:`, the book's one set of assumptions
print(f"assumed: {assumed.name}, {assumed.mfu:.0%} MFU, ${assumed.dollars_per_hour:g} per GPU-hour")
gpu_rows = {}
for name in ("d12", "miniseries", "speedrun"):
    nproc, gcfg = run.book.preset(name).nproc, recipe_for(run.book, name)
    gplan = plan(gcfg, vocab_size_for(run.book, name), nproc)
    cost = gpu_cost(gplan.flops, gpus=nproc)
    gpu_rows[name] = {
        "depth": gcfg.depth,
        "N": f"{gplan.num_params / 1e6:.0f} M",
        "tokens": f"{gplan.tokens / 1e9:.2f} B",
        "steps": f"{gplan.num_steps:,}",
        "FLOPs": f"{gplan.flops:.2g}",
        "GPUs": nproc,
        "GiB per GPU (est.)": f"{estimate_memory(gplan.model, gcfg.device_batch_size) / 2**30:.0f}",
        "hours": f"{cost['hours']:.1f}",
        "cost": f"${cost['dollars']:.1f}",
    }
pd.DataFrame(gpu_rows).T

# %% [markdown]
# For scale: nanochat's published d12 runs 1.0 × 10¹⁸ FLOPs, and its leaderboard speedrun (depth
# 24, ratio 8, fp8, value embeddings, sliding-window attention) reached GPT-2's CORE score in 99
# minutes on 8 × H100 — having also changed its data, from FineWeb-Edu to NVIDIA's ClimbMix. Our
# model leaves those refinements out and keeps FineWeb-Edu, so expect it slower and a little
# worse at the same depth.

# %%
run.finish(
    headline={
        "val_bpb": round(summary["val_bpb"], 4),
        "bigram_bpb": round(bigram, 4),
        "uniform_bpb": round(uniform_bpb, 4),
        "tokens": summary["tokens"],
        "steps": summary["num_steps"],
        "tokens_per_s": round(summary["tokens_per_s"]),
        "mfu": summary["mfu"] and round(summary["mfu"], 4),
    },
    flops=summary["flops"],
)

# %% [markdown]
# ## Summary
#
# - The loader packs documents behind `<|bos|>` into rows, carries remainders instead of
#   cropping them, gives each GPU every W-th row and resumes from five integers.
# - A run is planned from a ratio, a FLOPs budget or a step count; Muon and AdamW follow one
#   warmup–flat–warmdown multiplier; the loss is reported in bits per byte, which compares across
#   tokenizers.
# - Checkpoints are atomic and complete, so a killed run resumes to the same losses; `launch`
#   runs the same loop in this process or on many GPUs with torchrun.
# - The trained model beats a bigram model counted on the same tokens.
#
# **Exercises**
# 1. Set `warmdown_ratio = 0.0` and re-run at `tiny`. How much worse is the final val bpb? Then
#    try `0.9`.
# 2. Double `batch_tokens` (the same tokens in half the steps), then halve it (twice the steps).
#    Which matters more at this scale, the number of steps or the number of tokens?
# 3. Train for `target_flops` equal to this run's FLOPs with `depth = 2`, and again with
#    `depth = 6`. Which depth is best for this budget? (Chapter 4 asks this systematically.)
# 4. Interrupt the training cell (kernel → interrupt) half-way, then run it again. Check in
#    `metrics.jsonl` that the losses continue where a checkpoint left off.
#
# **Further reading**: Hoffmann et al. 2022 (*Chinchilla*) on tokens per parameter; Jordan et al.
# 2024 on Muon; Hägele et al. 2024, *Scaling Laws and Compute-Optimal Training Beyond Fixed
# Training Durations*, on warmdown schedules; Chowdhery et al. 2022 (*PaLM*, appendix B) on MFU;
# nanochat's `base_train.py` and `dataloader.py` for the production versions of this loop and
# loader.
