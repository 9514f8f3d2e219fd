"""The KV-cache engine: equal to naive decoding, reads only what it wrote, seeded, tools forced."""

import math

import pytest
import torch
import torch.nn as nn

from nanolib import engine as engine_module
from nanolib.engine import Engine, KVCache, row_seed, sample_tokens
from nanolib.model import GPT, GPTConfig
from nanolib.tokenizer import Tokenizer
from nanolib.tools import calculator

pytestmark = pytest.mark.usefixtures("one_thread")


def randomized(config: GPTConfig, seed: int = 0) -> GPT:
    """A model whose every weight is random (c_proj starts at zero, which would hide mixing)."""
    torch.manual_seed(seed)
    model = GPT(config)
    with torch.no_grad():
        for p in model.parameters():
            p.normal_(0.0, 0.3)
    return model.eval()


def small(n_layer: int = 2, n_head: int = 4, n_kv_head: int = 4, seq_len: int = 24) -> GPTConfig:
    return GPTConfig(
        vocab_size=97, seq_len=seq_len, n_layer=n_layer, d_model=32, n_head=n_head,
        n_kv_head=n_kv_head,
    )  # fmt: skip


@pytest.fixture(scope="module")
def byte_tok() -> Tokenizer:
    """A tokenizer with no merges: one token per byte, plus the chat specials."""
    return Tokenizer.train(["0123456789+-*/() print"], 256 + 9)


class ScriptedModel(nn.Module):
    """A stand-in GPT whose next token depends only on the current one (a Markov chain).

    ``table`` maps a token to the token it predicts, or to a list of equally likely ones (so
    sampled rows diverge); tokens not in it predict ``default``.
    """

    def __init__(self, vocab: int, table: dict, default: int) -> None:
        super().__init__()
        self.config = GPTConfig(vocab_size=vocab, seq_len=128, n_layer=1, d_model=8, n_head=1)
        self.anchor = nn.Parameter(torch.zeros(()))  # gives the engine a device and dtype
        scores = torch.full((vocab, vocab), -30.0)
        scores[:, default] = 10.0  # an int or a list of ints
        for a, b in table.items():
            scores[a] = -30.0
            scores[a, b if isinstance(b, list) else [b]] = 10.0
        self.register_buffer("scores", scores)

    def forward(self, idx: torch.Tensor, kv_cache=None) -> torch.Tensor:
        if kv_cache is not None:
            kv_cache.advance(idx.size(1))
        return self.scores[idx]


# ------------------------------------------------------------------------------------------------
# the cache


@pytest.mark.parametrize("n_layer, n_head, n_kv_head", [(1, 4, 4), (2, 4, 2), (3, 4, 1), (4, 2, 2)])
def test_greedy_equals_generate_at_every_prompt_length(n_layer, n_head, n_kv_head):
    config = small(n_layer, n_head, n_kv_head)
    model = randomized(config, seed=n_layer)
    eng = Engine(model)
    gen = torch.Generator().manual_seed(n_layer)
    for P in range(1, config.seq_len):
        prompt = torch.randint(0, config.vocab_size, (P,), generator=gen).tolist()
        n = config.seq_len - P
        expected = model.generate(torch.tensor([prompt]), n, temperature=0)[0, P:].tolist()
        out = eng.generate(prompt, max_tokens=n, temperature=0)
        assert out.tokens[0] == expected, f"prompt length {P}"
        assert out.masks[0] == [1] * n and out.stopped == [False]


@pytest.fixture
def nan_caches(monkeypatch):
    """Every KVCache starts full of NaN: a read of an unwritten position poisons the logits."""
    init = KVCache.__init__

    def poisoned(self, *args, **kwargs):
        init(self, *args, **kwargs)
        self.k.fill_(math.nan)
        self.v.fill_(math.nan)

    monkeypatch.setattr(KVCache, "__init__", poisoned)


def test_cache_never_reads_past_what_was_written(nan_caches):
    config = small(2, 4, 2, seq_len=32)
    model = randomized(config)
    idx = torch.randint(0, config.vocab_size, (3, 32), generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        full = model(idx)
        cache = KVCache.for_model(config, batch=3, max_len=32)
        assert cache.k.isnan().all()
        chunks, pos = [], 0
        for T in (5, 1, 1, 7, 3, 1, 14):  # T > 1 at pos > 0 takes the explicit-mask path
            chunks.append(model(idx[:, pos : pos + T], kv_cache=cache))
            pos += T
            assert cache.pos == pos
    assert torch.allclose(torch.cat(chunks, dim=1), full, atol=1e-5)
    # and through the engine, whose batch-N cache is a fresh (NaN) one filled by replicate()
    prompt = idx[0, :9].tolist()
    expected = model.generate(torch.tensor([prompt]), 20, temperature=0)[0, 9:].tolist()
    out = Engine(model).generate(prompt, num_samples=3, max_tokens=20, temperature=0)
    assert out.tokens == [expected] * 3


def test_prompts_of_different_lengths_batched_equal_their_own_runs(nan_caches):
    model = randomized(small(2, 4, 2, seq_len=40))
    eng = Engine(model)
    prompts = [[1, 2, 3], [4, 5, 6, 7, 8, 9, 10], [11], [12, 13, 14]]
    greedy = eng.generate_many(prompts, num_samples=2, max_tokens=12, temperature=0)
    seeds = list(range(100, 108))
    sampled = eng.generate_many(prompts, 2, 12, temperature=1.0, top_k=20, seed=seeds)
    for p, prompt in enumerate(prompts):
        rows = slice(2 * p, 2 * p + 2)
        assert greedy.tokens[rows] == eng.generate(prompt, 2, 12, temperature=0).tokens
        alone = eng.generate(prompt, 2, 12, temperature=1.0, top_k=20, seed=seeds[rows])
        assert sampled.tokens[rows] == alone.tokens
    assert sampled.tokens[0] != sampled.tokens[1]  # the rows of one prompt differ
    with pytest.raises(ValueError, match="exceeds the model's seq_len=40"):
        eng.generate_many([[1] * 30, [2]], max_tokens=11, temperature=0)
    with pytest.raises(ValueError, match="3 seeds for 4 rows"):
        eng.generate_many([[1], [2]], 2, 4, seed=[1, 2, 3])


def test_cache_shape_dtype_bytes_and_overflow():
    config = small(3, 4, 2)
    cache = KVCache.for_model(config, batch=2, max_len=10, dtype=torch.bfloat16)
    assert cache.k.shape == (3, 2, 2, 10, 8) and cache.k.dtype == torch.bfloat16
    # 2 (k and v) · layers · rows · kv heads · positions · head_dim · 2 bytes
    assert cache.nbytes == 2 * 3 * 2 * 2 * 10 * 8 * 2
    model = randomized(config)
    with torch.no_grad():
        model(torch.zeros(2, 8, dtype=torch.long), kv_cache=cache)
        with pytest.raises(ValueError, match="KV cache full"):
            model(torch.zeros(2, 3, dtype=torch.long), kv_cache=cache)
    with pytest.raises(ValueError, match="1-row cache"):
        cache.replicate(4)


def test_too_long_and_bad_arguments_are_clear_errors():
    eng = Engine(randomized(small(seq_len=24)))
    with pytest.raises(ValueError, match=r"= 25 exceeds the model's seq_len=24.*at most 4 tokens"):
        eng.generate([1] * 20, max_tokens=5, temperature=0)
    assert len(eng.generate([1] * 20, max_tokens=4, temperature=0).tokens[0]) == 4
    bad = [
        ({"prompt": []}, "empty"),
        ({"prompt": [97]}, "outside 0"),
        ({"num_samples": 0}, "num_samples"),
        ({"max_tokens": 0}, "max_tokens"),
        ({"temperature": -1.0}, "temperature"),
        ({"top_k": 0}, "top_k"),
        ({"top_p": 0.0}, "top_p"),
        ({"num_samples": 2, "seed": [1, 2, 3]}, "3 seeds for 2 samples"),
    ]
    for kwargs, match in bad:
        args = {"prompt": [1, 2], "max_tokens": 3, **kwargs}
        with pytest.raises(ValueError, match=match):
            eng.stream(**args)  # raised at the call, not at the first step


# ------------------------------------------------------------------------------------------------
# sampling


def test_sample_tokens_greedy_topk_topp_and_inverse_cdf():
    torch.manual_seed(0)
    logits = torch.randn(3, 50)
    best = logits.argmax(-1)
    u = torch.rand(3)
    assert torch.equal(sample_tokens(logits, 0.0), best)
    assert torch.equal(sample_tokens(logits, 1.0, top_k=1, uniforms=u), best)
    assert torch.equal(sample_tokens(logits, 1.0, top_p=1e-6, uniforms=u), best)
    # A grid of uniforms draws each token in proportion to its probability (inverse CDF).
    row = logits[:1].expand(20_000, -1)
    grid = (torch.arange(20_000) + 0.5) / 20_000
    for top_k, top_p in ((None, None), (5, None), (None, 0.5), (10, 0.8)):
        draws = sample_tokens(row, 0.7, top_k, top_p, grid)
        probs = torch.softmax(logits[0] / 0.7, -1)
        order = probs.argsort(descending=True)
        keep = order[: top_k or 50]
        if top_p is not None:  # on the distribution top-k left, renormalised
            kept = probs[keep] / probs[keep].sum()
            mass_before = kept.cumsum(0) - kept
            keep = keep[mass_before < top_p]
        expected = torch.zeros(50)
        expected[keep] = probs[keep] / probs[keep].sum()
        counts = torch.bincount(draws, minlength=50) / 20_000
        assert set(draws.unique().tolist()) <= set(keep.tolist())
        assert (counts[keep] > 0).sum() >= (expected[keep] > 2 / 20_000).sum()
        assert torch.allclose(counts, expected, atol=2e-4)
    # u·total rounding up to the total still lands on a token with mass
    assert sample_tokens(logits[:1], 1.0, top_k=3, uniforms=torch.tensor([1 - 2**-24])).item() in (
        logits[0].topk(3).indices.tolist()
    )


def test_seeded_sampling_is_reproducible():
    eng = Engine(randomized(small(seq_len=48)))
    kw = {"num_samples": 3, "max_tokens": 40, "temperature": 1.0, "top_k": 30, "top_p": 0.95}
    a = eng.generate([5, 6, 7], seed=11, **kw)
    b = eng.generate([5, 6, 7], seed=11, **kw)
    c = eng.generate([5, 6, 7], seed=12, **kw)
    assert a == b
    assert a.tokens != c.tokens
    assert len({tuple(t) for t in a.tokens}) == 3  # rows have seeds of their own


def test_a_batch_of_n_equals_n_single_runs():
    eng = Engine(randomized(small(2, 4, 2, seq_len=48)))
    kw = {"max_tokens": 40, "temperature": 0.9, "top_k": 40, "top_p": 0.9}
    batch = eng.generate([3, 1, 4, 1, 5], num_samples=5, seed=2024, **kw)
    for i in range(5):
        single = eng.generate([3, 1, 4, 1, 5], num_samples=1, seed=[row_seed(2024, i)], **kw)
        assert single.tokens[0] == batch.tokens[i]
    # explicit per-row seeds, as RL derives them from (step, problem, sample)
    seeds = [row_seed(7, 3, s) for s in range(3)]
    rows = eng.generate([9], num_samples=3, seed=seeds, **kw)
    assert rows.tokens[2] == eng.generate([9], seed=[seeds[2]], **kw).tokens[0]


# ------------------------------------------------------------------------------------------------
# stopping and streaming


def test_rows_stop_on_their_own_and_stream_marks_live_rows(byte_tok):
    a = byte_tok.encode("a")[0]
    end = byte_tok.special_id("<|assistant_end|>")
    # every step: "a" or <|assistant_end|>, equally likely; rows end at different steps
    model = ScriptedModel(byte_tok.vocab_size, {}, default=[a, end])
    eng = Engine(model, byte_tok)
    columns = list(eng.stream([byte_tok.bos_id], num_samples=6, max_tokens=30, seed=3))
    ended_at = {}
    for step, col in enumerate(columns):
        for i in range(6):
            if i in ended_at:
                assert (col.tokens[i], col.masks[i], col.live[i]) == (-1, 0, False)
            else:
                assert col.live[i] and col.masks[i] == 1 and col.tokens[i] in (a, end)
                if col.tokens[i] == end:
                    ended_at[i] = step
    assert len(set(ended_at.values())) > 1  # rows really finished at different times
    out = eng.generate([byte_tok.bos_id], num_samples=6, max_tokens=30, seed=3)
    for i in range(6):
        tokens = [c.tokens[i] for c in columns if c.live[i]]
        assert out.tokens[i] == tokens
        assert out.stopped[i] == (i in ended_at) == (tokens[-1] == end)
    # stop tokens are configurable; <|bos|> stops by default too
    never = eng.generate([byte_tok.bos_id], max_tokens=12, seed=3, stop_tokens=[])
    assert len(never.tokens[0]) == 12 and never.stopped == [False]
    bos_model = ScriptedModel(byte_tok.vocab_size, {}, default=byte_tok.bos_id)
    assert Engine(bos_model, byte_tok).generate([a], max_tokens=5).tokens == [[byte_tok.bos_id]]


# ------------------------------------------------------------------------------------------------
# tools


def script(tok: Tokenizer, text_before_end: list[int]) -> dict[int, int]:
    """A Markov table that walks through the given tokens, then says <|assistant_end|>."""
    end = tok.special_id("<|assistant_end|>")
    chain = [*text_before_end, end]
    return {a: b for a, b in zip(chain, chain[1:], strict=False)}


def tool_call(tok: Tokenizer, code: str) -> list[int]:
    """<|python_start|> code <|python_end|> as ids (code's tokens must all differ)."""
    ids = [tok.special_id("<|python_start|>"), *tok.encode(code), tok.special_id("<|python_end|>")]
    assert len(set(ids)) == len(ids)
    return ids


def test_a_calculator_call_is_forced_into_the_stream_with_mask_zero(byte_tok):
    tok = byte_tok
    bos, start = tok.bos_id, tok.special_id("<|assistant_start|>")
    call = tool_call(tok, "6*7")
    table = script(tok, [start, *call])
    table[tok.special_id("<|output_end|>")] = tok.special_id("<|assistant_end|>")
    eng = Engine(ScriptedModel(tok.vocab_size, table, default=bos), tok)
    out = eng.generate([bos, start], max_tokens=40, temperature=0)
    forced = [
        tok.special_id("<|output_start|>"),
        *tok.encode("42"),
        tok.special_id("<|output_end|>"),
    ]
    assert out.tokens[0] == [*call, *forced, tok.special_id("<|assistant_end|>")]
    assert out.masks[0] == [1] * len(call) + [0] * len(forced) + [1]
    assert out.stopped == [True]
    text = "<|python_start|>6*7<|python_end|><|output_start|>42<|output_end|><|assistant_end|>"
    assert tok.decode(out.tokens[0]) == text
    # every row of a batch makes its own call
    batch = eng.generate([bos, start], num_samples=3, max_tokens=40, temperature=0)
    assert batch.tokens == out.tokens * 3 and batch.masks == out.masks * 3


def test_tools_are_pluggable_routed_and_their_errors_are_text(byte_tok):
    tok = byte_tok
    bos = tok.bos_id
    calls = []

    def fake_python(code: str) -> str:
        calls.append(code)
        return "ran"

    def broken(code: str) -> str:
        raise RuntimeError("boom")

    def run(code: str, tools) -> tuple[str, list[int]]:
        table = script(tok, tool_call(tok, code))
        table[bos] = tok.special_id("<|python_start|>")
        table[tok.special_id("<|output_end|>")] = tok.special_id("<|assistant_end|>")
        eng = Engine(ScriptedModel(tok.vocab_size, table, default=bos), tok, tools=tools)
        out = eng.generate([bos], max_tokens=80, temperature=0)
        text = tok.decode(out.tokens[0])
        inside = text.split("<|output_start|>")[1].split("<|output_end|>")[0]
        return inside, out.masks[0]

    tools = {"calculator": calculator, "python": fake_python}
    assert run("print(1)", tools)[0] == "ran" and calls == ["print(1)"]
    assert run("1+2", tools)[0] == "3" and calls == ["print(1)"]  # arithmetic: the calculator
    assert run("print(1)", {"calculator": calculator})[0].startswith("Error: Call is not allowed")
    assert run("1+2", {"python": broken})[0] == "Error: RuntimeError: boom"
    text, masks = run("1/0", tools)
    assert text == "Error: division by zero"
    assert masks[-1] == 1 and masks.count(0) == len(tok.encode(text)) + 2


def test_no_tokenizer_means_no_tools_and_no_default_stops():
    model = randomized(small())
    eng = Engine(model)
    assert eng.default_stop_tokens == ()
    out = eng.generate([1, 2], max_tokens=10, temperature=1.0, seed=0)
    assert out.masks == [[1] * 10]


def test_engine_module_documents_its_rules():
    doc = engine_module.__doc__
    for phrase in ("seq_len", "stop token", "mask 0", "row_seed"):
        assert phrase in doc


def test_rows_that_call_tools_at_different_steps_match_single_runs(byte_tok):
    tok = byte_tok
    a, end = tok.encode("a")[0], tok.special_id("<|assistant_end|>")
    call = tool_call(tok, "6*7")
    table = {a: [a, call[0], end]}  # go on, call the calculator, or stop: equally likely
    table |= {x: y for x, y in zip(call, call[1:], strict=False)}
    table[tok.special_id("<|output_end|>")] = [a, end]
    eng = Engine(ScriptedModel(tok.vocab_size, table, default=a), tok)
    batch = eng.generate([tok.bos_id, a], num_samples=8, max_tokens=40, seed=5)
    forced_at = {tuple(i for i, m in enumerate(masks) if m == 0) for masks in batch.masks}
    assert len(forced_at) > 2  # rows called the tool at different steps (or not at all)
    for i in range(8):
        single = eng.generate([tok.bos_id, a], max_tokens=40, seed=[row_seed(5, i)])
        assert (single.tokens[0], single.masks[0]) == (batch.tokens[i], batch.masks[i])
        text = tok.decode(batch.tokens[i])
        assert text.count("<|output_start|>42<|output_end|>") == text.count("<|python_end|>")


def test_entropy_is_reported_where_the_model_sampled():
    model = randomized(small(seq_len=40))
    prompt = [5, 6, 7]
    out = Engine(model).generate(prompt, num_samples=2, max_tokens=6, temperature=1.0, seed=1)
    assert [len(e) for e in out.entropies] == [len(t) for t in out.tokens]
    with torch.no_grad():
        logp = torch.log_softmax(model(torch.tensor([prompt]))[0, -1].float(), dim=-1)
    first = -(logp.exp() * logp).sum().item()
    assert out.entropies[0][0] == pytest.approx(first, rel=1e-4)
    assert all(0 < e <= math.log(97) + 1e-4 for row in out.entropies for e in row)
