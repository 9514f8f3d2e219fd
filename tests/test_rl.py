"""nanolib.rl: advantages, the loss as token weights, the KL option, pass@k, diagnostics."""

from __future__ import annotations

import math

import pytest
import torch

from nanolib.model import GPT, config_for_depth
from nanolib.rl import (
    Rollout,
    WarningRules,
    answer_reward,
    diagnostic_sums,
    diagnostics,
    group_advantages,
    kl_estimate,
    kl_weights,
    learning_warnings,
    new_warnings,
    pass_at_k,
    pass_at_k_table,
    policy_gradient_weights,
    sampled_positions,
    score_tokens,
    training_rows,
    weighted_loss,
)

VOCAB = 64


def tiny_model(seed: int = 0) -> GPT:
    torch.manual_seed(seed)
    model = GPT(config_for_depth(1, VOCAB, 32, aspect_ratio=32, head_dim=16))
    # c_proj starts at zero; perturb every weight so the gradients are not trivially zero
    with torch.no_grad():
        for p in model.parameters():
            p.add_(0.05 * torch.randn_like(p))
    return model


def rollout(problem: int, sample: int, tokens: list[int], mask: list[int], reward: float):
    return Rollout(problem, sample, [1, 2, 3], tokens, mask, reward=reward)


def grads(model: GPT) -> torch.Tensor:
    return torch.cat([p.grad.flatten() for p in model.parameters() if p.grad is not None])


def test_answer_reward_uses_the_gsm8k_rule():
    record = {"messages": [{"role": "user", "content": "q"}], "answer": "1200"}
    assert answer_reward(record, "so 1,200 in all\n#### 1,200") == 1.0
    assert answer_reward(record, "#### 120") == 0.0
    assert answer_reward(record, "1200") == 0.0  # no '####': no answer


def test_group_advantages():
    a = group_advantages([1.0, 0.0, 0.0, 1.0])
    assert a.tolist() == [0.5, -0.5, -0.5, 0.5]
    s = group_advantages([1.0, 0.0, 0.0, 1.0], scale_by_std=True)
    assert torch.allclose(s, torch.tensor([1.0, -1.0, -1.0, 1.0], dtype=s.dtype), atol=1e-5)
    for scale in (False, True):
        assert group_advantages([1.0] * 5, scale).abs().max() == 0
        assert group_advantages([0.0] * 5, scale).abs().max() == 0
    with pytest.raises(ValueError, match="at least one"):
        group_advantages([])


def test_training_rows_put_weights_on_sampled_completion_tokens_only():
    # completion 10 11 [forced 12 13] 14; the prompt is 1 2 3
    r = rollout(0, 0, [10, 11, 12, 13, 14], [1, 1, 0, 0, 1], 1.0)
    short = rollout(0, 1, [20], [1], 0.0)
    w = policy_gradient_weights([r.mask, short.mask], [0.5, -0.5], num_tokens=4)
    assert w == [[0.125, 0.125, 0.0, 0.0, 0.125], [-0.125]]
    inputs, targets, weights = training_rows([r, short], w, pad_id=0)
    assert inputs.shape == targets.shape == weights.shape == (2, 7)
    assert inputs[0].tolist() == [1, 2, 3, 10, 11, 12, 13]
    assert targets[0].tolist() == [-1, -1, 10, 11, -1, -1, 14]
    assert weights[0].tolist() == [0, 0, 0.125, 0.125, 0, 0, 0.125]
    assert inputs[1].tolist() == [1, 2, 3, 0, 0, 0, 0]  # padded
    assert targets[1].tolist() == [-1, -1, 20, -1, -1, -1, -1]
    assert sampled_positions([r, short], 7).tolist() == [
        [False, False, True, True, False, False, True],
        [False, False, True, False, False, False, False],
    ]
    with pytest.raises(ValueError, match="weights"):
        training_rows([r], [[0.1]], pad_id=0)


def _teaching_loss(model, rollouts, advantages):
    """−(1/N) Σ A · log p(sampled token), one token at a time."""
    total, n = 0.0, sum(r.sampled_tokens for r in rollouts)
    for r, a in zip(rollouts, advantages):
        ids = torch.tensor([r.prompt + r.tokens])
        logp = torch.log_softmax(model(ids[:, :-1]), dim=-1)[0]
        for j, (token, sampled) in enumerate(zip(r.tokens, r.mask)):
            if sampled:
                total = total - a * logp[len(r.prompt) - 1 + j, token]
    return total / n


def _rollouts():
    return [
        rollout(0, 0, [10, 11, 12, 13, 14], [1, 1, 0, 0, 1], 1.0),
        rollout(0, 1, [20, 21], [1, 1], 0.0),
        rollout(0, 2, [30, 31, 32], [1, 1, 1], 0.0),
    ]


def test_weighted_cross_entropy_is_the_policy_gradient_loss():
    rollouts = _rollouts()
    adv = group_advantages([r.reward for r in rollouts])
    n = sum(r.sampled_tokens for r in rollouts)
    w = policy_gradient_weights([r.mask for r in rollouts], adv, n)
    inputs, targets, weights = training_rows(rollouts, w, pad_id=0)
    model = tiny_model()
    loss = weighted_loss(model, inputs, targets, weights)
    loss.backward()
    g_lib = grads(model)
    model.zero_grad()
    teach = _teaching_loss(model, rollouts, adv.tolist())
    teach.backward()
    assert loss.item() == pytest.approx(teach.item(), abs=1e-6)
    assert torch.allclose(g_lib, grads(model), atol=1e-6)
    assert g_lib.abs().max() > 0


def test_forced_tokens_never_reach_the_loss():
    rollouts = _rollouts()
    model = tiny_model()
    adv = group_advantages([r.reward for r in rollouts])
    n = sum(r.sampled_tokens for r in rollouts)

    def loss_for(rs):
        w = policy_gradient_weights([r.mask for r in rs], adv, n)
        return weighted_loss(model, *training_rows(rs, w, pad_id=0))

    # forced tokens are never targets: the tool's output 40 41 is context only
    changed = [rollout(0, 0, [10, 11, 40, 41, 14], [1, 1, 0, 0, 1], 1.0), *rollouts[1:]]
    w = policy_gradient_weights([r.mask for r in changed], adv, n)
    _, targets, weights = training_rows(changed, w, pad_id=0)
    assert not ((targets[0] == 40) | (targets[0] == 41)).any()
    assert weights[0, 4:6].abs().sum() == 0
    # a tool output at the end of a completion: whatever it holds, the loss is the same
    tail = [rollout(0, 0, [10, 11, 12, 13], [1, 1, 0, 0], 1.0), *rollouts[1:]]
    tail2 = [rollout(0, 0, [10, 11, 50, 51], [1, 1, 0, 0], 1.0), *rollouts[1:]]
    assert loss_for(tail).item() == pytest.approx(loss_for(tail2).item(), abs=1e-7)
    assert loss_for(rollouts).item() != 0


def test_all_equal_group_gives_zero_gradient():
    for reward in (0.0, 1.0):
        rollouts = [rollout(0, i, [10 + i, 11], [1, 1], reward) for i in range(4)]
        adv = group_advantages([r.reward for r in rollouts], scale_by_std=True)
        w = policy_gradient_weights([r.mask for r in rollouts], adv, 8)
        model = tiny_model()
        weighted_loss(model, *training_rows(rollouts, w, pad_id=0)).backward()
        assert grads(model).abs().max() == 0


def test_kl_weights_give_the_k3_gradient():
    rollouts = _rollouts()
    n = sum(r.sampled_tokens for r in rollouts)
    on_sampled = [[float(m) for m in r.mask] for r in rollouts]
    inputs, targets, _ = training_rows(rollouts, on_sampled, pad_id=0)
    sampled = sampled_positions(rollouts, inputs.size(1))
    model, reference = tiny_model(0), tiny_model(1)
    logp, _ = score_tokens(model, inputs, targets)
    ref_logp, _ = score_tokens(reference, inputs, targets)
    beta = 0.3
    w = kl_weights(logp, ref_logp, sampled, beta, n)
    weighted_loss(model, inputs, targets, w).backward()
    g_lib = grads(model)
    model.zero_grad()
    # autograd through β · Σ k3 / N with the reference fixed
    live = -model(inputs, targets, loss_reduction="none")
    d = ref_logp - live
    k3 = torch.where(sampled, torch.exp(d) - d - 1, 0.0)
    (beta * k3.sum() / n).backward()
    assert torch.allclose(g_lib, grads(model), atol=1e-6)
    assert kl_estimate(logp, ref_logp, sampled) > 0
    assert kl_estimate(logp, logp, sampled) == 0
    assert kl_weights(logp, logp, sampled, beta, n).abs().max() == 0


def test_score_tokens_entropy_and_logp():
    rollouts = _rollouts()
    w = [[1.0] * len(r.tokens) for r in rollouts]
    inputs, targets, _ = training_rows(rollouts, w, pad_id=0)
    model = tiny_model()
    logp, entropy = score_tokens(model, inputs, targets, batch_size=2)
    with torch.no_grad():
        ce = model(inputs, targets, loss_reduction="none")
    assert torch.allclose(logp, -ce, atol=1e-5)
    valid = targets >= 0
    assert (entropy[valid] > 0).all() and (entropy[valid] <= math.log(VOCAB) + 1e-5).all()
    assert (entropy[~valid] == 0).all()


def test_pass_at_k_is_unbiased():
    for n in range(1, 9):
        for c in range(n + 1):
            for k in range(1, n + 1):
                expected = 1 - math.comb(n - c, k) / math.comb(n, k)
                assert pass_at_k(n, c, k) == pytest.approx(expected, abs=1e-12)
    assert pass_at_k(16, 4, 1) == pytest.approx(0.25)
    with pytest.raises(ValueError):
        pass_at_k(4, 5, 1)
    table = pass_at_k_table([0, 2, 4], n=4, ks=[1, 4])
    assert table[0]["pass"] == pytest.approx(0.5) and table[1]["pass"] == pytest.approx(2 / 3)
    assert table[0]["ci_low"] < 0.5 < table[0]["ci_high"]


def test_diagnostics_on_hand_made_groups():
    rs = [
        Rollout(
            0, 0, [1], [5, 6, 7], [1, 0, 1], reward=1.0, tool_calls=1, answer="3", entropy_sum=9.0
        ),
        Rollout(0, 1, [1], [5], [1], reward=0.0, answer=None, stopped=False),
        Rollout(1, 0, [1], [5, 6], [1, 1], reward=0.0, answer="2"),
        Rollout(1, 1, [1], [5, 6], [1, 1], reward=0.0, answer="2"),
        Rollout(2, 0, [1], [5, 6], [1, 1], reward=1.0, answer="4"),
        Rollout(2, 1, [1], [5, 6], [1, 1], reward=1.0, answer="4"),
    ]
    d = diagnostics(diagnostic_sums(rs))
    assert d["reward_mean"] == pytest.approx(0.5)
    assert d["reward_std"] == pytest.approx(0.5)
    assert d["groups_all_equal"] == pytest.approx(2 / 3)
    assert d["groups_all_zero"] == pytest.approx(1 / 3)
    assert d["groups_all_one"] == pytest.approx(1 / 3)
    assert d["completion_len"] == pytest.approx(12 / 6)
    assert d["entropy"] == pytest.approx(9.0 / 11)
    assert d["tool_call_rate"] == pytest.approx(1 / 6)
    assert d["no_answer_rate"] == pytest.approx(1 / 6)
    assert d["truncated_rate"] == pytest.approx(1 / 6)


def _row(reward=0.5, equal=0.2, zero=0.1, one=0.1, entropy=1.0, length=50.0):
    return {
        "reward_mean": reward,
        "groups_all_equal": equal,
        "groups_all_zero": zero,
        "groups_all_one": one,
        "entropy": entropy,
        "completion_len": length,
    }


def test_learning_warnings():
    rules = WarningRules(window=3, patience=4)
    healthy = [_row(reward=0.3 + 0.01 * i) for i in range(12)]
    assert learning_warnings(healthy, rules) == {}
    dead = [_row(equal=1.0, zero=1.0, one=0.0) for _ in range(4)]
    warn = learning_warnings(dead, rules)
    assert set(warn) == {"no_signal"} and "all zero" in warn["no_signal"]
    assert "easier" in warn["no_signal"]
    solved = [_row(equal=1.0, zero=0.0, one=1.0) for _ in range(4)]
    assert "harder" in learning_warnings(solved, rules)["no_signal"]
    collapse = [_row() for _ in range(3)] + [_row(entropy=0.05, length=10) for _ in range(3)]
    assert set(learning_warnings(collapse, rules)) == {"entropy_collapse", "length_collapse"}
    falling = [_row(reward=0.6) for _ in range(6)] + [_row(reward=0.3) for _ in range(3)]
    assert set(learning_warnings(falling, rules)) == {"reward_falling"}
    # a warning is new once, at the step it starts to hold
    fired = [new_warnings(falling[: i + 1], rules) for i in range(len(falling))]
    assert sum("reward_falling" in f for f in fired) == 1
