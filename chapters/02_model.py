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
# # 2. The model
#
# A GPT turns a sequence of token ids into, at every position, a score for each possible next
# token. This chapter builds the one we train for the rest of the book and puts a single number in
# charge of its size: the **depth**. Turn that dial and the width, the number of heads, the
# parameter count and the compute per token all follow.
#
# **What you will build**
# - the dial: models at several depths, with a table of their shapes, parameters by group,
#   parameter counts under three conventions, and training FLOPs per token;
# - a fifteen-line teaching version of causal self-attention with rotary position embeddings and
#   QK-norm, checked against the library's attention on random input;
# - one forward pass on real tokens, whose loss at initialisation is ln(vocabulary size) — and why.
#
# **Prerequisites**: chapter 1 (the tokenizer sets the vocabulary size), and matrix
# multiplication. No training happens here; chapter 3 trains what we build.
#
# | preset | depths in the table | model built | time |
# |---|---|---|---|
# | `smoke` | 1–3 | depth 2, d_model 64 | seconds |
# | `tiny` | 2–8 | depth 4, d_model 128 | ≈ 20 s on 2 CPU cores |
# | `d12`, `miniseries`, `speedrun` | 10–26 | depth 12 / 20 / 24 | ≈ 1 min on a GPU |

# %% tags=["parameters"]
# Every None takes the preset's value (`nanobook params 02 --preset tiny` lists them, with ranges)
preset = "tiny"  # type: str  a preset of book.yml: smoke | tiny | d12 | miniseries | speedrun
depth = None  # type: int  the dial: transformer blocks of the model we build
aspect_ratio = None  # type: int  model width per block: d_model is aspect_ratio × depth
head_dim = None  # type: int  channels per attention head
seq_len = None  # type: int  context length in tokens
depths = None  # type: list  the depths of the dial table
seed = None  # type: int  random seed
run_dir = None  # type: str  where the run is written (None: runs/<preset>/02_model)

# %%
import copy
import inspect
import math

import pandas as pd
import torch
from torch.utils.flop_counter import FlopCounterMode

from nanolib.model import (
    CONVENTIONS,
    GPT,
    Block,
    CausalSelfAttention,
    config_for_depth,
    estimate_memory,
    flops_per_token,
    norm,
    param_counts,
    scaling_params,
)
from nanolib.plots import OURS, figure
from nanolib.runs import start_chapter
from nanolib.tokenizer import Tokenizer

run = start_chapter("02_model", preset, globals())
tokenizer = Tokenizer.load(run.artifact("tokenizer"))
vocab_size = tokenizer.vocab_size
print(run.summary())
print(f"vocab_size    {vocab_size:,} (from chapter 1's tokenizer)")

# %% [markdown]
# ## The dial
#
# nanochat's idea, which we keep: choose the depth (the number of transformer blocks) and derive
# everything else from it. The width is `d_model = aspect_ratio · depth`, rounded up to a whole
# number of heads of `head_dim` channels, and there are `d_model / head_dim` heads. Deeper models
# are therefore also wider, in a fixed proportion, and one integer names a model: `d12` is the
# 12-layer one.
#
# The GPU presets use nanochat's aspect ratio 64 and heads of 128 channels. The `tiny` preset
# halves both (book.yml says so), so that a CPU model of a few layers is narrow enough to train in
# minutes and still has more than one head. Here is the dial at this preset's depths:

# %%
rows = []
for d in run.p.depths:
    c = config_for_depth(d, vocab_size, run.p.seq_len, run.p.aspect_ratio, run.p.head_dim)
    shape = {"depth": d, "d_model": c.d_model, "n_head": c.n_head, "head_dim": c.head_dim}
    groups = {k: v for k, v in param_counts(c).items() if k not in ("scalars", "total")}
    conventions = {f"N_{conv}": scaling_params(c, conv) for conv in CONVENTIONS}
    rows.append({**shape, **groups, **conventions, "flops_per_token": flops_per_token(c)})
    run.log(event="dial", **rows[-1])
dial = pd.DataFrame(rows).set_index("depth")
dial

# %% [markdown]
# The groups: `embedding` is the token-embedding table `wte` (vocab × d_model), `attention` the
# four matrices of every block (queries, keys, values, output), `mlp` the two matrices of every
# block's feed-forward layer (d_model → 4·d_model → d_model), and `lm_head` the output matrix
# that scores every token of the vocabulary. A block holds 4·d² + 8·d² = 12·d² weights, so the
# blocks together hold 12·depth·d_model², and since d_model grows with depth, that is ∝ depth³.
# The embedding and the head grow only ∝ depth. On log-log axes the slopes show it:

# %%
fig = figure("Parameters by group along the dial", "depth (layers)", "parameters", True, True)
for group in ("embedding", "attention", "mlp", "lm_head", "N_all"):
    label = "all parameters" if group == "N_all" else group
    fig.add_scatter(x=dial.index, y=dial[group], name=label, **OURS)
fig.show()

# %% [markdown]
# ## Which N? Three ways to count parameters
#
# A scaling law writes the loss as a function of N, "the number of parameters", and of D, the
# training tokens. The plot shows why the definition of N matters: at small depth the embedding
# and the head are a large share of all parameters, at large depth a small one. Three conventions
# are in use, and `nanolib.model.scaling_params` computes each:
#
# | convention | counts | used by |
# |---|---|---|
# | `all` | every parameter | Chinchilla (Hoffmann et al. 2022) |
# | `non_embedding` | attention + mlp (no `wte`, no `lm_head`) | Kaplan et al. 2020 |
# | `matmul` | attention + mlp + `lm_head` | nanochat; **this book** |
#
# **Our convention is `matmul`**: the weights a token is multiplied by on its way through the
# model. It is the N in "6·N FLOPs per token" (an embedding lookup is a memory read, not a
# multiply), and it is the N of the tokens-per-parameter ratio that sets the training horizon in
# chapter 3 and that chapter 4 fits. Fitting the same runs with another N bends the fitted curves:
# Pearce & Song (2024) trace much of the gap between Kaplan's and Chinchilla's compute-optimal
# exponents to Kaplan leaving the embeddings out at small scale. The ratio of the counts along the
# dial:

# %%
ratios = pd.DataFrame(
    {
        "(wte + lm_head) / all": (dial["embedding"] + dial["lm_head"]) / dial["N_all"],
        "N_all / N_matmul": dial["N_all"] / dial["N_matmul"],
        "N_non_embedding / N_matmul": dial["N_non_embedding"] / dial["N_matmul"],
    }
)
ratios.round(3)

# %% [markdown]
# ## The model we build
#
# Now an actual model at this preset's `depth`. The formulas in the table must agree with
# counting the model's tensors one by one, and printing the model shows its modules. Every block
# is the same pre-norm block: normalise, attend, add; normalise, feed forward, add.

# %%
config = config_for_depth(
    run.p.depth, vocab_size, run.p.seq_len, run.p.aspect_ratio, run.p.head_dim
)
with torch.device(run.device):
    model = GPT(config)
assert param_counts(model) == param_counts(config)
print(config)
print(f"{param_counts(model)['total']:,} parameters; formulas and tensors agree")
print(model)

# %%
print(inspect.getsource(Block.forward))

# %% [markdown]
# `norm` is RMSNorm without a learnable gain — divide each vector by its root-mean-square — and
# it appears before each sub-layer and once more before the head; no layer has a bias.
#
# ## Causal self-attention, written out
#
# Attention lets each position read from earlier positions. Each head projects the input into
# queries q, keys k and values v; the score of position t reading position s is q_t·k_s/√head_dim;
# a softmax over s ≤ t (the **causal mask** forbids reading the future) turns scores into weights,
# and the output is the weighted sum of values. Two more ingredients:
#
# - **Rotary position embeddings** (Su et al. 2021). Attention by itself ignores order. Rotary
#   rotates q and k, one pair of channels at a time, by an angle proportional to the position, with
#   a different frequency per pair. The score of two rotated vectors depends on their positions
#   only through the *difference* t − s, so every head sees relative position for free and no
#   position table is learned. We pair channel i with channel i + head_dim/2.
# - **QK-norm**: q and k are RMS-normalised after the rotation (more on why below).
#
# Here is the whole thing, using the weights of the library's first block. `rotate` is our own
# rotary; the library's is `nanolib.model.apply_rotary`.


# %%
def rotate(x: torch.Tensor, base: float = 100_000.0) -> torch.Tensor:
    """Rotary: turn channel pair (i, i + D/2) of x (B, H, T, D) by position · base^(-2i/D)."""
    T, D = x.shape[-2:]
    freq = base ** (-torch.arange(0, D, 2, dtype=torch.float64) / D)
    angle = torch.outer(torch.arange(T, dtype=torch.float64), freq).to(x)
    x1, x2 = x.chunk(2, dim=-1)
    cos, sin = angle.cos(), angle.sin()
    return torch.cat([x1 * cos - x2 * sin, x1 * sin + x2 * cos], dim=-1)


def rms(x: torch.Tensor) -> torch.Tensor:
    """Divide each vector by its root-mean-square (RMSNorm without a gain)."""
    return x * torch.rsqrt(x.pow(2).mean(-1, keepdim=True) + torch.finfo(x.dtype).eps)


def teach_attention(attn: torch.nn.Module, x: torch.Tensor) -> torch.Tensor:
    """Causal self-attention of x (B, T, d_model) with the weights of a library attention."""
    B, T, _ = x.shape
    H, D = attn.n_head, attn.head_dim
    q = (x @ attn.c_q.weight.T).view(B, T, H, D).transpose(1, 2)  # (B, H, T, D)
    k = (x @ attn.c_k.weight.T).view(B, T, -1, D).transpose(1, 2)  # (B, H_kv, T, D)
    v = (x @ attn.c_v.weight.T).view(B, T, -1, D).transpose(1, 2)
    group = H // k.size(1)  # query heads per key/value head (1 unless GQA)
    k, v = k.repeat_interleave(group, dim=1), v.repeat_interleave(group, dim=1)
    q, k = rms(rotate(q)), rms(rotate(k))
    scores = q @ k.transpose(-2, -1) / math.sqrt(D)  # (B, H, T, T)
    future = torch.triu(torch.full((T, T), float("-inf"), device=x.device), diagonal=1)
    weights = torch.softmax(scores + future, dim=-1)
    y = (weights @ v).transpose(1, 2).reshape(B, T, H * D)
    return y @ attn.c_proj.weight.T


# %% [markdown]
# The library initialises every output projection `c_proj` to **zero**, so that each block starts
# as the identity on the residual stream (a stable start for deep models). For a check that is a
# trap: with `c_proj = 0` *any* attention — even a wrong one — outputs zeros and would "agree". So
# the check uses a copy of the first block's attention whose `c_proj` is random. Both sides compute
# in fp32 but add things up in different orders (the library calls a fused attention kernel), so
# "equal" means within a tolerance: `torch.allclose` with rtol 1e-4 and atol 1e-5.


# %%
def check_attention(attn: torch.nn.Module, T: int) -> float:
    """Max |teaching − library| on random input for a copy of attn with a random c_proj."""
    attn = copy.deepcopy(attn)
    with torch.no_grad():
        torch.nn.init.normal_(attn.c_proj.weight, std=attn.c_proj.in_features**-0.5)
        x = torch.randn(2, T, attn.c_q.in_features, device=attn.c_q.weight.device)
        ours, lib = teach_attention(attn, x), attn(x, model.cos[:, :T], model.sin[:, :T])
    assert torch.allclose(ours, lib, rtol=1e-4, atol=1e-5), (ours - lib).abs().max()
    return (ours - lib).abs().max().item()


attention_max_diff = check_attention(model.blocks[0].attn, T=min(run.p.seq_len, 64))
print(f"teaching = library attention: max |difference| {attention_max_diff:.1e}")

# %% [markdown]
# Rotary's promise, checked with our `rotate`: put the same query at every position and the same
# key at every position; the score of position t reading position s then depends only on t − s,
# so the score matrix is constant along each diagonal.

# %%
q = torch.randn(config.head_dim).expand(1, 1, 16, -1)
k = torch.randn(config.head_dim).expand(1, 1, 16, -1)
scores = (rotate(q) @ rotate(k).transpose(-2, -1))[0, 0]  # (16, 16): row t reads column s
assert torch.allclose(scores[1:, 1:], scores[:-1, :-1], atol=1e-4)
pd.Series({f"t − s = {d}": scores.diagonal(-d)[0].item() for d in range(6)}, name="score").round(3)

# %% [markdown]
# ## One forward pass
#
# Encode a sentence with chapter 1's tokenizer (starting with `<|bos|>`, as every pretraining
# document does), feed all but the last token, and ask the model to predict each next token. The
# model returns logits of shape (batch, positions, vocabulary); with targets it returns the mean
# cross-entropy loss.

# %%
sentence = "The dial is depth: turn it and the width, the heads and the compute all follow."
ids = tokenizer.encode(sentence, prepend="<|bos|>")[: run.p.seq_len + 1]
tokens = torch.tensor([ids], device=run.device)
with torch.no_grad():
    logits = model(tokens[:, :-1])
    init_loss = model(tokens[:, :-1], tokens[:, 1:]).item()
print(f"{len(ids)} tokens → logits {tuple(logits.shape)} (batch, positions, vocab)")
print(f"loss at init {init_loss:.4f} nats; ln(vocab_size) = {math.log(vocab_size):.4f}")
assert abs(init_loss - math.log(vocab_size)) < 0.01
run.log(event="forward", tokens=len(ids), init_loss=init_loss, ln_vocab=math.log(vocab_size))

# %% [markdown]
# Why ln(vocab_size)? The head `lm_head` starts with tiny weights (standard deviation 0.001), so
# every logit is close to 0, the softmax is close to uniform, and each next token gets probability
# ≈ 1/V. Cross-entropy is −ln p = ln V: 8.3 nats for a 4,096-token vocabulary, 10.4 for 32,768.
# A model that starts *above* ln V is confidently wrong before it has learned anything, and wastes
# its first steps unlearning that; this init avoids it. ln V is also the baseline every training
# curve in chapter 3 starts from.
#
# ## Counting FLOPs: 6·N, plus attention
#
# Training FLOPs per token are, to a good approximation, 6·N: each weight takes part in one
# multiply-add (2 FLOPs) in the forward pass and two in the backward pass (one for the gradient of
# its input, one for its own gradient). Attention adds the score and weighted-sum matmuls, which
# have no weights: 12·n_layer·d_model·seq_len per token for forward + backward.
# `flops_per_token` adds the two. PyTorch's FLOP counter can check the 6·N part on a real
# forward + backward pass. We compare only the plain matrix products of the linear layers
# (`aten.mm`): how the attention kernel is counted depends on the device and the kernel chosen.

# %%
batch = torch.randint(0, vocab_size, (1, run.p.seq_len), device=run.device)
with FlopCounterMode(display=False) as counter:
    model(batch, batch).backward()
model.zero_grad(set_to_none=True)
by_op = {str(op): n for op, n in counter.get_flop_counts()["Global"].items()}
matmul_flops = by_op.get("aten.mm", 0) + by_op.get("aten.addmm", 0)  # the Linear layers
six_n = 6 * scaling_params(config, "matmul")
assert matmul_flops == six_n * run.p.seq_len
pd.Series(
    {
        "measured matmul FLOPs per token": matmul_flops // run.p.seq_len,
        "6·N_matmul": six_n,
        "attention term": flops_per_token(config) - six_n,
        "flops_per_token (6·N_matmul + attention)": flops_per_token(config),
    },
    name="FLOPs per token",
)

# %% [markdown]
# ## Four design choices, briefly
#
# Our GPT follows nanochat's modern GPT rather than GPT-2. Each choice below is small in code and
# was kept because it trained better or more stably at the same compute.
#
# **QK-norm.** Without it, queries and keys can grow during training until the attention scores
# are huge, the softmax saturates to one-hot, and the loss spikes (Dehghani et al. 2023 saw this in
# large vision transformers). RMS-normalising q and k caps every score: two vectors of RMS 1 have a
# dot product at most head_dim, so after dividing by √head_dim no score exceeds √head_dim, however
# large the inputs.

# %%
huge = 1000.0 * torch.randn(2, 64, config.head_dim)  # deliberately huge queries and keys
q, k = norm(huge[0]), norm(huge[1])
largest = (q @ k.T / math.sqrt(config.head_dim)).abs().max().item()
print(f"largest |score| {largest:.2f} ≤ √head_dim = {math.sqrt(config.head_dim):.2f}")
assert largest <= math.sqrt(config.head_dim) + 1e-4

# %% [markdown]
# **ReLU².** The MLP's nonlinearity is max(0, x)², found by a search over transformer variants
# (So et al. 2021, *Primer*); in nanochat's tests SwiGLU, the other popular choice, did no better
# at the same parameters and FLOPs. It is cheap, and its outputs are sparse: at initialisation
# about half are exactly zero.
#
# **Untied embedding and head.** GPT-2 used one matrix both to look tokens up (`wte`) and to
# score them (`lm_head`). We keep two: reading a token and predicting one are different jobs, the
# two matrices like different learning rates (chapter 3), and the head can start near zero while
# the embedding starts at unit scale. The cost is the `lm_head` column of the dial table,
# vocab · d_model more parameters — large at small depth, small at large depth.
#
# **Logit softcap.** Before the loss, each logit passes through softcap · tanh(logit / softcap),
# with softcap = 15: the identity near zero, but no logit can exceed ±15. This keeps the model
# from becoming arbitrarily confident early in training, when overconfidence is cheap to learn
# and expensive to unlearn (Gemma 2 uses the same trick with 30).

# %%
raw = torch.linspace(-4 * config.softcap, 4 * config.softcap, 201)
capped = (config.softcap * torch.tanh(raw / config.softcap)).tolist()
raw = raw.tolist()
fig = figure(f"Logit softcap ({config.softcap:g})", "raw logit", "logit after the cap")
fig.add_scatter(x=raw, y=raw, name="no cap", mode="lines", line_dash="dot")
fig.add_scatter(
    x=raw, y=capped, name=f"{config.softcap:g}·tanh(x/{config.softcap:g})", mode="lines"
)
fig.update_yaxes(range=[-2 * config.softcap, 2 * config.softcap])
fig.show()

# %% [markdown]
# ## Grouped-query attention
#
# Every query head needs keys and values, but they need not each have their own. With
# **grouped-query attention** (GQA, Ainslie et al. 2023) `kv_ratio` query heads share one key/value
# head: `c_k` and `c_v` shrink by that factor, and so does the KV cache that inference keeps for
# every past token (chapter 8). `kv_ratio = n_head` is multi-query attention, one shared head. The
# parameters saved are modest, since attention is a third of each block; the cache saved is not.
# At this preset's depth:

# %%
rows = []
for ratio in [r for r in range(1, config.n_head + 1) if config.n_head % r == 0]:
    c = config_for_depth(
        run.p.depth, vocab_size, run.p.seq_len, run.p.aspect_ratio, run.p.head_dim, ratio
    )
    kv_cache = c.n_layer * 2 * c.n_kv_head * c.head_dim * 2  # k and v, every layer, bf16
    row = {"kv_ratio": ratio, "n_kv_head": c.n_kv_head, "attention": param_counts(c)["attention"]}
    rows.append(
        {**row, "N_matmul": scaling_params(c, "matmul"), "kv_cache_bytes_per_token": kv_cache}
    )
pd.DataFrame(rows).set_index("kv_ratio")

# %% [markdown]
# The teaching attention handles groups with `repeat_interleave` (query head h reads key/value head
# h // kv_ratio). Check it against the library with the largest ratio, one key/value head for all:

# %%
kv_ratio = config.n_head
gqa = config_for_depth(
    run.p.depth, vocab_size, run.p.seq_len, run.p.aspect_ratio, run.p.head_dim, kv_ratio
)
with torch.device(run.device):
    gqa_attn = CausalSelfAttention(gqa)  # random weights, c_proj included
gqa_max_diff = check_attention(gqa_attn, T=min(run.p.seq_len, 64))
print(f"n_kv_head={gqa.n_kv_head}: teaching = library: max |difference| {gqa_max_diff:.1e}")

# %% [markdown]
# ## Memory on the GPU presets
#
# Will a model fit on one GPU? Training one rank holds fp32 weights and gradients, optimizer state
# (AdamW's two moments for the embedding and head, Muon's one momentum for the matrices — chapter
# 3), and the activations autograd saves for the backward pass, which grow with the
# **device batch** (sequences per GPU per step). `estimate_memory` adds these up. The table is the
# same at every preset: it reads the GPU presets' shapes from book.yml, whatever preset this run
# uses. An H100 has 80 GB; where a batch does not fit, the training loop takes several smaller
# steps and accumulates their gradients.

# %%
rows = []
gpu_presets = [name for name, pr in run.book.presets.items() if pr.device == "cuda"]
for name in gpu_presets:
    shape = run.book.resolve("02_model", name)
    vocab = run.book.resolve("01_tokenizer", name)["vocab_size"]
    for d in sorted({*shape["depths"], shape["depth"]}):
        c = config_for_depth(d, vocab, shape["seq_len"], shape["aspect_ratio"], shape["head_dim"])
        gb = {f"GB at batch {b}": estimate_memory(c, b) / 1e9 for b in (8, 16, 32)}
        rows.append(
            {"depth": d, "d_model": c.d_model, "N_matmul": scaling_params(c, "matmul"), **gb}
        )
memory = pd.DataFrame(rows).drop_duplicates().set_index("depth").sort_index()
memory.round(1)

# %% [markdown]
# The model this run built needs, by the same estimate:

# %%
ours_gb = estimate_memory(config, device_batch_size=8) / 1e9
print(f"depth {run.p.depth}, seq_len {run.p.seq_len}, device batch 8: ≈ {ours_gb:.2f} GB")

# %%
run.finish(
    headline={
        "depth": run.p.depth,
        "d_model": config.d_model,
        "params_all": param_counts(config)["total"],
        "N_matmul": scaling_params(config, "matmul"),
        "flops_per_token": flops_per_token(config),
        "init_loss": round(init_loss, 4),
        "ln_vocab": round(math.log(vocab_size), 4),
    }
)

# %% [markdown]
# ## Summary
#
# - One integer, the depth, names a model: width = aspect_ratio · depth (rounded to whole heads),
#   heads = width / head_dim. The blocks grow ∝ depth³, the embedding and head ∝ depth.
# - A block is pre-norm attention (rotary, QK-norm, causal) plus a ReLU² MLP; the head is untied
#   and its logits soft-capped. Our fifteen-line attention agrees with the library's.
# - At init the loss is ln(vocab_size), because the head starts near zero.
# - We count N as the `matmul` parameters: 6·N (+ attention) is the training FLOPs per token, and
#   chapters 3 and 4 measure tokens per parameter in this N.
#
# **Exercises**
# 1. Set `aspect_ratio = 64` and `head_dim = 128` at `tiny` (the GPU shape). What happens to the
#    number of heads at depth 4, and to the share of parameters in the embedding?
# 2. Delete the causal mask from `teach_attention` and re-run the check. By how much does it fail,
#    and at which positions is the output still right?
# 3. Rotary with `base = 10_000` (the original paper's) instead of 100,000: which channel pairs
#    turn fastest, and what is the longest wavelength in tokens? Why might a long context prefer a
#    larger base?
# 4. Compute the attention term as a fraction of `flops_per_token` along the dial. At what
#    sequence length does attention cost as much as the weights for the tiny model?
#
# **Further reading**: Vaswani et al. 2017, *Attention Is All You Need*; Su et al. 2021,
# *RoFormer* (rotary); Kaplan et al. 2020 and Hoffmann et al. 2022 on N and scaling; Pearce &
# Song 2024, *Reconciling Kaplan and Chinchilla Scaling Laws*; Ainslie et al. 2023 (GQA); the
# model section of nanochat's `gpt.py` for the production version with value embeddings and
# sliding windows, which ours leaves out.
