"""Decode timings: the cached step computes what the naive step does, prefill fills what decode
fills, and a context longer than the model's is refused."""

import pytest
import torch

from nanolib.decode_speed import best_seconds, per_token_seconds, prefill_vs_decode
from nanolib.model import GPT, GPTConfig


@pytest.fixture(scope="module")
def model() -> GPT:
    torch.manual_seed(0)
    m = GPT(GPTConfig(vocab_size=97, seq_len=32, n_layer=2, d_model=32, n_head=4, n_kv_head=2))
    with torch.no_grad():
        for p in m.parameters():
            p.normal_(0.0, 0.3)  # c_proj starts at zero, which would hide a wrong cache
    return m.eval()


def test_a_cached_step_gives_the_naive_steps_scores(model):
    rows = per_token_seconds(model, [2, 9, 32], repeats=2)
    assert [r["context"] for r in rows] == [2, 9, 32]
    assert all(r["naive_s"] > 0 and r["cached_s"] > 0 for r in rows)
    assert max(r["max_prob_gap"] for r in rows) < 1e-5
    with pytest.raises(ValueError, match="exceeds the model's seq_len 32"):
        per_token_seconds(model, [33])


def test_prefill_fills_the_cache_decode_fills(model):
    out = prefill_vs_decode(model, 20, repeats=1)
    assert out["tokens"] == 20 and out["prefill_s"] > 0 and out["decode_s"] > 0
    assert out["max_cache_gap"] < 1e-5


def test_best_seconds_is_the_fastest_run():
    calls = []
    assert best_seconds(lambda: calls.append(1), 3, torch.device("cpu")) >= 0
    assert len(calls) == 4  # one warm-up, three timed
