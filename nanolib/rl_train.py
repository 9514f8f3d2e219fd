"""The RL stage: GRPO-style policy gradient on word problems, on the loop every stage shares.

`train_rl(cfg)`: load the SFT model (`init_dir`) → for each step, sample a group of answers per
problem with the engine (`nanolib.rollouts`), reward them, turn the group advantages into
cross-entropy weights (`nanolib.rl`) and hand those batches to `nanolib.loop.run_loop` — the
same loop, checkpoints, resume, metrics and launcher as pretraining. Strictly on-policy: each
step's rollouts come from the weights that step updates, and are used for one gradient step.

Every step logs the diagnostics of `nanolib.rl.diagnostics` and prints a warning when the run
is learning nothing; every `eval_every` steps (and at the start and the end) it scores held-out
problems: greedy pass@1 and sampled pass@k for k up to `eval_samples`, with 95% intervals.
Everything lives in `cfg.out_dir` (the chapter's `rl` artifact): config.json, metrics.jsonl,
the checkpoint files, summary.json.
"""

from __future__ import annotations

import importlib
import time
from collections.abc import Callable, Iterator
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import torch
import torch.distributed as dist
import torch.nn as nn

from nanolib.checkpoint import SUMMARY, load_model, read_meta, read_metrics
from nanolib.engine import Engine
from nanolib.files import atomic_write_json
from nanolib.loop import (
    Batch,
    StageConfig,
    TrainingError,
    launch_stage,
    rank_device,
    rank_info,
    run_loop,
    stage_main,
)
from nanolib.optim import build_optimizer
from nanolib.rl import (
    Reward,
    Rollout,
    WarningRules,
    answer_reward,
    diagnostic_sums,
    diagnostics,
    group_advantages,
    kl_estimate,
    kl_weights,
    new_warnings,
    policy_gradient_weights,
    sampled_positions,
    score_tokens,
    training_rows,
)
from nanolib.rollouts import evaluate_problems, problems_for_step, sample_groups
from nanolib.tasks import Task, load_task
from nanolib.tokenizer import Tokenizer
from nanolib.tools import DEFAULT_TOOLS, calculator

TOOLSETS = {"calculator": {"calculator": calculator}, "calculator+python": dict(DEFAULT_TOOLS)}
# Fields that change what is reported, not the trajectory: a checkpoint made with other values
# of these still resumes.
NOT_TRAJECTORY = {
    "out_dir",
    "tokenizer_dir",
    "init_dir",
    "reference_dir",
    "eval_every",
    "eval_problems",
    "eval_samples",
    "eval_greedy",
    "checkpoint_every",
    "warn_window",
    "warn_patience",
    "compile",
}


@dataclass
class RLConfig(StageConfig):
    """Everything an RL run needs; written to `<out_dir>/config.json`."""

    out_dir: str
    tokenizer_dir: str
    init_dir: str  # the model RL starts from (the SFT checkpoint)
    task: str = "tiny_arithmetic"  # a generative task of nanolib.tasks (gsm8k at the GPU presets)
    task_options: dict[str, Any] | None = None  # passed to load_task (data_files, seed, sizes)
    train_split: str = "train"
    eval_split: str = "test"
    problems: list[int] | None = None  # indices into the training split to use (None: all)
    # Horizon: num_steps, else num_epochs passes over the training problems.
    num_steps: int | None = None
    num_epochs: float = 1.0
    problems_per_step: int = 16  # all ranks together
    num_samples: int = 16  # the group: completions per problem
    max_new_tokens: int = 256
    temperature: float = 1.0
    top_k: int | None = 50
    device_batch_size: int = 8  # rollouts per forward/backward on one rank
    lr_frac: float = 0.05  # × the init run's matrix / embedding / unembedding LRs
    weight_decay: float = 0.0
    warmup_steps: int = 0
    final_lr_frac: float = 0.0  # the LR decays linearly over the run to this fraction
    scale_by_std: bool = False  # advantage ÷ the group's std (GRPO's z-score)
    kl_coef: float = 0.0  # β of the KL penalty to the reference model (0: none)
    reference_dir: str | None = None  # the KL reference (None: init_dir)
    tools: str = "calculator"  # calculator | calculator+python
    reward: str = "nanolib.rl:answer_reward"  # "module:function" (record, completion) -> float
    eval_every: int = 60  # steps between held-out evaluations (0: start and end only)
    eval_problems: int = 400  # held-out problems per evaluation (the split's first ones)
    eval_samples: int = 16  # samples per problem for pass@k (0: greedy pass@1 only)
    eval_greedy: bool = True  # also greedy pass@1 (Wilson interval)
    checkpoint_every: int = 60  # steps between checkpoints (0: at the end only)
    warn_window: int = 5  # steps averaged by the learning-nothing warnings
    warn_patience: int = 10  # steps of all-equal groups before that warning
    seed: int = 0
    device: str = "auto"
    compile: bool = False
    bf16: bool | None = None  # bf16 autocast of training steps; None: device.training_bf16


@dataclass(frozen=True)
class RLPlan:
    """What a config works out to: steps, rollouts, micro-batches, the peak LRs."""

    num_steps: int
    train_problems: int
    eval_problems: int
    rollouts_per_rank: int
    micro_steps: int
    lrs: dict[str, float]


def init_lrs(init_dir: str | Path) -> dict[str, float]:
    """The matrix / embedding / unembedding LRs the init run's config names (or the defaults)."""
    config = read_meta(init_dir).get("config", {})
    defaults = {"matrix_lr": 0.02, "embedding_lr": 0.3, "unembedding_lr": 0.008}
    return {k: float(config.get(k, v)) for k, v in defaults.items()}


def rollouts_per_rank(cfg: RLConfig, world: int = 1) -> int:
    """Rollouts each rank samples per step; TrainingError when the batch arithmetic fails."""
    if cfg.problems_per_step % world:
        raise TrainingError(
            f"problems_per_step={cfg.problems_per_step} is not a multiple of nproc={world}"
        )
    if cfg.num_samples < 2:
        raise TrainingError(
            f"num_samples={cfg.num_samples}: a group needs at least 2 answers, or every "
            "advantage is 0 and nothing is learned"
        )
    rows = cfg.problems_per_step // world * cfg.num_samples
    if rows % cfg.device_batch_size:
        raise TrainingError(
            f"each rank samples problems_per_step / nproc × num_samples = {rows} rollouts, not a "
            f"multiple of device_batch_size={cfg.device_batch_size}; change one of them"
        )
    return rows


def plan_rl(cfg: RLConfig, train_problems: int, eval_problems: int, world: int = 1) -> RLPlan:
    """Check the batch arithmetic and work out the horizon; TrainingError says what to change."""
    rows = rollouts_per_rank(cfg, world)
    if cfg.temperature <= 0:
        raise TrainingError(f"RL samples: temperature must be > 0, got {cfg.temperature}")
    if cfg.tools not in TOOLSETS:
        raise TrainingError(f"unknown tools {cfg.tools!r}; valid: {', '.join(TOOLSETS)}")
    steps = cfg.num_steps
    if steps is None:
        steps = round(cfg.num_epochs * train_problems / cfg.problems_per_step)
    return RLPlan(
        num_steps=max(int(steps), 1),
        train_problems=train_problems,
        eval_problems=min(cfg.eval_problems, eval_problems),
        rollouts_per_rank=rows,
        micro_steps=rows // cfg.device_batch_size,
        lrs={k: v * cfg.lr_frac for k, v in init_lrs(cfg.init_dir).items()},
    )


def _load_tasks(cfg: RLConfig) -> tuple[Task, Task]:
    options = cfg.task_options or {}
    train = load_task(cfg.task, cfg.train_split, **options)
    held_out = load_task(cfg.task, cfg.eval_split, **options)
    for task in (train, held_out):
        if task.kind != "generative":
            raise TrainingError(f"RL needs a generative task with answers; {cfg.task!r} is not")
    if cfg.problems is not None:
        if not cfg.problems:
            raise TrainingError("problems is an empty list: give some indices, or None for all")
        train = train.select(cfg.problems)  # IndexError names the task and its size
    return train, held_out


class RolloutSource:
    """RL's batches for the shared loop: each step samples, rewards and weighs fresh rollouts."""

    def __init__(
        self,
        cfg: RLConfig,
        p: RLPlan,
        tokenizer: Tokenizer,
        problems: Task,
        device: str,
        reward: Reward = answer_reward,
        reference: nn.Module | None = None,
        say: Callable[[str], None] = print,
    ) -> None:
        self.cfg, self.p, self.tokenizer, self.problems = cfg, p, tokenizer, problems
        self.device, self.reward, self.reference, self.say = device, reward, reference, say
        self.micro_steps = p.micro_steps
        self.rank, self.world = rank_info()
        self.history: list[dict[str, float]] = []  # diagnostics of every step so far
        self.rules = WarningRules(window=cfg.warn_window, patience=cfg.warn_patience)
        self.rollouts: list[Rollout] = []  # this rank's rollouts of the last step
        self._step_metrics: dict[str, Any] = {}

    def sample(self, step: int, model: nn.Module) -> list[Rollout]:
        """This rank's groups of rollouts for a step, rewarded."""
        engine = Engine(model, self.tokenizer, TOOLSETS[self.cfg.tools])
        cfg = self.cfg
        mine = problems_for_step(
            step, cfg.problems_per_step, len(self.problems), cfg.seed, self.rank, self.world
        )
        return sample_groups(
            engine,
            [self.problems[i] for i in mine],
            mine,
            cfg.num_samples,
            cfg.max_new_tokens,
            cfg.temperature,
            cfg.top_k,
            cfg.seed,
            step,
            self.reward,
        )

    def batches(self, step: int, model: nn.Module) -> Iterator[Batch]:
        """Sample, reward and weigh this rank's rollouts, then yield them in micro-batches."""
        t0 = time.perf_counter()
        self.rollouts = rollouts = self.sample(step, model)
        sample_s = time.perf_counter() - t0
        advantages = []
        for g in range(0, len(rollouts), self.cfg.num_samples):
            group = rollouts[g : g + self.cfg.num_samples]
            adv = group_advantages([r.reward for r in group], self.cfg.scale_by_std)
            advantages += adv.tolist()
        # Normalise by the sampled tokens of all ranks, × nproc because DDP averages gradients:
        # any number of ranks then takes the step one process would.
        n_tokens = torch.tensor(float(sum(r.sampled_tokens for r in rollouts)))
        if dist.is_initialized():
            n_tokens = n_tokens.to(self.device)
            dist.all_reduce(n_tokens)
        n_tokens = max(round(n_tokens.item()) / self.world, 1e-9)
        weights = policy_gradient_weights([r.mask for r in rollouts], advantages, n_tokens)
        for r, a in zip(rollouts, advantages):
            r.extra["advantage"] = a
        # A rollout of zero advantage adds nothing to the gradient: without the KL term only the
        # others are trained on, packed into the step's micro-batches (the rest stay empty).
        kept = [i for i, a in enumerate(advantages) if a != 0 or self.reference is not None]
        b, kl_sum, micro = self.cfg.device_batch_size, 0.0, []
        for s in range(0, len(kept), b):
            part = [rollouts[i] for i in kept[s : s + b]]
            inputs, targets, w = training_rows(
                part, [weights[i] for i in kept[s : s + b]], self.tokenizer.bos_id
            )
            if self.reference is not None:
                on_sampled = [[float(m) for m in r.mask] for r in part]
                _, targets, _ = training_rows(part, on_sampled, self.tokenizer.bos_id)
                sampled = sampled_positions(part, inputs.size(1))
                logp, _ = score_tokens(model, inputs, targets, b)
                ref_logp, _ = score_tokens(self.reference, inputs, targets, b)
                w = w + kl_weights(logp, ref_logp, sampled, self.cfg.kl_coef, n_tokens)
                kl_sum += kl_estimate(logp, ref_logp, sampled) * int(sampled.sum())
                targets = torch.where(w != 0, targets, -1)
            micro.append((inputs, targets, w))
        empty = (
            torch.full((1, 1), self.tokenizer.bos_id),
            torch.full((1, 1), -1),
            torch.zeros((1, 1)),
        )
        micro += [empty] * (self.micro_steps - len(micro))  # every rank runs as many micro-steps
        sums = diagnostic_sums(rollouts, kl_sum)
        sums["trained_rollouts"] = len(kept)
        sums["sample_s"] = sample_s
        keys = sorted(sums)
        if dist.is_initialized():
            t = torch.tensor([sums[k] for k in keys], dtype=torch.float64, device=self.device)
            dist.all_reduce(t)
            sums = dict(zip(keys, t.tolist()))
        diag = diagnostics(sums)
        if self.reference is None:
            diag.pop("kl")
        self.history.append(diag)
        warnings = new_warnings(self.history, self.rules)
        for message in warnings.values():
            if self.rank == 0:
                self.say(f"WARNING at step {step + 1}: {message}")
        self._step_metrics = {
            **diag,
            "sample_s": sums["sample_s"] / self.world,
            "rollouts": int(sums["rollouts"]),
            "sampled_tokens": int(sums["sampled_tokens"]),
            "trained_rollouts": int(sums["trained_rollouts"]),
            **({"warnings": sorted(warnings)} if warnings else {}),
        }
        dev = self.device
        for inputs, targets, w in micro:
            yield inputs.to(dev), targets.to(dev), w.to(dev)

    def metrics(self, loss: float, seconds: float) -> dict[str, Any]:
        """The step's diagnostics, its surrogate loss and its time (sampling included)."""
        return {"pg_loss": loss, "step_s": seconds, **self._step_metrics}

    def state_dict(self) -> dict[str, Any]:
        """The diagnostics so far (problem order and seeds follow from the step alone)."""
        return {"history": self.history}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Resume the warnings' memory."""
        self.history = list(state["history"])


def eval_metrics(result: dict[str, Any]) -> dict[str, Any]:
    """A held-out evaluation as flat metrics: greedy pass@1 and pass@k with their intervals."""
    out: dict[str, Any] = {"eval_problems": result["problems"]}
    if "pass1_greedy" in result:
        low, high = result["pass1_greedy_ci"]
        out.update(greedy_pass1=result["pass1_greedy"], greedy_low=low, greedy_high=high)
    for row in result.get("pass_at_k", []):
        k = row["k"]
        out.update({f"pass@{k}": row["pass"], f"pass@{k}_low": row["ci_low"]})
        out[f"pass@{k}_high"] = row["ci_high"]
    return out


def _prepare(cfg: RLConfig, world: int) -> tuple[Tokenizer, Task, Task, RLPlan]:
    """Checks that need no device: tokenizer, init checkpoint, tasks, batch arithmetic."""
    tokenizer = Tokenizer.load(cfg.tokenizer_dir)
    read_meta(cfg.init_dir)
    if cfg.kl_coef > 0 and cfg.reference_dir is not None:
        read_meta(cfg.reference_dir)
    train, held_out = _load_tasks(cfg)
    load_reward(cfg.reward)
    return tokenizer, train, held_out, plan_rl(cfg, len(train), len(held_out), world)


def load_reward(spec: str) -> Reward:
    """The reward function a "module:function" spec names."""
    module_name, _, name = spec.partition(":")
    try:
        function = getattr(importlib.import_module(module_name), name)
    except (ImportError, AttributeError, ValueError) as e:
        raise TrainingError(
            f"reward {spec!r} not found ({e}); give it as 'module:function', e.g. "
            "'nanolib.rl:answer_reward'"
        ) from None
    if not callable(function):
        raise TrainingError(f"reward {spec!r} is not a function")
    return function


def train_rl(cfg: RLConfig, *, progress: bool = True) -> dict[str, Any] | None:
    """Run (or resume, or just report) RL from the init checkpoint; rank 0 returns the summary."""
    rank, world = rank_info()
    device = rank_device(cfg.device)
    tokenizer, train, held_out, p = _prepare(cfg, world)
    reward = load_reward(cfg.reward)
    eval_records = held_out.select(range(p.eval_problems))
    model, init_meta = load_model(cfg.init_dir, device)
    model.train()
    reference = None
    if cfg.kl_coef > 0:
        reference, _ = load_model(cfg.reference_dir or cfg.init_dir, device)
        reference.requires_grad_(False)
    torch.manual_seed(cfg.seed)
    optimizer = build_optimizer(model, weight_decay=cfg.weight_decay, **p.lrs)
    out = cfg.save_in_out_dir() if rank == 0 else Path(cfg.out_dir)
    from tqdm.auto import tqdm

    say = tqdm.write if progress else (lambda s: print(s, flush=True))
    source = RolloutSource(cfg, p, tokenizer, train, device, reward, reference, say)

    def evaluate(step: int, model: nn.Module) -> dict[str, Any]:
        if not p.eval_problems:
            return {}
        engine = Engine(model, tokenizer, TOOLSETS[cfg.tools])
        result = evaluate_problems(
            engine,
            eval_records,
            cfg.eval_samples,
            cfg.max_new_tokens,
            cfg.temperature,
            cfg.top_k,
            cfg.seed,
            greedy=cfg.eval_greedy,
            rank=rank,
            world=world,
        )
        return eval_metrics(result)

    headline = (
        f"{p.num_steps:,} steps × {cfg.problems_per_step} problems × {cfg.num_samples} samples "
        f"({p.train_problems:,} training problems); {world} rank(s) × {p.micro_steps} "
        f"micro-steps of {cfg.device_batch_size} rollouts; held-out: {p.eval_problems} "
        f"problems; LRs {', '.join(f'{k} {v:.3g}' for k, v in p.lrs.items())}"
    )

    result = run_loop(
        out,
        asdict(cfg),
        NOT_TRAJECTORY,
        cfg.schedule(p.num_steps, warmdown_ratio=1.0),  # decays over the whole run
        model,
        optimizer,
        source,
        evaluate,
        device,
        model_meta=init_meta["model"],
        compile_model=cfg.compile,
        bf16=cfg.bf16,
        progress=progress,
        desc="RL",
        headline=headline,
        postfix=("reward_mean", "groups_all_equal", "completion_len"),
    )
    if result is None:
        return None
    history = read_metrics(out)
    evals = [r for r in history if "eval_problems" in r]
    fired = [(r["step"], w) for r in history for w in r.get("warnings", [])]
    summary = {
        "step": result.step,
        "num_steps": p.num_steps,
        "problems_per_step": cfg.problems_per_step,
        "num_samples": cfg.num_samples,
        "rollouts": sum(r.get("rollouts", 0) for r in history),
        "before": evals[0] if evals else None,
        "after": evals[-1] if evals else None,
        "warnings": fired,
        **result.run_fields(device, world),
    }
    atomic_write_json(out / SUMMARY, summary)
    return summary


def launch_rl(cfg: RLConfig, nproc: int = 1, *, progress: bool = True) -> dict[str, Any]:
    """RL in this process (nproc = 1) or under torchrun on nproc ranks; return the summary."""
    return launch_stage(cfg, nproc, train_rl, _prepare, "nanolib.rl_train", "RL", progress)


def main(argv: list[str] | None = None) -> None:
    """`python -m nanolib.rl_train --config <out_dir>/config.json`, alone or under torchrun."""
    stage_main(argv, RLConfig, train_rl, "RL from a saved RLConfig.")


if __name__ == "__main__":
    main()
