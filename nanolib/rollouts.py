"""Rollouts: groups of sampled answers to problems, drawn with the engine, and their scores.

A problem's group is `num_samples` completions from one shared prefill of its prompt (the chat
template up to `<|assistant_start|>`), sampled with per-row seeds derived from
(seed, step, problem, sample): the same run draws the same rollouts, whether it runs straight
through, is resumed from a checkpoint, or is spread over another number of ranks. Tool calls run
during sampling; their forced output tokens carry mask 0.

Which problems a step uses is a seeded shuffle per epoch of the training problems; the step's
problems are dealt to the ranks round-robin (`problems_for_step`).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
import torch.distributed as dist

from nanolib.chat import render_for_completion
from nanolib.chat_eval import wilson_interval
from nanolib.engine import Engine, row_seed
from nanolib.rl import Reward, Rollout, answer_reward, pass_at_k_table
from nanolib.tasks import extract_answer

Record = Mapping[str, Any]
EVAL_STREAM = -1  # the "step" of evaluation seeds: never a training step


def problems_for_step(
    step: int, per_step: int, num_problems: int, seed: int = 0, rank: int = 0, world: int = 1
) -> list[int]:
    """Indices of the problems this rank works on at step (a seeded shuffle per epoch)."""
    if per_step % world:
        raise ValueError(f"problems per step ({per_step}) must be a multiple of nproc ({world})")
    if num_problems < 1:
        raise ValueError("no training problems")
    out = []
    for position in range(step * per_step + rank, (step + 1) * per_step, world):
        epoch, i = divmod(position, num_problems)
        order = np.random.default_rng([seed, epoch]).permutation(num_problems)
        out.append(int(order[i]))
    return out


def shard(items: Sequence[Any], rank: int, world: int) -> list[Any]:
    """This rank's items, round-robin."""
    return list(items[rank::world])


def sample_groups(
    engine: Engine,
    records: Sequence[Record],
    problems: Sequence[int],
    num_samples: int,
    max_new_tokens: int,
    temperature: float = 1.0,
    top_k: int | None = None,
    seed: int = 0,
    step: int = 0,
    reward: Reward = answer_reward,
) -> list[Rollout]:
    """Each record's group of num_samples completions, all sampled in one batch of rows.

    records[j] is problem number problems[j]; its sample i is seeded with
    row_seed(seed, step, problems[j], i), so a group does not depend on which other problems
    share its batch. Every prompt is prefilled once. Prompts so long that fewer than
    max_new_tokens fit in the model's context get what fits. Rollouts come problem by problem.
    """
    tokenizer = engine.tokenizer
    if tokenizer is None:
        raise ValueError("rollouts need an engine with a tokenizer")
    if len(records) != len(problems):
        raise ValueError(f"{len(records)} records but {len(problems)} problem numbers")
    prompts = [render_for_completion(tokenizer, r) for r in records]
    room = engine.config.seq_len - max(len(p) for p in prompts)
    if room < 1:
        raise ValueError(
            f"a prompt of {max(len(p) for p in prompts)} tokens leaves no room in the model's "
            f"seq_len={engine.config.seq_len}"
        )
    seeds = [row_seed(seed, step, p, i) for p in problems for i in range(num_samples)]
    gen = engine.generate_many(
        prompts,
        num_samples,
        max_tokens=min(max_new_tokens, room),
        temperature=temperature,
        top_k=top_k,
        seed=seeds,
    )
    python_start = tokenizer.special_id("<|python_start|>")
    out = []
    for row, (tokens, mask, stopped) in enumerate(zip(gen.tokens, gen.masks, gen.stopped)):
        j, i = divmod(row, num_samples)
        text = tokenizer.decode(tokens)
        calls = sum(1 for t, m in zip(tokens, mask) if m and t == python_start)
        out.append(
            Rollout(
                problem=problems[j],
                sample=i,
                prompt=prompts[j],
                tokens=tokens,
                mask=mask,
                text=text,
                reward=float(reward(records[j], text)),
                stopped=stopped,
                tool_calls=calls,
                answer=extract_answer(text),
                entropy_sum=sum(gen.entropies[row]),
            )
        )
    return out


def sample_group(
    engine: Engine,
    record: Record,
    problem: int,
    num_samples: int,
    max_new_tokens: int,
    temperature: float = 1.0,
    top_k: int | None = None,
    seed: int = 0,
    step: int = 0,
    reward: Reward = answer_reward,
) -> list[Rollout]:
    """One problem's group: num_samples completions from one prefill, scored by the reward."""
    args = (num_samples, max_new_tokens, temperature, top_k, seed, step, reward)
    return sample_groups(engine, [record], [problem], *args)


def _gather_counts(counts: dict[int, int]) -> dict[int, int]:
    """Merge {problem: count} dicts of every rank (all ranks get the union)."""
    if not dist.is_initialized():
        return counts
    gathered: list[dict[int, int] | None] = [None] * dist.get_world_size()
    dist.all_gather_object(gathered, counts)
    merged: dict[int, int] = {}
    for part in gathered:
        merged.update(part or {})
    return merged


def correct_counts(
    engine: Engine,
    records: Sequence[Record],
    num_samples: int,
    max_new_tokens: int,
    temperature: float = 1.0,
    top_k: int | None = None,
    seed: int = 0,
    reward: Reward = answer_reward,
    rank: int = 0,
    world: int = 1,
    max_rows: int = 256,
) -> list[int]:
    """For each record, how many of its num_samples completions earn a reward of 1.

    Problems are split over the ranks and the counts gathered, so every rank gets the full list;
    each rank samples its problems max_rows rows at a time. Evaluation seeds use their own
    stream (EVAL_STREAM), never a training step's.
    """
    counts: dict[int, int] = {}
    mine = list(range(rank, len(records), world))
    per_batch = max(1, max_rows // num_samples)
    for s in range(0, len(mine), per_batch):
        problems = mine[s : s + per_batch]
        rollouts = sample_groups(
            engine,
            [records[i] for i in problems],
            problems,
            num_samples,
            max_new_tokens,
            temperature,
            top_k,
            seed,
            EVAL_STREAM,
            reward,
        )
        for r in rollouts:
            counts[r.problem] = counts.get(r.problem, 0) + (r.reward >= 1)
    merged = _gather_counts(counts)
    return [merged[i] for i in range(len(records))]


def evaluate_problems(
    engine: Engine,
    records: Sequence[Record],
    num_samples: int,
    max_new_tokens: int,
    temperature: float = 1.0,
    top_k: int | None = None,
    seed: int = 0,
    greedy: bool = True,
    rank: int = 0,
    world: int = 1,
) -> dict[str, Any]:
    """Held-out scores: greedy pass@1 (Wilson 95%) and sampled pass@k for k = 1 … num_samples."""
    out: dict[str, Any] = {"problems": len(records)}
    if greedy:
        counts = correct_counts(
            engine, records, 1, max_new_tokens, 0.0, None, seed, rank=rank, world=world
        )
        solved = sum(counts)
        out.update(
            greedy_correct=solved,
            pass1_greedy=solved / len(records),
            pass1_greedy_ci=list(wilson_interval(solved, len(records))),
        )
    if num_samples > 0:
        counts = correct_counts(
            engine,
            records,
            num_samples,
            max_new_tokens,
            temperature,
            top_k,
            seed,
            rank=rank,
            world=world,
        )
        out["samples"] = num_samples
        out["sampled_correct"] = counts
        out["pass_at_k"] = pass_at_k_table(counts, num_samples)
    return out
