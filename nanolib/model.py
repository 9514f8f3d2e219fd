"""The GPT: one dial (depth) sets its shape; parameter, FLOPs and memory accounting beside it.

Architecture, in the order a token meets it:

- token embedding ``wte`` (untied from ``lm_head``), then a parameter-free RMSNorm;
- ``n_layer`` pre-norm blocks, ``x += attn(norm(x)); x += mlp(norm(x))``, where ``norm`` is
  ``F.rms_norm`` without a learnable gain and no layer has a bias;
- attention: separate ``c_q``, ``c_k``, ``c_v``, ``c_proj`` matrices, rotary position embeddings
  on q and k, then QK-norm (RMSNorm of q and k *after* the rotation, as nanochat does), then
  causal ``F.scaled_dot_product_attention``; ``n_kv_head < n_head`` gives grouped-query attention;
- MLP: ``c_fc`` (d_model → 4·d_model), ReLU², ``c_proj`` (4·d_model → d_model);
- a final RMSNorm, ``lm_head``, and logits soft-capped in fp32: ``softcap·tanh(logits/softcap)``.

Inference runs the same forward pass with a KV cache (``kv_cache=``, see nanolib.engine): the
new tokens' rotary angles start at the cache's position, their keys and values are appended to
it, and attention reads everything cached so far.

Init (``GPT.init_weights``): ``wte`` ~ N(0, 1); ``lm_head`` ~ N(0, 0.001) so the first
prediction is near-uniform; ``c_q``, ``c_k``, ``c_v``, ``c_fc`` ~ U(±√3/√d_in), i.e. std 1/√d_in;
both ``c_proj`` are zero, so every block starts as the identity on the residual stream.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Protocol

import torch
import torch.nn as nn
import torch.nn.functional as F

CONVENTIONS = ("all", "non_embedding", "matmul")


class LayerKV(Protocol):
    """One layer's slice of a KV cache (nanolib.engine.KVCache implements it).

    It may also carry `key_mask`, (B, max_len) bool, False at positions no query may attend
    (the left padding of a batch of prompts of different lengths); rotary positions are
    relative, so a left-padded row attends exactly as it would unpadded.
    """

    pos: int  # tokens cached before this step

    def update(self, k: torch.Tensor, v: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Write k, v (B, kv_heads, T, head_dim) at pos; return keys and values 0 … pos + T − 1."""
        ...


class KVCacheLike(Protocol):
    """A KV cache the forward pass reads and appends to: one LayerKV per block."""

    pos: int
    layers: Sequence[LayerKV]

    def advance(self, n: int) -> None:
        """Record that n more tokens are cached (called once per forward, after every layer)."""
        ...


@dataclass(frozen=True)
class GPTConfig:
    """The shape of a GPT; `config_for_depth` derives one from a single integer."""

    vocab_size: int = 4096
    seq_len: int = 256
    n_layer: int = 4
    d_model: int = 256
    n_head: int = 4
    n_kv_head: int | None = None  # None: one kv head per query head (no GQA)
    softcap: float = 15.0
    rope_base: float = 100_000.0

    def __post_init__(self) -> None:
        if self.n_kv_head is None:
            object.__setattr__(self, "n_kv_head", self.n_head)
        if self.d_model % self.n_head:
            raise ValueError(f"d_model={self.d_model} is not a multiple of n_head={self.n_head}")
        if self.n_head % self.n_kv_head:
            raise ValueError(
                f"n_head={self.n_head} is not a multiple of n_kv_head={self.n_kv_head} "
                "(each kv head serves a whole group of query heads)"
            )
        if self.head_dim % 2:
            raise ValueError(f"head_dim={self.head_dim} must be even for rotary embeddings")

    @property
    def head_dim(self) -> int:
        """Channels per attention head."""
        return self.d_model // self.n_head


def config_for_depth(
    depth: int,
    vocab_size: int,
    seq_len: int,
    aspect_ratio: int = 64,
    head_dim: int = 128,
    kv_ratio: int = 1,
) -> GPTConfig:
    """The dial: depth sets width (aspect_ratio·depth, rounded up to whole heads) and heads."""
    if depth < 1:
        raise ValueError(f"depth must be a positive integer, got {depth}")
    width = aspect_ratio * depth
    d_model = math.ceil(width / head_dim) * head_dim
    n_head = d_model // head_dim
    if n_head % kv_ratio:
        raise ValueError(
            f"depth={depth} gives n_head={n_head}, which kv_ratio={kv_ratio} does not divide; "
            "pick another depth or kv_ratio"
        )
    return GPTConfig(
        vocab_size=vocab_size,
        seq_len=seq_len,
        n_layer=depth,
        d_model=d_model,
        n_head=n_head,
        n_kv_head=n_head // kv_ratio,
    )


def rotary_tables(
    seq_len: int, head_dim: int, base: float = 100_000.0
) -> tuple[torch.Tensor, torch.Tensor]:
    """cos and sin of the rotary angles, each (seq_len, head_dim/2): position × frequency."""
    inv_freq = base ** -(torch.arange(0, head_dim, 2, dtype=torch.float64) / head_dim)
    angles = torch.outer(torch.arange(seq_len, dtype=torch.float64), inv_freq)
    return angles.cos().float(), angles.sin().float()


def apply_rotary(x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor) -> torch.Tensor:
    """Rotate pairs (x[i], x[i + head_dim/2]) of x (B, T, H, head_dim) by each position's angles."""
    x1, x2 = x.chunk(2, dim=-1)
    cos, sin = cos.to(x.dtype), sin.to(x.dtype)
    return torch.cat([x1 * cos - x2 * sin, x1 * sin + x2 * cos], dim=-1)


def norm(x: torch.Tensor) -> torch.Tensor:
    """RMSNorm over the last dimension, without a learnable gain."""
    return F.rms_norm(x, (x.size(-1),))


class CausalSelfAttention(nn.Module):
    """Multi-head causal self-attention with rotary, QK-norm and grouped-query heads."""

    def __init__(self, config: GPTConfig) -> None:
        super().__init__()
        self.n_head, self.n_kv_head, self.head_dim = (
            config.n_head,
            config.n_kv_head,
            config.head_dim,
        )
        d, kv_dim = config.d_model, config.n_kv_head * config.head_dim
        self.c_q = nn.Linear(d, d, bias=False)
        self.c_k = nn.Linear(d, kv_dim, bias=False)
        self.c_v = nn.Linear(d, kv_dim, bias=False)
        self.c_proj = nn.Linear(d, d, bias=False)

    def forward(
        self, x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor, kv_cache: LayerKV | None = None
    ) -> torch.Tensor:
        """(B, T, d_model) → (B, T, d_model); with a cache, attend to what it holds as well."""
        B, T, _ = x.shape
        q = self.c_q(x).view(B, T, self.n_head, self.head_dim)
        k = self.c_k(x).view(B, T, self.n_kv_head, self.head_dim)
        v = self.c_v(x).view(B, T, self.n_kv_head, self.head_dim)
        q, k = norm(apply_rotary(q, cos, sin)), norm(apply_rotary(k, cos, sin))
        # Under autocast the norm may return fp32 while v is bf16; SDPA wants one dtype.
        q, k, v = (t.to(v.dtype).transpose(1, 2) for t in (q, k, v))
        gqa = self.n_kv_head != self.n_head
        if kv_cache is None:
            y = F.scaled_dot_product_attention(q, k, v, is_causal=True, enable_gqa=gqa)
        else:
            pos, dtype = kv_cache.pos, q.dtype
            k, v = kv_cache.update(k, v)  # everything cached so far, this step's T included
            q = q.to(k.dtype)  # the cache may hold another dtype than this step computes in
            keys = getattr(kv_cache, "key_mask", None)  # (B, max_len), False on left padding
            if keys is not None:  # rows of several prompts, left-padded to one length
                span, at = pos + T, torch.arange(T, device=q.device)
                mask = torch.ones(T, span, dtype=torch.bool, device=q.device).tril(pos)
                own = torch.zeros_like(mask)
                own[at, pos + at] = True  # a padding query sees only itself (no empty softmax)
                mask = (mask & keys[:, None, None, :span]) | own
                y = F.scaled_dot_product_attention(q, k, v, attn_mask=mask, enable_gqa=gqa)
            elif T == 1:  # one new query sees every cached key: no mask
                y = F.scaled_dot_product_attention(q, k, v, enable_gqa=gqa)
            elif pos == 0:
                y = F.scaled_dot_product_attention(q, k, v, is_causal=True, enable_gqa=gqa)
            else:  # query i sits at position pos + i; is_causal would align it to key i
                mask = torch.ones(T, pos + T, dtype=torch.bool, device=q.device).tril(pos)
                y = F.scaled_dot_product_attention(q, k, v, attn_mask=mask, enable_gqa=gqa)
            y = y.to(dtype)
        return self.c_proj(y.transpose(1, 2).reshape(B, T, -1))


class MLP(nn.Module):
    """Two matrices with a ReLU² between them, 4× wider inside."""

    def __init__(self, config: GPTConfig) -> None:
        super().__init__()
        self.c_fc = nn.Linear(config.d_model, 4 * config.d_model, bias=False)
        self.c_proj = nn.Linear(4 * config.d_model, config.d_model, bias=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """(B, T, d_model) → (B, T, d_model)."""
        return self.c_proj(F.relu(self.c_fc(x)).square())


class Block(nn.Module):
    """One pre-norm transformer block."""

    def __init__(self, config: GPTConfig) -> None:
        super().__init__()
        self.attn = CausalSelfAttention(config)
        self.mlp = MLP(config)

    def forward(
        self, x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor, kv_cache: LayerKV | None = None
    ) -> torch.Tensor:
        """Add attention, then MLP, to the residual stream."""
        x = x + self.attn(norm(x), cos, sin, kv_cache)
        return x + self.mlp(norm(x))


class GPT(nn.Module):
    """A decoder-only transformer language model."""

    def __init__(self, config: GPTConfig) -> None:
        super().__init__()
        self.config = config
        self.wte = nn.Embedding(config.vocab_size, config.d_model)
        self.blocks = nn.ModuleList(Block(config) for _ in range(config.n_layer))
        self.lm_head = nn.Linear(config.d_model, config.vocab_size, bias=False)
        cos, sin = rotary_tables(config.seq_len, config.head_dim, config.rope_base)
        # Shaped (1, T, 1, head_dim/2) to broadcast over batch and heads; derived, so not saved.
        self.register_buffer("cos", cos[None, :, None, :], persistent=False)
        self.register_buffer("sin", sin[None, :, None, :], persistent=False)
        self.init_weights()

    @torch.no_grad()
    def init_weights(self) -> None:
        """Initialise every parameter as the module docstring states."""
        nn.init.normal_(self.wte.weight, mean=0.0, std=1.0)
        nn.init.normal_(self.lm_head.weight, mean=0.0, std=0.001)
        for block in self.blocks:
            attn, mlp = block.attn, block.mlp
            for linear in (attn.c_q, attn.c_k, attn.c_v, mlp.c_fc):
                bound = math.sqrt(3.0 / linear.in_features)
                nn.init.uniform_(linear.weight, -bound, bound)
            nn.init.zeros_(attn.c_proj.weight)
            nn.init.zeros_(mlp.c_proj.weight)

    def forward(
        self,
        idx: torch.Tensor,
        targets: torch.Tensor | None = None,
        loss_reduction: str = "mean",
        kv_cache: KVCacheLike | None = None,
    ) -> torch.Tensor:
        """Logits (B, T, vocab_size) in fp32, or the cross-entropy loss if targets are given.

        Targets equal to -1 are ignored. loss_reduction "none" returns the loss per token (B, T).
        With a kv_cache (inference), idx continues what the cache holds: its tokens sit at
        positions cache.pos … cache.pos + T − 1, attend to the cached ones, are cached in turn,
        and cache.pos advances by T.
        """
        B, T = idx.shape
        pos = 0 if kv_cache is None else kv_cache.pos
        if pos + T > self.config.seq_len:
            raise ValueError(
                f"sequence of {pos + T} tokens is longer than the model's "
                f"seq_len={self.config.seq_len}"
            )
        cos, sin = self.cos[:, pos : pos + T], self.sin[:, pos : pos + T]
        x = norm(self.wte(idx))
        if kv_cache is None:
            for block in self.blocks:
                x = block(x, cos, sin)
        else:
            for block, layer in zip(self.blocks, kv_cache.layers, strict=True):
                x = block(x, cos, sin, layer)
            kv_cache.advance(T)
        logits = self.lm_head(norm(x)).float()
        softcap = self.config.softcap
        logits = softcap * torch.tanh(logits / softcap)
        if targets is None:
            return logits
        loss = F.cross_entropy(
            logits.view(B * T, -1),
            targets.reshape(B * T),
            ignore_index=-1,
            reduction=loss_reduction,
        )
        return loss.view(B, T) if loss_reduction == "none" else loss

    @torch.no_grad()
    def generate(
        self,
        idx: torch.Tensor,
        max_new_tokens: int,
        temperature: float = 1.0,
        top_k: int | None = None,
        seed: int | None = None,
    ) -> torch.Tensor:
        """Append max_new_tokens sampled tokens to idx (B, T); temperature 0 means greedy."""
        generator = None
        if seed is not None:
            generator = torch.Generator(device=idx.device).manual_seed(seed)
        for _ in range(max_new_tokens):
            logits = self(idx[:, -self.config.seq_len :])[:, -1, :]
            if temperature == 0:
                next_id = logits.argmax(dim=-1, keepdim=True)
            else:
                logits = logits / temperature
                if top_k is not None:
                    kth = torch.topk(logits, min(top_k, logits.size(-1))).values[:, -1:]
                    logits = logits.masked_fill(logits < kth, float("-inf"))
                probs = F.softmax(logits, dim=-1)
                next_id = torch.multinomial(probs, num_samples=1, generator=generator)
            idx = torch.cat([idx, next_id], dim=1)
        return idx


def _config_of(model_or_config: nn.Module | GPTConfig) -> GPTConfig:
    if isinstance(model_or_config, GPTConfig):
        return model_or_config
    return unwrap_model(model_or_config).config


def unwrap_model(model: nn.Module) -> nn.Module:
    """The GPT inside a DDP (`.module`) or torch.compile (`._orig_mod`) wrapper."""
    while True:
        if hasattr(model, "_orig_mod"):
            model = model._orig_mod
        elif hasattr(model, "module"):
            model = model.module
        else:
            return model


def param_counts(model_or_config: nn.Module | GPTConfig) -> dict[str, int]:
    """Parameters by group: embedding, attention, mlp, lm_head, scalars, and their total.

    From a config the counts come from the formulas; from a model, by walking its parameters
    (anything not in a named group is counted as a scalar, so the total always adds up).
    """
    if isinstance(model_or_config, GPTConfig):
        c = model_or_config
        d, kv_dim = c.d_model, c.n_kv_head * c.head_dim
        counts = {
            "embedding": c.vocab_size * d,
            "attention": c.n_layer * (2 * d * d + 2 * d * kv_dim),  # c_q, c_proj + c_k, c_v
            "mlp": c.n_layer * 2 * d * 4 * d,  # c_fc, c_proj
            "lm_head": d * c.vocab_size,
            "scalars": 0,
        }
    else:
        counts = dict.fromkeys(("embedding", "attention", "mlp", "lm_head", "scalars"), 0)
        for name, p in unwrap_model(model_or_config).named_parameters():
            if name.startswith("wte."):
                group = "embedding"
            elif name.startswith("lm_head."):
                group = "lm_head"
            elif ".attn." in name:
                group = "attention"
            elif ".mlp." in name:
                group = "mlp"
            else:
                group = "scalars"
            counts[group] += p.numel()
    counts["total"] = sum(counts.values())
    return counts


def scaling_params(model_or_config: nn.Module | GPTConfig, convention: str) -> int:
    """N, the parameter count a scaling law uses, under one of three conventions.

    - "all": every parameter: wte + attention + mlp + lm_head + scalars (Chinchilla).
    - "non_embedding": attention + mlp + scalars; excludes wte *and* lm_head (Kaplan et al. 2020,
      whose GPT-2-style models tie the head to the embedding, so "embedding" meant both).
    - "matmul": attention + mlp + lm_head, the matrices a token is multiplied by in the forward
      pass; this is the N of 6·N FLOPs and the "scaling params" nanochat's horizon uses.
    """
    counts = param_counts(model_or_config)
    if convention == "all":
        return counts["total"]
    if convention == "non_embedding":
        return counts["attention"] + counts["mlp"] + counts["scalars"]
    if convention == "matmul":
        return counts["attention"] + counts["mlp"] + counts["lm_head"]
    raise ValueError(f"unknown convention {convention!r}; choose one of {CONVENTIONS}")


def flops_per_token(model_or_config: nn.Module | GPTConfig, convention: str = "matmul") -> int:
    """Training FLOPs per token (forward + backward): 6·N(convention) + the attention term.

    The attention term, 12·n_layer·n_head·head_dim·seq_len, is the score (QKᵀ) and weighted-sum
    (AV) matmuls: 2 matmuls × 2 FLOPs per multiply-add × seq_len × n_head·head_dim per layer
    forward, ×3 for forward + backward. Like nanochat (PaLM) and Chinchilla it counts the full
    context, not the half a causal mask leaves. "matmul" is the honest FLOPs count (an embedding
    lookup is not a multiply); the other conventions are for comparing with papers that use them.
    """
    c = _config_of(model_or_config)
    attention = 12 * c.n_layer * c.n_head * c.head_dim * c.seq_len
    return 6 * scaling_params(c, convention) + attention


def estimate_memory(
    model_or_config: nn.Module | GPTConfig,
    device_batch_size: int,
    dtype: torch.dtype = torch.bfloat16,
) -> int:
    """Rough bytes one training rank needs in eager mode: weights, grads, optimizer, activations.

    Weights and grads are fp32 (autocast keeps fp32 masters); AdamW keeps two fp32 moments for
    wte and lm_head, Muon one momentum buffer per matrix. Activations are the tensors autograd
    saves for backward, per token, at `dtype` except the fp32 residual stream and logits;
    attention is assumed to use a fused kernel (no seq_len² score matrix). torch.compile fuses
    the elementwise ops and saves less, so this errs on the safe side.
    """
    c = _config_of(model_or_config)
    counts = param_counts(c)
    adam_params = counts["embedding"] + counts["lm_head"] + counts["scalars"]
    muon_params = counts["attention"] + counts["mlp"]
    state = 4 * counts["total"] * 2 + 4 * (2 * adam_params + muon_params)
    d, kv_dim, s = c.d_model, c.n_kv_head * c.head_dim, dtype.itemsize
    per_layer = 2 * 4 * d + s * (  # fp32 residual stream at both norms, then:
        2 * d  # normed inputs of attention and MLP
        + 2 * d  # q rotated, q normed
        + 3 * kv_dim  # k rotated, k normed, v
        + 2 * d  # attention output and its reshaped copy (c_proj's input)
        + 2 * 4 * d  # relu output, relu² output (c_proj's input)
    )
    # Per logit: lm_head output at dtype, fp32 tanh output, fp32 log-softmax, fp32 gradient.
    per_token = c.n_layer * per_layer + 4 * d + (s + 3 * 4) * c.vocab_size
    activations = device_batch_size * c.seq_len * per_token
    return state + activations
