"""Policy gradient from a reward: group advantages, the loss as per-token weights, a KL option,
the diagnostics that catch a run learning nothing, and the unbiased pass@k estimator.

The algorithm (GRPO as nanochat runs it, which is REINFORCE with a group baseline): for each
problem sample a group of completions, score each with a reward, and take as advantage the
reward minus the group's mean reward (optionally ÷ the group's std). The loss is

    L = −(1/N) Σ_rollouts Σ_sampled tokens  A_rollout · log p(token | context)

with N the number of sampled tokens of the step. Because −log p is the cross-entropy of the
token, L = Σ w · CE with a weight w = A / N on every sampled token and 0 on the prompt and on
the tokens a tool forced into the stream: the same weighted cross-entropy the pretraining and SFT
steps compute, so RL needs no loop of its own. A group whose rewards are all equal has A = 0 on
every row: it contributes nothing to the gradient.

An optional KL penalty β·KL(π ‖ π_ref) to a reference (the SFT) model uses the k3 estimator
exp(r − l) − (r − l) − 1 per sampled token (l, r: the policy's and the reference's log-prob of
the token); its gradient with respect to l is β(1 − exp(r − l)), which is again a weight on the
token's cross-entropy: w_kl = β(exp(r − l) − 1) / N, computed before the step (on-policy).
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import torch
import torch.nn.functional as F

from nanolib.chat_eval import answer_is_correct
from nanolib.device import autocast_context

Record = Mapping[str, Any]
Reward = Callable[[Record, str], float]  # (problem record, completion text) -> reward


def answer_reward(record: Record, completion: str) -> float:
    """1 if the completion's number after `####` equals the reference answer (GSM8K's rule)."""
    return 1.0 if answer_is_correct(record, completion) else 0.0


@dataclass
class Rollout:
    """One sampled completion of one problem: its tokens, which were sampled, and its reward."""

    problem: int  # index of the problem in its task
    sample: int  # index within the problem's group
    prompt: list[int]
    tokens: list[int]  # the completion (the prompt not included)
    mask: list[int]  # 1: sampled by the model; 0: forced by a tool
    text: str = ""
    reward: float = 0.0
    stopped: bool = True  # ended on a stop token (False: ran out of max_new_tokens)
    tool_calls: int = 0
    answer: str | None = None  # the number after ####, None if there is none
    entropy_sum: float = 0.0  # Σ over sampled tokens of the policy's entropy there (nats)
    extra: dict[str, Any] = field(default_factory=dict)

    @property
    def sampled_tokens(self) -> int:
        """Tokens the model chose (the loss's tokens)."""
        return sum(self.mask)


# ------------------------------------------------------------------------------------------------
# advantages and the loss as token weights


def group_advantages(
    rewards: Sequence[float] | torch.Tensor, scale_by_std: bool = False, eps: float = 1e-6
) -> torch.Tensor:
    """Reward − the group's mean reward, optionally ÷ the group's (population) std."""
    r = torch.as_tensor(rewards, dtype=torch.float64).flatten()
    if r.numel() == 0:
        raise ValueError("a group needs at least one reward")
    advantages = r - r.mean()
    if scale_by_std:
        advantages = advantages / (r.std(correction=0) + eps)
    return advantages


def policy_gradient_weights(
    masks: Sequence[Sequence[int]], advantages: Sequence[float] | torch.Tensor, num_tokens: float
) -> list[list[float]]:
    """Per completion token: advantage / num_tokens where the model sampled it, else 0."""
    advantages = torch.as_tensor(advantages, dtype=torch.float64).tolist()
    if len(masks) != len(advantages):
        raise ValueError(f"{len(masks)} masks but {len(advantages)} advantages")
    if num_tokens <= 0:
        raise ValueError(f"num_tokens must be > 0, got {num_tokens}")
    return [[a / num_tokens if m else 0.0 for m in mask] for mask, a in zip(masks, advantages)]


def training_rows(
    rollouts: Sequence[Rollout], weights: Sequence[Sequence[float]], pad_id: int
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """(inputs, targets, weights), each (rows, longest − 1): prompt + completion, shifted by one.

    A target of weight 0 is -1 (ignored by the cross-entropy); the prompt's targets are always 0.
    """
    if len(rollouts) != len(weights):
        raise ValueError(f"{len(rollouts)} rollouts but {len(weights)} weight rows")
    width = max(len(r.prompt) + len(r.tokens) for r in rollouts) - 1
    inputs = torch.full((len(rollouts), width), pad_id, dtype=torch.long)
    targets = torch.full((len(rollouts), width), -1, dtype=torch.long)
    w = torch.zeros((len(rollouts), width), dtype=torch.float32)
    for i, (r, row_w) in enumerate(zip(rollouts, weights)):
        if len(row_w) != len(r.tokens):
            raise ValueError(f"rollout {i}: {len(r.tokens)} tokens but {len(row_w)} weights")
        ids = r.prompt + r.tokens
        inputs[i, : len(ids) - 1] = torch.tensor(ids[:-1])
        start = len(r.prompt) - 1  # the target at this position is the first completion token
        row = torch.tensor(row_w, dtype=torch.float32)
        w[i, start : start + len(row)] = row
        tgt = torch.tensor(r.tokens)
        targets[i, start : start + len(row)] = torch.where(row != 0, tgt, -1)
    return inputs, targets, w


def sampled_positions(rollouts: Sequence[Rollout], width: int) -> torch.Tensor:
    """Bool (rows, width): True at the target positions of tokens the model sampled."""
    out = torch.zeros((len(rollouts), width), dtype=torch.bool)
    for i, r in enumerate(rollouts):
        start = len(r.prompt) - 1
        out[i, start : start + len(r.mask)] = torch.tensor(r.mask, dtype=torch.bool)
    return out


def weighted_loss(
    model: torch.nn.Module, inputs: torch.Tensor, targets: torch.Tensor, weights: torch.Tensor
) -> torch.Tensor:
    """Σ weight · cross-entropy over every target: the one loss of pretraining, SFT and RL."""
    ce = model(inputs, targets, loss_reduction="none")
    return (ce.float() * weights).sum()


@torch.no_grad()
def score_tokens(
    model: torch.nn.Module, inputs: torch.Tensor, targets: torch.Tensor, batch_size: int = 16
) -> tuple[torch.Tensor, torch.Tensor]:
    """Log-prob of every target and the entropy (nats) of the model's next-token distribution.

    Both (rows, width), on the CPU; positions whose target is -1 hold 0 in both.
    """
    device = next(model.parameters()).device
    was_training = model.training
    model.eval()
    logps, entropies = [], []
    for s in range(0, len(inputs), batch_size):
        x, y = inputs[s : s + batch_size].to(device), targets[s : s + batch_size].to(device)
        with autocast_context(device):
            logits = model(x)
        logp_all = F.log_softmax(logits.float(), dim=-1)
        valid = y >= 0
        logp = logp_all.gather(-1, y.clamp(min=0)[..., None]).squeeze(-1)
        entropy = -(logp_all.exp() * logp_all).sum(-1)
        logps.append((logp * valid).cpu())
        entropies.append((entropy * valid).cpu())
    model.train(was_training)
    return torch.cat(logps), torch.cat(entropies)


def kl_weights(
    logp: torch.Tensor,
    ref_logp: torch.Tensor,
    sampled: torch.Tensor,
    beta: float,
    num_tokens: float,
) -> torch.Tensor:
    """Cross-entropy weights whose gradient is that of β·(k3 estimate of KL(π ‖ π_ref)) / N."""
    ratio = torch.exp(ref_logp - logp)
    return torch.where(sampled, beta * (ratio - 1) / num_tokens, 0.0)


def kl_estimate(logp: torch.Tensor, ref_logp: torch.Tensor, sampled: torch.Tensor) -> float:
    """Mean k3 estimate of KL(π ‖ π_ref) per sampled token (≥ 0)."""
    d = (ref_logp - logp)[sampled]
    return (torch.exp(d) - d - 1).mean().item() if d.numel() else 0.0


# ------------------------------------------------------------------------------------------------
# pass@k


def pass_at_k(n: int, c: int, k: int) -> float:
    """Unbiased pass@k from n samples of which c are correct: 1 − C(n−c, k) / C(n, k)."""
    if not 0 <= c <= n or not 1 <= k <= n:
        raise ValueError(f"need 0 ≤ c ≤ n and 1 ≤ k ≤ n, got n={n}, c={c}, k={k}")
    if n - c < k:
        return 1.0
    # the ratio as a product: no huge binomials
    return 1.0 - math.prod(1.0 - k / m for m in range(n - c + 1, n + 1))


def pass_at_k_table(
    correct: Sequence[int], n: int, ks: Sequence[int] | None = None, confidence: float = 0.95
) -> list[dict[str, float]]:
    """Mean pass@k over problems for each k, with a normal interval over problems.

    correct[i] is how many of problem i's n samples were right.
    """
    if not correct:
        raise ValueError("pass@k needs at least one problem")
    z = torch.distributions.Normal(0.0, 1.0).icdf(torch.tensor(0.5 + confidence / 2)).item()
    rows = []
    for k in ks or range(1, n + 1):
        values = [pass_at_k(n, c, k) for c in correct]
        mean = sum(values) / len(values)
        var = sum((v - mean) ** 2 for v in values) / max(len(values) - 1, 1)
        half = z * math.sqrt(var / len(values))
        low, high = max(0.0, mean - half), min(1.0, mean + half)
        rows.append({"k": k, "pass": mean, "ci_low": low, "ci_high": high})
    return rows


# ------------------------------------------------------------------------------------------------
# diagnostics


def diagnostic_sums(rollouts: Sequence[Rollout], kl_sum: float = 0.0) -> dict[str, float]:
    """Sums over one rank's rollouts of a step (add them across ranks, then `diagnostics`)."""
    groups: dict[int, list[float]] = {}
    for r in rollouts:
        groups.setdefault(r.problem, []).append(r.reward)
    equal = [g for g in groups.values() if max(g) == min(g)]
    return {
        "rollouts": len(rollouts),
        "groups": len(groups),
        "reward_sum": sum(r.reward for r in rollouts),
        "reward_sq_sum": sum(r.reward**2 for r in rollouts),
        "groups_all_equal": len(equal),
        "groups_all_zero": sum(1 for g in equal if g[0] == 0),
        "groups_all_one": sum(1 for g in equal if g[0] == 1),
        "length_sum": sum(len(r.tokens) for r in rollouts),
        "sampled_tokens": sum(r.sampled_tokens for r in rollouts),
        "tool_call_rollouts": sum(1 for r in rollouts if r.tool_calls > 0),
        "no_answer_rollouts": sum(1 for r in rollouts if r.answer is None),
        "truncated_rollouts": sum(1 for r in rollouts if not r.stopped),
        "entropy_sum": sum(r.entropy_sum for r in rollouts),
        "kl_sum": kl_sum,
    }


def diagnostics(sums: Mapping[str, float]) -> dict[str, float]:
    """A step's diagnostics from its summed counts (all ranks).

    reward_mean and reward_std (over rollouts); the share of groups whose rewards are all equal
    (and all 0, all 1); mean completion length (tokens, tool output included); mean entropy per
    sampled token; the share of completions that called a tool, that have no parsable answer,
    and that ran out of tokens; the mean KL estimate per sampled token when a reference is used.
    """
    n, g, t = sums["rollouts"], sums["groups"], max(sums["sampled_tokens"], 1)
    if n < 1 or g < 1:
        raise ValueError("diagnostics need at least one rollout and one group")
    mean = sums["reward_sum"] / n
    return {
        "reward_mean": mean,
        "reward_std": math.sqrt(max(sums["reward_sq_sum"] / n - mean**2, 0.0)),
        "groups_all_equal": sums["groups_all_equal"] / g,
        "groups_all_zero": sums["groups_all_zero"] / g,
        "groups_all_one": sums["groups_all_one"] / g,
        "completion_len": sums["length_sum"] / n,
        "entropy": sums["entropy_sum"] / t,
        "tool_call_rate": sums["tool_call_rollouts"] / n,
        "no_answer_rate": sums["no_answer_rollouts"] / n,
        "truncated_rate": sums["truncated_rollouts"] / n,
        "kl": sums["kl_sum"] / t,
    }


@dataclass(frozen=True)
class WarningRules:
    """When a run is learning nothing: thresholds of `learning_warnings`."""

    window: int = 5  # steps averaged on each side of a comparison
    patience: int = 10  # consecutive steps with every group's rewards equal
    entropy_frac: float = 0.2  # entropy below this fraction of the first window's
    length_frac: float = 0.5  # completion length below this fraction of the first window's
    reward_drop: float = 0.1  # mean reward this far below the best window so far


def _mean(rows: Sequence[Mapping[str, float]], key: str) -> float:
    return sum(r[key] for r in rows) / len(rows)


def learning_warnings(
    history: Sequence[Mapping[str, float]], rules: WarningRules = WarningRules()
) -> dict[str, str]:
    """The warnings that hold after the last step of history (rows of `diagnostics` by step)."""
    out: dict[str, str] = {}
    if not history:
        return out
    w = rules.window
    tail = history[-rules.patience :]
    if len(tail) == rules.patience and all(r["groups_all_equal"] == 1 for r in tail):
        kind = (
            "all zero"
            if all(r["groups_all_zero"] == 1 for r in tail)
            else "all one"
            if all(r["groups_all_one"] == 1 for r in tail)
            else "all equal"
        )
        out["no_signal"] = (
            f"every group's rewards were equal ({kind}) for {rules.patience} steps: the advantages "
            "are zero and nothing is learned; make the problems "
            + ("easier" if kind == "all zero" else "harder" if kind == "all one" else "varied")
            + " or sample more per problem"
        )
    if len(history) < 2 * w:
        return out
    first, recent = history[:w], history[-w:]
    e0, e1 = _mean(first, "entropy"), _mean(recent, "entropy")
    if e0 > 0 and e1 < rules.entropy_frac * e0:
        out["entropy_collapse"] = (
            f"entropy collapsed: {e1:.3f} nats/token over the last {w} steps vs {e0:.3f} at the "
            "start; the policy has become nearly deterministic and explores no more (lower the "
            "LR, or add the KL penalty)"
        )
    n0, n1 = _mean(first, "completion_len"), _mean(recent, "completion_len")
    if n0 > 0 and n1 < rules.length_frac * n0:
        out["length_collapse"] = (
            f"completions shrank: {n1:.1f} tokens over the last {w} steps vs {n0:.1f} at the "
            "start; the reward may favour stopping early"
        )
    best = max(
        _mean(history[i - w : i], "reward_mean") for i in range(w, len(history) - w + 1)
    )  # the best earlier window (the recent one excluded)
    r1 = _mean(recent, "reward_mean")
    if r1 < best - rules.reward_drop:
        out["reward_falling"] = (
            f"mean reward fell to {r1:.3f} over the last {w} steps from {best:.3f} earlier; "
            "the run is unlearning (lower the LR)"
        )
    return out


def new_warnings(
    history: Sequence[Mapping[str, float]], rules: WarningRules = WarningRules()
) -> dict[str, str]:
    """Warnings that hold after the last step but did not after the one before."""
    now = learning_warnings(history, rules)
    before = learning_warnings(history[:-1], rules)
    return {k: v for k, v in now.items() if k not in before}
