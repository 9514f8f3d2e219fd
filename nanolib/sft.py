"""Supervised fine-tuning: a base model learns the chat format from a mixture of conversations.

`train_sft(cfg)`: load the base checkpoint (`init_dir`, chapter 3's `checkpoint` artifact) →
render every conversation of the task mixture with the chat template (`nanolib.chat`) → pack
them into rows (`pack_rows`) → hand the rows to `nanolib.loop.run_loop`, the loop pretraining
and RL share (resume, checkpoints, metrics, progress, DDP, the torchrun launcher).

Packing, nanochat's "best fit with padding": every row starts at `<|bos|>` (each conversation
opens with one); a row takes whole conversations, each time the longest one in a buffer of the
next `buffer_size` that still fits; when none fits, the rest of the row is padding, masked out,
so no conversation is ever split between rows. A conversation longer than a row is cropped to
it (and counted). The plan is a pure function of the mixture, so a step's rows follow from the
step number alone: resume is exact and rank r of W takes rows r, r + W, … of each step.

The loss is Σ weights · cross-entropy with weight 1/N on every target the mask keeps, N being
the masked targets of the whole step (all ranks): the mean loss per assistant token. LRs are
the base run's × `lr_frac`, flat then decaying linearly over the last `warmdown_ratio` of the
steps to `final_lr_frac`; no weight decay. Every `eval_every` steps the loss on the assistant
tokens of held-out conversations (`val_loss`) is logged. Everything lives in `cfg.out_dir` (a
chapter's `sft` artifact): config.json, metrics.jsonl, the checkpoint files, summary.json.
"""

from __future__ import annotations

import hashlib
import json
import math
import os
from collections.abc import Iterator, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.distributed as dist
import torch.nn as nn

from nanolib.chat import render_conversation
from nanolib.checkpoint import SUMMARY, load_model, read_meta, read_metrics
from nanolib.compiling import verdict_key
from nanolib.device import autocast_context, training_bf16
from nanolib.files import atomic_write_json, sha256_file
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
from nanolib.runs import make_command
from nanolib.tasks import Mixture, Task, load_task
from nanolib.tokenizer import Tokenizer
from nanolib.train import micro_steps

# Fields that change what is reported, not the trajectory: a checkpoint made with other values
# of these still resumes.
NOT_TRAJECTORY = {
    "out_dir",
    "tokenizer_dir",
    "init_dir",
    "eval_every",
    "val_per_task",
    "checkpoint_every",
    "compile",
}
LR_NAMES = ("matrix_lr", "embedding_lr", "unembedding_lr")
DEFAULT_LRS = {"matrix_lr": 0.02, "embedding_lr": 0.3, "unembedding_lr": 0.008}
LENGTHS = "lengths.npz"  # the cached token count of every training conversation


@dataclass
class SFTConfig(StageConfig):
    """Everything an SFT run needs; written to `<out_dir>/config.json`."""

    out_dir: str
    tokenizer_dir: str
    init_dir: str  # the base model (chapter 3's `checkpoint` artifact)
    mixture: dict[str, float] | None = None  # task name -> epochs (None: the tiny world's four)
    task_options: dict[str, dict[str, Any]] | None = None  # per task: load_task options
    train_split: str = "train"
    val_split: str = "test"
    val_per_task: int = 200  # held-out conversations per task for val_loss (a seeded pick)
    num_steps: int | None = None  # None: one pass over the mixture
    seq_len: int | None = None  # tokens per row (None: the base model's)
    batch_tokens: int | None = None  # tokens per step, all ranks (None: the base run's)
    device_batch_size: int = 16  # rows per forward/backward on one rank
    buffer_size: int = 100  # conversations the best-fit packer chooses from
    lr_frac: float = 0.8  # × the base run's matrix / embedding / unembedding LRs
    warmup_steps: int = 0
    warmdown_ratio: float = 0.5  # the last fraction of steps decays the LR linearly …
    final_lr_frac: float = 0.0  # … to this fraction of the peak
    eval_every: int = 200  # steps between val_loss evaluations (0: at the start and the end)
    checkpoint_every: int = 0  # steps between checkpoints (0: at the end only)
    seed: int = 0  # the mixture's shuffle and the val pick
    device: str = "auto"
    compile: bool | None = None  # torch.compile; None: where measured to pay
    bf16: bool | None = None  # bf16 autocast of training steps; None: device.training_bf16

    def tasks(self) -> dict[str, float]:
        """The mixture as task name -> epochs, sorted by name (config.json sorts its keys, so
        the order written must not matter)."""
        if self.mixture is None:
            return {n: 1.0 for n in ("tiny_arithmetic", "tiny_chat", "tiny_cloze", "tiny_numbers")}
        return dict(sorted(self.mixture.items()))


# ------------------------------------------------------------------------------------------------
# packing


@dataclass(frozen=True)
class Packing:
    """Which conversations go in which row, in order; lengths as packed (cropped to capacity)."""

    rows: list[list[int]]
    capacity: int  # tokens per row: seq_len + 1 (inputs and targets overlap by all but one)
    cropped: int  # conversations longer than a row, cropped to it
    tokens: int  # conversation tokens placed (after cropping)

    @property
    def fill(self) -> float:
        """Share of the rows' positions holding conversation tokens (the rest is padding)."""
        return self.tokens / max(len(self.rows) * self.capacity, 1)


def pack_rows(lengths: Sequence[int], capacity: int, buffer_size: int = 100) -> Packing:
    """Best-fit packing of conversations (in order, token counts given) into rows of capacity.

    Each row repeatedly takes the longest conversation among the next buffer_size that fits in
    what is left of it (the earliest of equals); when none fits the row is closed and padded.
    """
    if capacity < 2:
        raise ValueError(f"a row needs room for an input and a target: capacity {capacity} < 2")
    if buffer_size < 1:
        raise ValueError(f"buffer_size must be ≥ 1, got {buffer_size}")
    sizes = [min(int(n), capacity) for n in lengths]
    if any(n < 1 for n in sizes):
        raise ValueError("every conversation has at least one token (its <|bos|>)")
    cropped = sum(int(n) > capacity for n in lengths)
    buffer: list[int] = []  # conversation indices, in mixture order
    rows: list[list[int]] = []
    upcoming = 0
    while upcoming < len(sizes) or buffer:
        row: list[int] = []
        room = capacity
        while True:
            while len(buffer) < buffer_size and upcoming < len(sizes):
                buffer.append(upcoming)
                upcoming += 1
            best = -1
            for j, i in enumerate(buffer):
                if sizes[i] <= room and (best < 0 or sizes[i] > sizes[buffer[best]]):
                    best = j
            if best < 0:
                break
            i = buffer.pop(best)
            row.append(i)
            room -= sizes[i]
            if room == 0:
                break
        rows.append(row)
    return Packing(rows=rows, capacity=capacity, cropped=cropped, tokens=sum(sizes))


def render_row(
    tokenizer: Tokenizer, conversations: Sequence[Any], capacity: int
) -> tuple[list[int], list[int]]:
    """One row: the conversations rendered end to end (each cropped to capacity), then padding.

    Padding is `<|bos|>` with mask 0, so it is never a target the loss counts.
    """
    ids: list[int] = []
    mask: list[int] = []
    for conv in conversations:
        conv_ids, conv_mask = render_conversation(tokenizer, conv, capacity)
        ids += conv_ids
        mask += conv_mask
    if len(ids) > capacity:
        raise ValueError(f"the conversations of a row hold {len(ids)} tokens > {capacity}")
    pad = capacity - len(ids)
    return ids + [tokenizer.bos_id] * pad, mask + [0] * pad


def rows_to_batch(
    rows: Sequence[tuple[list[int], list[int]]],
) -> tuple[torch.Tensor, torch.Tensor]:
    """(inputs, targets) of rendered rows; a target whose mask is 0 becomes -1 (ignored)."""
    ids = torch.tensor([r[0] for r in rows], dtype=torch.long)
    mask = torch.tensor([r[1] for r in rows], dtype=torch.bool)
    targets = torch.where(mask[:, 1:], ids[:, 1:], -1)
    return ids[:, :-1].contiguous(), targets.contiguous()


# ------------------------------------------------------------------------------------------------
# the plan


@dataclass(frozen=True)
class SFTPlan:
    """What a config works out to: rows, steps, micro-batches and the peak LRs."""

    seq_len: int
    batch_tokens: int
    rows_per_step: int  # all ranks together
    micro_steps: int  # micro-batches per step on each rank
    num_steps: int
    conversations: int
    packing: Packing
    lrs: dict[str, float]
    base_lrs: dict[str, float]


def base_config(init_dir: str | Path) -> dict[str, Any]:
    """The base run's training config (its meta.json); a one-line error naming chapter 3."""
    try:
        meta = read_meta(init_dir)
    except FileNotFoundError:
        raise TrainingError(
            f"no base checkpoint at {init_dir}: it is made by {make_command('checkpoint')}"
        ) from None
    return meta


def load_mixture(cfg: SFTConfig, split: str) -> list[Task]:
    """The mixture's tasks, one split each."""
    options = cfg.task_options or {}
    tasks = cfg.tasks()
    if not tasks:
        raise TrainingError("the SFT mixture is empty: give at least one task and its epochs")
    unknown = set(options) - set(tasks)
    if unknown:
        raise TrainingError(f"task_options for tasks not in the mixture: {sorted(unknown)}")
    return [load_task(name, split, **options.get(name, {})) for name in tasks]


def train_mixture(cfg: SFTConfig) -> Mixture:
    """The training conversations: each task for its epochs, in one seeded shuffle."""
    tasks = load_mixture(cfg, cfg.train_split)
    return Mixture([(t, float(e)) for t, e in zip(tasks, cfg.tasks().values())], seed=cfg.seed)


def val_conversations(cfg: SFTConfig) -> list[dict[str, Any]]:
    """Held-out conversations: val_per_task of each task's held-out split (a seeded pick)."""
    out = []
    for t, task in enumerate(load_mixture(cfg, cfg.val_split)):
        order = np.random.default_rng([cfg.seed, t]).permutation(len(task))
        out += [task[int(i)] for i in sorted(order[: cfg.val_per_task])]
    return out


def conversation_lengths(
    tokenizer: Tokenizer, conversations: Sequence[Any], cache: Path | None = None, key: str = ""
) -> np.ndarray:
    """Tokens of each rendered conversation; cached in `cache` (an .npz) under `key`."""
    if cache is not None and cache.exists():
        with np.load(cache) as data:
            if str(data["key"]) == key and len(data["lengths"]) == len(conversations):
                return data["lengths"]
    lengths = np.array(
        [len(render_conversation(tokenizer, c)[0]) for c in conversations], dtype=np.int64
    )
    if cache is not None:
        cache.parent.mkdir(parents=True, exist_ok=True)
        tmp = cache.with_name(f".{cache.stem}.{os.getpid()}.tmp.npz")
        np.savez(tmp, lengths=lengths, key=np.array(key))
        tmp.replace(cache)
    return lengths


def _mixture_key(cfg: SFTConfig, tokenizer: Tokenizer) -> str:
    spec = [cfg.tasks(), cfg.task_options, cfg.train_split, cfg.seed, tokenizer.vocab_size]
    spec += [sha256_file(f) for f in sorted(Path(cfg.tokenizer_dir).glob("*")) if f.is_file()]
    return hashlib.sha256(json.dumps(spec, sort_keys=True, default=str).encode()).hexdigest()


def plan_sft(cfg: SFTConfig, tokenizer: Tokenizer, mixture: Mixture, world: int = 1) -> SFTPlan:
    """Pack the mixture, check the batch arithmetic and work out the horizon and the LRs."""
    meta = base_config(cfg.init_dir)
    base = meta.get("config", {})
    model_seq = int(meta["model"]["seq_len"])
    seq_len = cfg.seq_len or model_seq
    if seq_len > model_seq:
        raise TrainingError(
            f"seq_len={seq_len} is longer than the base model's context ({model_seq} tokens)"
        )
    batch_tokens = cfg.batch_tokens or int(base.get("batch_tokens") or 0)
    if batch_tokens <= 0:
        raise TrainingError("set batch_tokens: the base run's config does not name one")
    micro = micro_steps(batch_tokens, cfg.device_batch_size, seq_len, world)
    for name in ("lr_frac", "warmdown_ratio", "final_lr_frac"):
        value = getattr(cfg, name)
        if not (0 <= value and (name == "lr_frac" or value <= 1)):
            raise TrainingError(f"{name} must be in [0, 1] (lr_frac ≥ 0), got {value}")
    cache = Path(cfg.out_dir) / LENGTHS if cfg.out_dir else None
    lengths = conversation_lengths(tokenizer, mixture, cache, _mixture_key(cfg, tokenizer))
    packing = pack_rows(lengths, seq_len + 1, cfg.buffer_size)
    rows_per_step = batch_tokens // seq_len
    steps = cfg.num_steps or math.ceil(len(packing.rows) / rows_per_step)
    base_lrs = {k: float(base.get(k, v)) for k, v in DEFAULT_LRS.items()}
    return SFTPlan(
        seq_len=seq_len,
        batch_tokens=batch_tokens,
        rows_per_step=rows_per_step,
        micro_steps=micro,
        num_steps=max(int(steps), 1),
        conversations=len(mixture),
        packing=packing,
        lrs={k: v * cfg.lr_frac for k, v in base_lrs.items()},
        base_lrs=base_lrs,
    )


# ------------------------------------------------------------------------------------------------
# the batches


class ConversationSource:
    """SFT's batches for the shared loop: the packed rows of each step, weighted per token."""

    def __init__(
        self,
        tokenizer: Tokenizer,
        mixture: Mixture,
        p: SFTPlan,
        device_batch_size: int,
        device: str,
        wrap: bool,
    ) -> None:
        self.tokenizer, self.mixture, self.p, self.device = tokenizer, mixture, p, device
        self.device_batch_size, self.wrap = device_batch_size, wrap
        self.micro_steps = p.micro_steps
        self.rank, self.world = rank_info()
        self._step_metrics: dict[str, Any] = {}

    def row_plan(self, index: int) -> list[int]:
        """The conversations of row `index` of the run (an empty, all-padding row past the end
        of a one-pass run; the plan repeats when num_steps asks for more)."""
        rows = self.p.packing.rows
        if index < len(rows):
            return rows[index]
        return rows[index % len(rows)] if self.wrap else []

    def step_rows(self, step: int) -> list[list[int]]:
        """This rank's row plans for the step after `step`."""
        first = step * self.p.rows_per_step
        return [
            self.row_plan(first + j) for j in range(self.rank, self.p.rows_per_step, self.world)
        ]

    def batches(self, step: int, model: nn.Module) -> Iterator[Batch]:
        """Render this rank's rows, normalise the mask over the whole step, yield micro-batches."""
        cap, plans = self.p.packing.capacity, self.step_rows(step)
        rows = [render_row(self.tokenizer, [self.mixture[i] for i in p], cap) for p in plans]
        inputs, targets = rows_to_batch(rows)
        counts = torch.tensor(
            [float((targets != -1).sum()), float(sum(len(p) for p in plans))], dtype=torch.float64
        )
        if dist.is_initialized():
            counts = counts.to(self.device)
            dist.all_reduce(counts)
        n_targets, n_convs = counts.tolist()
        # × nproc because DDP averages gradients: any number of ranks takes one process's step
        norm = max(n_targets / self.world, 1e-9)
        weights = (targets != -1).float() / norm
        self._step_metrics = {"assistant_tokens": int(n_targets), "conversations": int(n_convs)}
        b, dev = self.device_batch_size, self.device
        for s in range(0, len(rows), b):
            yield inputs[s : s + b].to(dev), targets[s : s + b].to(dev), weights[s : s + b].to(dev)

    def metrics(self, loss: float, seconds: float) -> dict[str, Any]:
        """The step's mean loss per assistant token, its size and its speed."""
        return {
            "train_loss": loss,
            "step_s": seconds,
            **self._step_metrics,
            "tokens_per_s": self.p.batch_tokens / seconds,
        }

    def state_dict(self) -> dict[str, Any]:
        """Nothing beyond the step: a step's rows follow from its number."""
        return {"rows": len(self.p.packing.rows)}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Check the checkpoint was packed like this run."""
        if state.get("rows") != len(self.p.packing.rows):
            raise TrainingError(
                f"the checkpoint's run packed {state.get('rows')} rows, this one "
                f"{len(self.p.packing.rows)}: the mixture or the tokenizer changed; delete "
                "the SFT folder to train from scratch"
            )


@torch.no_grad()
def evaluate_loss(
    model: nn.Module,
    tokenizer: Tokenizer,
    conversations: Sequence[Any],
    seq_len: int,
    batch_size: int,
    buffer_size: int = 100,
) -> float:
    """Mean cross-entropy per assistant token of conversations, packed as in training."""
    rank, world = rank_info()
    device = next(model.parameters()).device
    cap = seq_len + 1
    lengths = [len(render_conversation(tokenizer, c)[0]) for c in conversations]
    plans = pack_rows(lengths, cap, buffer_size).rows[rank::world]
    nats = torch.zeros((), dtype=torch.float64, device=device)
    count = torch.zeros((), dtype=torch.float64, device=device)
    was_training = model.training
    model.eval()
    for s in range(0, len(plans), batch_size):
        rows = [
            render_row(tokenizer, [conversations[i] for i in p], cap)
            for p in plans[s : s + batch_size]
        ]
        x, y = rows_to_batch(rows)
        x, y = x.to(device), y.to(device)
        with autocast_context(device):
            loss = model(x, y, loss_reduction="none")
        nats += loss.double().sum()
        count += (y != -1).sum()
    model.train(was_training)
    if dist.is_initialized():
        for t in (nats, count):
            dist.all_reduce(t)
    return (nats / count.clamp(min=1)).item()


# ------------------------------------------------------------------------------------------------
# the stage


def _prepare(cfg: SFTConfig, world: int) -> tuple[Tokenizer, Mixture, SFTPlan]:
    """Checks that need no device: tokenizer, base checkpoint, tasks, packing, batch arithmetic."""
    base_config(cfg.init_dir)
    tokenizer = Tokenizer.load(cfg.tokenizer_dir)
    mixture = train_mixture(cfg)
    return tokenizer, mixture, plan_sft(cfg, tokenizer, mixture, world)


def train_sft(cfg: SFTConfig, *, progress: bool = True) -> dict[str, Any] | None:
    """Fine-tune (or resume, or just report) from the base checkpoint; rank 0 returns a summary."""
    rank, world = rank_info()
    device = rank_device(cfg.device)
    tokenizer, mixture, p = _prepare(cfg, world)
    held_out = val_conversations(cfg)
    model, init_meta = load_model(cfg.init_dir, device)
    model.train()
    torch.manual_seed(cfg.seed)
    optimizer = build_optimizer(model, weight_decay=0.0, **p.lrs)
    out = cfg.save_in_out_dir() if rank == 0 else Path(cfg.out_dir)
    source = ConversationSource(
        tokenizer, mixture, p, cfg.device_batch_size, device, wrap=cfg.num_steps is not None
    )

    def evaluate(step: int, model: nn.Module) -> dict[str, Any]:
        loss = evaluate_loss(
            model, tokenizer, held_out, p.seq_len, cfg.device_batch_size, cfg.buffer_size
        )
        return {"val_loss": loss}

    bf16 = cfg.bf16 if cfg.bf16 is not None else training_bf16(device)
    pk = p.packing
    headline = (
        f"{p.num_steps:,} steps × {p.rows_per_step} rows of {p.seq_len} tokens; "
        f"{p.conversations:,} conversations in {len(pk.rows):,} rows ({pk.fill:.0%} filled, "
        f"{pk.cropped} cropped); {world} rank(s) × {p.micro_steps} micro-steps of "
        f"{cfg.device_batch_size} rows; LRs " + ", ".join(f"{k} {v:.3g}" for k, v in p.lrs.items())
    )

    result = run_loop(
        out,
        {**asdict(cfg), **p.lrs},  # the peak LRs in meta.json: what the next stage scales
        NOT_TRAJECTORY,
        cfg.schedule(p.num_steps),
        model,
        optimizer,
        source,
        evaluate,
        device,
        model_meta=init_meta["model"],
        compile_model=cfg.compile,
        compile_key=verdict_key(model.config, cfg.device_batch_size, device, bf16),
        bf16=bf16,
        progress=progress,
        desc="SFT",
        headline=headline,
        postfix=("train_loss",),
    )
    if result is None:
        return None
    history = read_metrics(out)
    summary = {
        "step": result.step,
        "num_steps": p.num_steps,
        "seq_len": p.seq_len,
        "batch_tokens": p.batch_tokens,
        "conversations": p.conversations,
        "mixture": mixture.counts(),
        "rows": len(p.packing.rows),
        "cropped": p.packing.cropped,
        "fill": p.packing.fill,
        "lrs": p.lrs,
        "base_lrs": p.base_lrs,
        "val_conversations": len(held_out),
        "val_loss": result.last_eval.get("val_loss"),
        "train_loss": next((r["train_loss"] for r in reversed(history) if "train_loss" in r), None),
        **result.run_fields(device, world),
    }
    atomic_write_json(out / SUMMARY, summary)
    return summary


def launch_sft(cfg: SFTConfig, nproc: int = 1, *, progress: bool = True) -> dict[str, Any]:
    """SFT in this process (nproc = 1) or under torchrun on nproc ranks; return the summary."""
    # planning here also caches the conversations' lengths for the ranks
    return launch_stage(cfg, nproc, train_sft, _prepare, "nanolib.sft", "SFT", progress)


def main(argv: list[str] | None = None) -> None:
    """`python -m nanolib.sft --config <out_dir>/config.json`, alone or under torchrun."""
    stage_main(argv, SFTConfig, train_sft, "Supervised fine-tuning from a saved SFTConfig.")


if __name__ == "__main__":
    main()
