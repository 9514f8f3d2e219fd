"""Decoding speed: the time of one new token with and without a KV cache, prefill against decode.

Each timing is the best of `repeats` runs (the one least disturbed by other work on the
machine), in inference mode, synchronised on CUDA, on random tokens (speed does not depend on
them). Both functions also say how far the two ways' results differ (next-token probabilities,
cached keys and values), so a caller can check that the cache changes the cost and nothing else:
in fp32 they agree to rounding; under bf16 autocast (a GPU) to bf16's ≈ 3 digits.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from functools import partial

import torch

from nanolib.device import autocast_context, sync
from nanolib.engine import KVCache
from nanolib.model import GPT


def best_seconds(fn: Callable[[], object], repeats: int, device: torch.device) -> float:
    """The shortest wall time of `repeats` calls of fn (after one untimed warm-up call)."""
    fn()
    best = float("inf")
    for _ in range(repeats):
        sync(device)
        t0 = time.perf_counter()
        fn()
        sync(device)
        best = min(best, time.perf_counter() - t0)
    return best


def _cache_for(model: GPT, max_len: int) -> KVCache:
    param = next(model.parameters())
    dtype = torch.bfloat16 if param.device.type == "cuda" else param.dtype
    return KVCache.for_model(model.config, 1, max_len, dtype, param.device)


@torch.inference_mode()
def per_token_seconds(
    model: GPT, context_lengths: Sequence[int], repeats: int = 5, seed: int = 0
) -> list[dict[str, float]]:
    """Seconds to get the next token's logits with L tokens of context, for each L: naively (one
    forward pass over all L tokens, as `GPT.generate` does every step) and with a cache holding
    the first L−1 (one token's forward pass); plus the largest difference of their next-token
    probabilities."""
    device = next(model.parameters()).device
    longest = max(context_lengths)
    if longest > model.config.seq_len:
        raise ValueError(
            f"context length {longest} exceeds the model's seq_len {model.config.seq_len}"
        )
    g = torch.Generator().manual_seed(seed)
    ids = torch.randint(0, model.config.vocab_size, (1, longest), generator=g).to(device)
    rows = []
    for length in context_lengths:
        context = ids[:, :length]
        cache = _cache_for(model, length)
        with autocast_context(device):
            model(context[:, :-1], kv_cache=cache)
            naive = partial(_naive_step, model, context)
            cached = partial(_cached_step, model, context, cache)
            rows.append(
                {
                    "context": length,
                    "naive_s": best_seconds(naive, repeats, device),
                    "cached_s": best_seconds(cached, repeats, device),
                    "max_prob_gap": _prob_gap(naive(), cached()),
                }
            )
    return rows


def _prob_gap(a: torch.Tensor, b: torch.Tensor) -> float:
    return (a.float().softmax(-1) - b.float().softmax(-1)).abs().max().item()


def _naive_step(model: GPT, context: torch.Tensor) -> torch.Tensor:
    return model(context)[:, -1]


def _cached_step(model: GPT, context: torch.Tensor, cache: KVCache) -> torch.Tensor:
    cache.pos = context.size(1) - 1  # forget the step before: time the same step again
    return model(context[:, -1:], kv_cache=cache)[:, -1]


@torch.inference_mode()
def prefill_vs_decode(
    model: GPT, n_tokens: int, repeats: int = 3, seed: int = 0
) -> dict[str, float]:
    """Seconds to put n_tokens into an empty cache in one forward pass (prefill) and one token per
    pass (decode), and the largest difference between the two caches' keys and values relative
    to the largest of them."""
    device = next(model.parameters()).device
    g = torch.Generator().manual_seed(seed)
    ids = torch.randint(0, model.config.vocab_size, (1, n_tokens), generator=g).to(device)
    caches = {"prefill": _cache_for(model, n_tokens), "decode": _cache_for(model, n_tokens)}

    def prefill() -> None:
        caches["prefill"].pos = 0
        with autocast_context(device):
            model(ids, kv_cache=caches["prefill"])

    def decode() -> None:
        caches["decode"].pos = 0
        with autocast_context(device):
            for t in range(n_tokens):
                model(ids[:, t : t + 1], kv_cache=caches["decode"])

    out = {"tokens": n_tokens}
    out["prefill_s"] = best_seconds(prefill, repeats, device)
    out["decode_s"] = best_seconds(decode, repeats, device)
    a, b = caches["prefill"], caches["decode"]
    gap = max((a.k - b.k).abs().max().item(), (a.v - b.v).abs().max().item())
    out["max_cache_gap"] = gap / max(a.k.abs().max().item(), a.v.abs().max().item())
    return out
