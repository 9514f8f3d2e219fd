"""Generation with a KV cache: prefill once, decode one token per step, tools called mid-answer.

`GPT.generate` re-reads the whole context for every new token; the engine keeps every layer's
keys and values in a preallocated `KVCache` instead, so a decode step costs one token's forward
pass plus attention over what is cached. A call runs:

1. **prefill** the prompt once at batch 1 (positions 0 … P−1), then **replicate** that cache to
   ``num_samples`` rows: the samples of one prompt share their prefix;
2. **decode**: each step every live row gets one token (sampled, or forced by a tool) and the
   column of tokens goes through the model at once.

Rules a caller can rely on:

- ``len(prompt) + max_tokens`` must fit in the model's ``seq_len``; otherwise `ValueError`
  (there is no sliding window: a cached key's context cannot be cut afterwards).
- Sampling: temperature 0 is greedy (argmax); otherwise top-k, then top-p (nucleus) on the
  temperature-scaled distribution, drawn by inverse CDF from one uniform of the row's own
  `torch.Generator`. Row i is seeded with ``seeds[i]``, or ``row_seed(seed, i)`` for an int
  seed, and draws only when it samples, so a batch of N rows reproduces N single-row runs with
  those seeds (bit-for-bit as long as the logits are; batched matmuls may round differently).
- Several prompts at once (`generate_many`, `stream_many`): they are left-padded to the longest
  and prefilled in one pass, the padding masked out of attention (`KVCache.key_mask`); rotary
  positions are relative, so each row decodes as it would alone (up to rounding). RL and the
  evals sample many problems this way, one batch of rows for all of them.
- A row stops after it samples a stop token (``<|assistant_end|>`` or ``<|bos|>`` by default);
  the stop token is the last token of its output. Finished rows emit nothing more.
- Tool use, per row: the text the model writes between ``<|python_start|>`` and
  ``<|python_end|>`` is run by `nanolib.tools.run_tool`; its output is then forced into the row,
  one token per step, as ``<|output_start|> … <|output_end|>`` with mask 0 (the model did not
  choose those tokens). Sampled tokens have mask 1.
"""

from __future__ import annotations

import hashlib
from collections import deque
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from typing import NamedTuple

import torch
import torch.nn as nn

from nanolib.device import autocast_context
from nanolib.model import GPTConfig, unwrap_model
from nanolib.tokenizer import Tokenizer
from nanolib.tools import DEFAULT_TOOLS, Tool, run_tool


class _LayerView:
    """One layer's keys and values inside a KVCache (the model's LayerKV protocol)."""

    def __init__(self, cache: KVCache, k: torch.Tensor, v: torch.Tensor) -> None:
        self.cache, self.k, self.v = cache, k, v

    @property
    def pos(self) -> int:
        """Tokens cached before this step."""
        return self.cache.pos

    @property
    def key_mask(self) -> torch.Tensor | None:
        """(B, max_len) bool, False on left padding; None when no row is padded."""
        return self.cache.key_mask

    def update(self, k: torch.Tensor, v: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Write k, v (B, kv_heads, T, head_dim) in place at pos; return positions 0 … pos+T−1."""
        pos, end = self.cache.pos, self.cache.pos + k.size(2)
        if end > self.cache.max_len:
            raise ValueError(f"KV cache full: {end} tokens do not fit in {self.cache.max_len}")
        self.k[:, :, pos:end] = k
        self.v[:, :, pos:end] = v
        return self.k[:, :, :end], self.v[:, :, :end]


class KVCache:
    """Preallocated keys and values of every layer, (n_layer, batch, kv_heads, max_len, head_dim).

    ``pos`` counts the tokens written so far; attention only ever reads positions below it.
    """

    def __init__(
        self,
        n_layer: int,
        batch: int,
        n_kv_head: int,
        max_len: int,
        head_dim: int,
        dtype: torch.dtype = torch.float32,
        device: str | torch.device = "cpu",
    ) -> None:
        shape = (n_layer, batch, n_kv_head, max_len, head_dim)
        self.k = torch.zeros(shape, dtype=dtype, device=device)
        self.v = torch.zeros(shape, dtype=dtype, device=device)
        self.pos = 0
        self.key_mask: torch.Tensor | None = None  # set for left-padded prompts (prefill_many)
        self.layers = [_LayerView(self, self.k[i], self.v[i]) for i in range(n_layer)]

    @classmethod
    def for_model(
        cls,
        config: GPTConfig,
        batch: int,
        max_len: int,
        dtype: torch.dtype = torch.float32,
        device: str | torch.device = "cpu",
    ) -> KVCache:
        """An empty cache shaped for a model config."""
        return cls(config.n_layer, batch, config.n_kv_head, max_len, config.head_dim, dtype, device)

    @property
    def batch(self) -> int:
        """Rows."""
        return self.k.size(1)

    @property
    def max_len(self) -> int:
        """Positions each row can hold."""
        return self.k.size(3)

    @property
    def nbytes(self) -> int:
        """Bytes allocated: 2 · layers · batch · kv_heads · max_len · head_dim · dtype size."""
        return self.k.nbytes + self.v.nbytes

    def advance(self, n: int) -> None:
        """Record that n more tokens are cached (the model calls this after each forward)."""
        self.pos += n

    def replicate(self, n: int) -> KVCache:
        """A new n-row cache whose rows all start from this 1-row cache's contents."""
        if self.batch != 1:
            raise ValueError(f"replicate needs a 1-row cache, this one has {self.batch} rows")
        n_layer, _, heads, max_len, head_dim = self.k.shape
        out = KVCache(n_layer, n, heads, max_len, head_dim, self.k.dtype, self.k.device)
        out.k[:, :, :, : self.pos] = self.k[:, :, :, : self.pos]
        out.v[:, :, :, : self.pos] = self.v[:, :, :, : self.pos]
        out.pos = self.pos
        return out

    def repeat_rows(self, n: int) -> KVCache:
        """A new cache with each row repeated n times in place (row r → rows r·n … r·n + n − 1)."""
        n_layer, batch, heads, max_len, head_dim = self.k.shape
        out = KVCache(n_layer, batch * n, heads, max_len, head_dim, self.k.dtype, self.k.device)
        out.k[:, :, :, : self.pos] = self.k[:, :, :, : self.pos].repeat_interleave(n, dim=1)
        out.v[:, :, :, : self.pos] = self.v[:, :, :, : self.pos].repeat_interleave(n, dim=1)
        out.pos = self.pos
        if self.key_mask is not None:
            out.key_mask = self.key_mask.repeat_interleave(n, dim=0)
        return out


def row_seed(*parts: int) -> int:
    """A 63-bit seed derived from integers, e.g. ``row_seed(step, problem, sample)``."""
    digest = hashlib.blake2b(repr(tuple(parts)).encode(), digest_size=8).digest()
    return int.from_bytes(digest, "little") >> 1


@torch.inference_mode()
def sample_tokens(
    logits: torch.Tensor,
    temperature: float,
    top_k: int | None = None,
    top_p: float | None = None,
    uniforms: torch.Tensor | None = None,
) -> torch.Tensor:
    """One token id per row of logits (B, V): argmax at temperature 0, else inverse-CDF sampling.

    ``uniforms`` (B,) in [0, 1) pick each row's token from its top-k / top-p distribution, so the
    draw of a row depends only on its logits and its uniform.
    """
    if temperature == 0:
        return logits.argmax(dim=-1)
    if uniforms is None:
        raise ValueError("sampling at temperature > 0 needs one uniform per row")
    logits = logits.float() / temperature
    k = logits.size(-1) if top_k is None else min(top_k, logits.size(-1))
    values, ids = torch.topk(logits, k, dim=-1)  # sorted, most likely first
    probs = torch.softmax(values, dim=-1)
    if top_p is not None and top_p < 1.0:
        before = probs.cumsum(dim=-1) - probs  # mass of the more likely tokens
        probs = probs.masked_fill(before >= top_p, 0.0)  # the first token always stays
    cdf = probs.cumsum(dim=-1)
    target = uniforms.to(cdf.device, cdf.dtype)[:, None] * cdf[:, -1:]
    j = torch.searchsorted(cdf, target, right=True)
    # u·total can round up to total itself: fall back to the last token with mass.
    j = torch.minimum(j, (probs > 0).sum(dim=-1, keepdim=True) - 1)
    return ids.gather(1, j).squeeze(1)


class Column(NamedTuple):
    """One decode step: a token per row, its mask (1 sampled, 0 forced) and who emitted one.

    Rows that finished earlier have ``live`` False, token -1 and mask 0. ``entropy`` is the
    entropy (nats) of the model's next-token distribution (temperature 1, before top-k / top-p)
    where the row sampled, else 0: how undecided the model was (RL logs its mean).
    """

    tokens: list[int]
    masks: list[int]
    live: list[bool]
    entropy: list[float] | None = None


@dataclass
class Generation:
    """What `Engine.generate` returns: per row, its tokens, their masks, and how it ended."""

    tokens: list[list[int]]
    masks: list[list[int]]  # 1: sampled by the model; 0: forced by a tool
    stopped: list[bool]  # True: ended on a stop token (its last token); False: hit max_tokens
    entropies: list[list[float]] = field(default_factory=list)  # per token, as in Column


@dataclass
class _Row:
    """A row's tool state machine: outside code, inside a python block, or forcing output."""

    forced: deque[int] = field(default_factory=deque)
    code: list[int] | None = None  # tokens since <|python_start|>, None outside a block
    done: bool = False


class Engine:
    """Batched generation with a KV cache, sampling and tool use (module docstring)."""

    def __init__(
        self,
        model: nn.Module,
        tokenizer: Tokenizer | None = None,
        tools: Mapping[str, Tool] | None = None,
    ) -> None:
        self.model = model
        self.config: GPTConfig = unwrap_model(model).config
        param = next(model.parameters())
        self.device = param.device
        # Under CUDA autocast k and v come out in bf16; elsewhere in the weights' dtype.
        self.dtype = torch.bfloat16 if self.device.type == "cuda" else param.dtype
        self.tokenizer = tokenizer
        self.tools = dict(DEFAULT_TOOLS if tools is None else tools)
        self.special: dict[str, int] = {}
        if tokenizer is not None:
            names = ("bos", "assistant_end", "python_start", "python_end")
            names += ("output_start", "output_end")
            self.special = {n: tokenizer.special_id(f"<|{n}|>") for n in names}

    @property
    def default_stop_tokens(self) -> tuple[int, ...]:
        """``<|assistant_end|>`` and ``<|bos|>``, when the engine has a tokenizer."""
        if not self.special:
            return ()
        return (self.special["assistant_end"], self.special["bos"])

    @torch.inference_mode()
    def _forward(self, ids: torch.Tensor, cache: KVCache) -> torch.Tensor:
        """Logits (B, V) of the last position after appending ids (B, T) to the cache."""
        with autocast_context(self.device):
            return self.model(ids, kv_cache=cache)[:, -1]

    def prefill(self, prompt: Sequence[int], max_len: int) -> tuple[KVCache, torch.Tensor]:
        """Run the prompt once at batch 1 into a cache of max_len positions; last logits (1, V)."""
        cache = KVCache.for_model(self.config, 1, max_len, self.dtype, self.device)
        ids = torch.tensor([list(prompt)], dtype=torch.long, device=self.device)
        return cache, self._forward(ids, cache)

    def prefill_many(
        self, prompts: Sequence[Sequence[int]], max_len: int
    ) -> tuple[KVCache, torch.Tensor]:
        """Prompts of any lengths, left-padded to the longest, in one pass; last logits (P, V).

        Padding keys are masked out (`KVCache.key_mask`) and rotary positions are relative, so
        each row's logits are those of its prompt alone (up to rounding).
        """
        width = max(len(p) for p in prompts)
        cache = KVCache.for_model(self.config, len(prompts), max_len, self.dtype, self.device)
        # True everywhere but the padding: positions past the cache's pos are never read anyway
        cache.key_mask = torch.ones(len(prompts), max_len, dtype=torch.bool, device=self.device)
        ids = torch.zeros(len(prompts), width, dtype=torch.long)
        for r, prompt in enumerate(prompts):
            ids[r, width - len(prompt) :] = torch.tensor(list(prompt))
            cache.key_mask[r, : width - len(prompt)] = False
        return cache, self._forward(ids.to(self.device), cache)

    def _check(
        self,
        prompt: Sequence[int],
        num_samples: int,
        max_tokens: int,
        temperature: float,
        top_k: int | None,
        top_p: float | None,
    ) -> None:
        seq_len, vocab = self.config.seq_len, self.config.vocab_size
        if not prompt:
            raise ValueError("the prompt is empty; start it with <|bos|> at least")
        if any(not 0 <= t < vocab for t in prompt):
            raise ValueError(f"the prompt holds token ids outside 0 … {vocab - 1}")
        if num_samples < 1 or max_tokens < 1:
            raise ValueError(
                f"need num_samples ≥ 1 and max_tokens ≥ 1, got {num_samples}, {max_tokens}"
            )
        if len(prompt) + max_tokens > seq_len:
            raise ValueError(
                f"prompt ({len(prompt)} tokens) + max_tokens ({max_tokens}) = "
                f"{len(prompt) + max_tokens} exceeds the model's seq_len={seq_len}; "
                f"shorten the prompt or ask for at most {seq_len - len(prompt)} tokens"
            )
        if temperature < 0:
            raise ValueError(f"temperature must be ≥ 0, got {temperature}")
        if top_k is not None and top_k < 1:
            raise ValueError(f"top_k must be ≥ 1 (or None), got {top_k}")
        if top_p is not None and not 0 < top_p <= 1:
            raise ValueError(f"top_p must be in (0, 1] (or None), got {top_p}")

    def stream(
        self,
        prompt: Sequence[int],
        num_samples: int = 1,
        max_tokens: int = 256,
        temperature: float = 1.0,
        top_k: int | None = None,
        top_p: float | None = None,
        seed: int | Sequence[int] = 0,
        stop_tokens: Sequence[int] | None = None,
    ) -> Iterator[Column]:
        """Yield one `Column` per decode step until every row stopped or max_tokens were emitted.

        Arguments are checked here, before the first step (a bad one raises at the call).
        """
        prompt = list(prompt)
        self._check(prompt, num_samples, max_tokens, temperature, top_k, top_p)
        seeds = [row_seed(seed, i) for i in range(num_samples)] if isinstance(seed, int) else seed
        if len(seeds) != num_samples:
            raise ValueError(f"{len(seeds)} seeds for {num_samples} samples")
        stops = set(self.default_stop_tokens if stop_tokens is None else stop_tokens)
        return self._decode(
            [prompt], num_samples, max_tokens, temperature, top_k, top_p, seeds, stops
        )

    def stream_many(
        self,
        prompts: Sequence[Sequence[int]],
        num_samples: int = 1,
        max_tokens: int = 256,
        temperature: float = 1.0,
        top_k: int | None = None,
        top_p: float | None = None,
        seed: int | Sequence[int] = 0,
        stop_tokens: Sequence[int] | None = None,
    ) -> Iterator[Column]:
        """`stream` for several prompts at once: num_samples rows per prompt, prompt-major.

        Row p·num_samples + i is sample i of prompt p; `seed` gives one seed per row (or an
        int, expanded as in `stream`). The longest prompt + max_tokens must fit in seq_len.
        """
        prompts = [list(p) for p in prompts]
        if not prompts:
            raise ValueError("no prompts")
        longest = max(prompts, key=len)
        for p in prompts:  # every row gets max_tokens after the longest prompt
            room = max_tokens + len(longest) - len(p)
            self._check(p, num_samples, room, temperature, top_k, top_p)
        rows = len(prompts) * num_samples
        seeds = [row_seed(seed, i) for i in range(rows)] if isinstance(seed, int) else seed
        if len(seeds) != rows:
            raise ValueError(f"{len(seeds)} seeds for {rows} rows")
        stops = set(self.default_stop_tokens if stop_tokens is None else stop_tokens)
        return self._decode(
            prompts, num_samples, max_tokens, temperature, top_k, top_p, seeds, stops
        )

    def _decode(
        self,
        prompts: list[list[int]],
        n: int,
        max_tokens: int,
        temperature: float,
        top_k: int | None,
        top_p: float | None,
        seeds: Sequence[int],
        stops: set[int],
    ) -> Iterator[Column]:
        generators = []
        if temperature > 0:
            generators = [torch.Generator().manual_seed(int(s)) for s in seeds]
        if len(prompts) == 1:
            cache, logits = self.prefill(prompts[0], len(prompts[0]) + max_tokens)
            if n > 1:
                cache, logits = cache.replicate(n), logits.expand(n, -1)
        else:
            width = max(len(p) for p in prompts)
            cache, logits = self.prefill_many(prompts, width + max_tokens)
            if n > 1:
                cache, logits = cache.repeat_rows(n), logits.repeat_interleave(n, dim=0)
        n *= len(prompts)
        rows = [_Row() for _ in range(n)]
        feed = [p[-1] for p in prompts for _ in range(n // len(prompts))]  # each row's next input
        for step in range(max_tokens):
            uniforms = None
            if temperature > 0:  # one draw per row that samples now, from its own generator
                uniforms = torch.tensor(
                    [
                        torch.rand((), generator=g).item() if not (r.done or r.forced) else 0.0
                        for r, g in zip(rows, generators, strict=True)
                    ]
                )
            sampled = sample_tokens(logits, temperature, top_k, top_p, uniforms).tolist()
            logp = torch.log_softmax(logits.float(), dim=-1)
            entropy = (-(logp.exp() * logp).sum(dim=-1)).tolist()
            tokens, masks, live = [-1] * n, [0] * n, [False] * n
            for i, row in enumerate(rows):
                if row.done:
                    continue
                live[i] = True
                if row.forced:
                    tokens[i] = row.forced.popleft()
                else:
                    tokens[i], masks[i] = sampled[i], 1
                    self._advance_row(row, sampled[i], stops)
                feed[i] = tokens[i]
            yield Column(tokens, masks, live, [e * m for e, m in zip(entropy, masks)])
            if step == max_tokens - 1 or all(r.done for r in rows):
                return
            ids = torch.tensor(feed, dtype=torch.long, device=self.device)[:, None]
            logits = self._forward(ids, cache)

    def _advance_row(self, row: _Row, token: int, stops: set[int]) -> None:
        """Move a row's state machine on after it sampled a token."""
        if token in stops:
            row.done = True
        elif not self.special:
            return
        elif token == self.special["python_start"]:
            row.code = []
        elif token == self.special["python_end"] and row.code is not None:
            assert self.tokenizer is not None
            output = run_tool(self.tokenizer.decode(row.code), self.tools)
            row.forced.extend(
                [
                    self.special["output_start"],
                    *self.tokenizer.encode(output),
                    self.special["output_end"],
                ]
            )
            row.code = None
        elif row.code is not None:
            row.code.append(token)

    def generate(
        self,
        prompt: Sequence[int],
        num_samples: int = 1,
        max_tokens: int = 256,
        temperature: float = 1.0,
        top_k: int | None = None,
        top_p: float | None = None,
        seed: int | Sequence[int] = 0,
        stop_tokens: Sequence[int] | None = None,
    ) -> Generation:
        """Run `stream` to the end; every row's tokens and masks (prompt not included)."""
        columns = self.stream(
            prompt, num_samples, max_tokens, temperature, top_k, top_p, seed, stop_tokens
        )
        return self._collect(columns, num_samples, stop_tokens)

    def generate_many(
        self,
        prompts: Sequence[Sequence[int]],
        num_samples: int = 1,
        max_tokens: int = 256,
        temperature: float = 1.0,
        top_k: int | None = None,
        top_p: float | None = None,
        seed: int | Sequence[int] = 0,
        stop_tokens: Sequence[int] | None = None,
    ) -> Generation:
        """Run `stream_many` to the end: num_samples rows per prompt, prompt-major."""
        columns = self.stream_many(
            prompts, num_samples, max_tokens, temperature, top_k, top_p, seed, stop_tokens
        )
        return self._collect(columns, len(prompts) * num_samples, stop_tokens)

    def _collect(
        self, columns: Iterator[Column], n: int, stop_tokens: Sequence[int] | None
    ) -> Generation:
        tokens: list[list[int]] = [[] for _ in range(n)]
        masks: list[list[int]] = [[] for _ in range(n)]
        entropies: list[list[float]] = [[] for _ in range(n)]
        stops = set(self.default_stop_tokens if stop_tokens is None else stop_tokens)
        stopped = [False] * n
        for column in columns:
            for i, alive in enumerate(column.live):
                if alive:
                    tokens[i].append(column.tokens[i])
                    masks[i].append(column.masks[i])
                    entropies[i].append(column.entropy[i])
                    stopped[i] = column.masks[i] == 1 and column.tokens[i] in stops
        return Generation(tokens, masks, stopped, entropies)
