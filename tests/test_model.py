"""The GPT: shapes, the depth dial, accounting, masking, rotary, GQA, softcap and learning."""

import math

import pytest
import torch

from nanolib.model import (
    GPT,
    GPTConfig,
    apply_rotary,
    config_for_depth,
    estimate_memory,
    flops_per_token,
    param_counts,
    rotary_tables,
    scaling_params,
)
from nanolib.optim import build_optimizer

TINY = GPTConfig(vocab_size=100, seq_len=16, n_layer=2, d_model=32, n_head=4, n_kv_head=2)


def randomized(config: GPTConfig, seed: int = 0) -> GPT:
    """A model whose every weight is random: c_proj starts at zero, which would hide mixing."""
    torch.manual_seed(seed)
    model = GPT(config)
    with torch.no_grad():
        for p in model.parameters():
            p.normal_(0.0, 0.3)
    return model


def test_shapes_logits_and_loss():
    torch.manual_seed(0)
    model = GPT(TINY)
    idx = torch.randint(0, TINY.vocab_size, (3, 10))
    logits = model(idx)
    assert logits.shape == (3, 10, TINY.vocab_size)
    assert logits.dtype == torch.float32
    assert model(idx, idx).shape == ()
    assert model(idx, idx, loss_reduction="none").shape == (3, 10)
    with pytest.raises(ValueError, match="seq_len=16"):
        model(torch.zeros(1, 17, dtype=torch.long))


def test_ignore_index_targets_do_not_count():
    model = randomized(TINY)
    idx = torch.randint(0, TINY.vocab_size, (2, 8))
    targets = idx.clone()
    targets[:, 4:] = -1
    per_token = model(idx, idx, loss_reduction="none")
    assert torch.allclose(model(idx, targets), per_token[:, :4].mean())


def test_param_counts_by_hand():
    # vocab 100, d_model 32, 2 layers, 4 heads of head_dim 8, 2 kv heads (kv width 16):
    #   embedding  100·32                                  =  3,200
    #   attention  2 layers · (q 32·32 + k 32·16 + v 32·16 + o 32·32 = 3,072)  =  6,144
    #   mlp        2 layers · (c_fc 32·128 + c_proj 128·32 = 8,192)            = 16,384
    #   lm_head    32·100                                  =  3,200
    #   total                                              = 28,928
    expected = {
        "embedding": 3200,
        "attention": 6144,
        "mlp": 16384,
        "lm_head": 3200,
        "scalars": 0,
        "total": 28928,
    }
    model = GPT(TINY)
    assert param_counts(TINY) == expected
    assert param_counts(model) == expected
    assert sum(p.numel() for p in model.parameters()) == 28928
    assert scaling_params(TINY, "all") == 28928
    assert scaling_params(TINY, "non_embedding") == 6144 + 16384
    assert scaling_params(TINY, "matmul") == 6144 + 16384 + 3200
    with pytest.raises(ValueError, match="unknown convention"):
        scaling_params(TINY, "kaplan")


def test_flops_per_token_by_hand():
    # attention term: 12 · n_layer 2 · n_head 4 · head_dim 8 · seq_len 16 = 12,288
    # matmul:         6 · 25,728 + 12,288 = 154,368 + 12,288 = 166,656
    # all:            6 · 28,928 + 12,288 = 173,568 + 12,288 = 185,856
    # non_embedding:  6 · 22,528 + 12,288 = 135,168 + 12,288 = 147,456
    assert flops_per_token(TINY) == 166_656
    assert flops_per_token(TINY, "all") == 185_856
    assert flops_per_token(TINY, "non_embedding") == 147_456


@pytest.mark.parametrize(
    "depth, aspect_ratio, head_dim, d_model, n_head",
    [
        (12, 64, 128, 768, 6),
        (10, 64, 128, 640, 5),
        (20, 64, 128, 1280, 10),
        (26, 64, 128, 1664, 13),
        (3, 64, 128, 256, 2),  # 192 rounds up to two heads of 128
        (2, 32, 32, 64, 2),
        (4, 32, 32, 128, 4),
        (5, 32, 64, 192, 3),  # 160 rounds up to three heads of 64
    ],
)
def test_the_dial(depth, aspect_ratio, head_dim, d_model, n_head):
    config = config_for_depth(
        depth, vocab_size=512, seq_len=64, aspect_ratio=aspect_ratio, head_dim=head_dim
    )
    assert config.n_layer == depth
    assert (config.d_model, config.n_head, config.n_kv_head) == (d_model, n_head, n_head)
    assert config.head_dim == head_dim
    assert config.d_model % head_dim == 0
    assert config.d_model >= aspect_ratio * depth


def test_dial_with_grouped_query_attention():
    config = config_for_depth(8, vocab_size=512, seq_len=64, head_dim=128, kv_ratio=2)
    assert (config.n_head, config.n_kv_head) == (4, 2)
    with pytest.raises(ValueError, match="kv_ratio=3"):
        config_for_depth(8, vocab_size=512, seq_len=64, kv_ratio=3)


def test_init_as_documented():
    torch.manual_seed(0)
    config = GPTConfig(vocab_size=512, seq_len=16, n_layer=2, d_model=128, n_head=2)
    model = GPT(config)
    assert model.wte.weight.std().item() == pytest.approx(1.0, rel=0.05)
    assert model.lm_head.weight.std().item() == pytest.approx(0.001, rel=0.05)
    for block in model.blocks:
        for linear in (block.attn.c_q, block.attn.c_k, block.attn.c_v, block.mlp.c_fc):
            assert linear.weight.std().item() == pytest.approx(128**-0.5, rel=0.05)
        assert not block.attn.c_proj.weight.any()
        assert not block.mlp.c_proj.weight.any()


def test_causal_masking():
    model = randomized(TINY)
    idx = torch.randint(0, TINY.vocab_size, (2, 16))
    changed = idx.clone()
    changed[:, 9:] = (changed[:, 9:] + 1) % TINY.vocab_size
    before, after = model(idx), model(changed)
    assert torch.allclose(before[:, :9], after[:, :9], atol=1e-5)
    assert not torch.allclose(before[:, 9:], after[:, 9:], atol=1e-3)


def test_rotary_preserves_norms_and_depends_on_offset_only():
    torch.manual_seed(0)
    seq_len, head_dim = 32, 16
    cos, sin = rotary_tables(seq_len, head_dim, base=100.0)
    cos, sin = cos[None, :, None, :], sin[None, :, None, :]
    q, k = torch.randn(2, head_dim)
    # The same q and k placed at every position: (1, seq_len, 1, head_dim).
    q_rot = apply_rotary(q.expand(1, seq_len, 1, head_dim), cos, sin)[0, :, 0]
    k_rot = apply_rotary(k.expand(1, seq_len, 1, head_dim), cos, sin)[0, :, 0]
    assert torch.allclose(q_rot.norm(dim=-1), q.norm().expand(seq_len), atol=1e-5)
    assert torch.allclose(q_rot[0], q)  # position 0 is not rotated
    for offset in (0, 3, 11):
        dots = torch.stack([q_rot[m + offset] @ k_rot[m] for m in range(seq_len - offset)])
        assert torch.allclose(dots, dots[0].expand_as(dots), atol=1e-4)
    assert not torch.isclose(q_rot[3] @ k_rot[0], q_rot[4] @ k_rot[0], atol=1e-3)


def test_grouped_query_attention_runs_with_fewer_kv_params():
    full = GPTConfig(vocab_size=100, seq_len=16, n_layer=2, d_model=32, n_head=4, n_kv_head=4)
    grouped = randomized(TINY)
    assert param_counts(TINY)["attention"] < param_counts(full)["attention"]
    assert grouped.blocks[0].attn.c_k.weight.shape == (16, 32)
    idx = torch.randint(0, TINY.vocab_size, (2, 16))
    loss = grouped(idx, idx)
    loss.backward()
    assert torch.isfinite(loss)
    # GQA equals full attention whose k and v heads are the grouped ones repeated.
    expanded = GPT(full)
    state = grouped.state_dict()
    for i in range(TINY.n_layer):
        for name in ("c_k", "c_v"):
            w = state[f"blocks.{i}.attn.{name}.weight"].view(2, 8, 32)
            state[f"blocks.{i}.attn.{name}.weight"] = w.repeat_interleave(2, dim=0).reshape(32, 32)
    expanded.load_state_dict(state)
    assert torch.allclose(grouped(idx), expanded(idx), atol=1e-5)


def test_softcap_bounds_logits():
    model = randomized(TINY)
    with torch.no_grad():
        model.lm_head.weight.mul_(1000.0)
    logits = model(torch.randint(0, TINY.vocab_size, (2, 16)))
    assert logits.abs().max() <= TINY.softcap
    assert logits.abs().max() > 0.9 * TINY.softcap


def test_loss_at_init_is_uniform_guess():
    torch.manual_seed(0)
    config = GPTConfig(vocab_size=512, seq_len=32, n_layer=2, d_model=64, n_head=2, n_kv_head=2)
    model = GPT(config)
    idx = torch.randint(0, config.vocab_size, (4, 32))
    assert model(idx, idx).item() == pytest.approx(math.log(512), abs=0.02)


def test_bf16_autocast_forward_backward():
    model = randomized(TINY)
    idx = torch.randint(0, TINY.vocab_size, (2, 16))
    with torch.autocast("cpu", dtype=torch.bfloat16):
        logits = model(idx)
        loss = model(idx, idx)
    assert logits.dtype == torch.float32
    loss.backward()
    assert all(torch.isfinite(p.grad).all() for p in model.parameters())


def test_training_on_a_repeated_sequence_drives_loss_down():
    torch.manual_seed(0)
    config = GPTConfig(vocab_size=64, seq_len=32, n_layer=2, d_model=64, n_head=4, n_kv_head=4)
    model = GPT(config)
    optimizer = build_optimizer(model)
    seq = torch.randint(0, config.vocab_size, (1, 33)).repeat(8, 1)
    losses = []
    for _ in range(30):
        loss = model(seq[:, :-1], seq[:, 1:])
        loss.backward()
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
        losses.append(loss.item())
    assert losses[0] == pytest.approx(math.log(64), abs=0.05)
    assert losses[-1] < 0.1


def test_generate_is_seeded_and_greedy_is_deterministic():
    model = randomized(TINY)
    prompt = torch.randint(0, TINY.vocab_size, (2, 4))
    a = model.generate(prompt, 20, temperature=1.0, top_k=10, seed=7)
    b = model.generate(prompt, 20, temperature=1.0, top_k=10, seed=7)
    assert a.shape == (2, 24)  # runs past seq_len by cropping the context
    assert torch.equal(a, b)
    assert torch.equal(a[:, :4], prompt)
    greedy = model.generate(prompt, 3, temperature=0)
    assert torch.equal(greedy[:, 4], model(prompt)[:, -1].argmax(-1))


def test_estimate_memory_grows_with_batch_and_counts_weights():
    config = config_for_depth(12, vocab_size=32768, seq_len=2048)
    one, two = (estimate_memory(config, b) for b in (1, 2))
    state = one - (two - one)
    # fp32 weights and grads (8 B/param) + AdamW 8 B/param + Muon 4 B/param.
    counts = param_counts(config)
    adam = counts["embedding"] + counts["lm_head"]
    assert state == 8 * counts["total"] + 8 * adam + 4 * (counts["total"] - adam)
    assert 2e9 < one < 2e10
    assert estimate_memory(config, 1, torch.float32) > one
