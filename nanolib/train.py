"""Pretraining: the recipe, the plan (horizon, batch), the training loop, and its launcher.

`train(cfg)`: plan → checks → model and optimizer → the shared loop of nanolib.loop (resume,
steps of gradient accumulation with a scheduled LR, periodic bits-per-byte on val, checkpoints,
metrics) fed by `TokenSource` → samples. It runs in one process, or in each rank under torchrun
(`python -m nanolib.train --config <out_dir>/config.json`); `launch(cfg, nproc)` picks which.

Everything a run writes lives in `cfg.out_dir` (a chapter's `checkpoint` artifact):
`config.json`, `metrics.jsonl` (one JSON line per step), the checkpoint files of
`nanolib.checkpoint` (weights, optimizer and RNG states, and `meta.json` with the step, data
position and model shape) and `summary.json`. `recipe_for(book, preset)` is the pretraining
recipe a preset sets in book.yml, for every chapter and bench that trains "the book's model".
"""

from __future__ import annotations

import math
import os
from collections.abc import Iterator
from dataclasses import asdict, dataclass, replace
from itertools import islice
from pathlib import Path
from typing import Any

import torch
import torch.distributed as dist

from nanolib.checkpoint import SUMMARY, read_metrics
from nanolib.compiling import verdict_key
from nanolib.config import Book
from nanolib.data import TokenLoader, get_source, iter_texts
from nanolib.device import (
    autocast_context,
    check_memory,
    device_name,
    peak_flops,
    training_bf16,
)
from nanolib.engine import Engine
from nanolib.files import atomic_write_json
from nanolib.loop import (
    Batch,
    StageConfig,
    TrainingError,
    launch_stage,
    lr_multiplier,  # noqa: F401 (chapter 03 draws the schedule from here)
    rank_device,
    rank_info,
    run_loop,
    stage_main,
    torchrun_command,  # noqa: F401 (chapter 03 prints the command from here)
)
from nanolib.model import (
    GPT,
    GPTConfig,
    config_for_depth,
    estimate_memory,
    flops_per_token,
    scaling_params,
)
from nanolib.optim import build_optimizer
from nanolib.tokenizer import Tokenizer

# Fields that change what is reported, not the trajectory: a checkpoint made with other values
# of these still resumes.
NOT_TRAJECTORY = {
    "out_dir",
    "tokenizer_dir",
    "eval_every",
    "eval_tokens",
    "checkpoint_every",
    "num_samples",
    "sample_tokens",
    "compile",
}


@dataclass
class TrainConfig(StageConfig):
    """Everything a pretraining run needs; written to `<out_dir>/config.json`."""

    out_dir: str
    tokenizer_dir: str
    data: str = "tiny"  # a text source of nanolib.data
    depth: int = 4  # the dial: sets width and heads (nanolib.model.config_for_depth)
    aspect_ratio: int = 64
    head_dim: int = 64
    kv_ratio: int = 1
    seq_len: int = 256
    batch_tokens: int = 16_384  # tokens per optimizer step, summed over ranks and micro-steps
    device_batch_size: int = 16  # rows per forward/backward on one rank
    # Horizon, first set wins: num_steps, else target_flops, else tokens_per_param × N.
    num_steps: int | None = None
    target_flops: float | None = None
    tokens_per_param: float | None = 12.0
    matrix_lr: float = 0.02
    embedding_lr: float = 0.3
    unembedding_lr: float = 0.008
    weight_decay: float = 0.0
    warmup_steps: int = 40
    warmdown_ratio: float = 0.65  # the last fraction of steps decays the LR linearly
    final_lr_frac: float = 0.05
    eval_every: int = 250  # steps between val evaluations (0: at the start and end only)
    eval_tokens: int = 1 << 20
    checkpoint_every: int = 0  # steps between checkpoints (0: at the end only)
    num_samples: int = 4
    sample_tokens: int = 64
    seed: int = 0
    device: str = "auto"  # cpu | cuda | auto
    compile: bool | None = None  # torch.compile of model and Muon; None: where measured to pay
    bf16: bool | None = None  # bf16 autocast of training steps; None: CUDA and native-bf16 CPUs


def recipe_for(book: Book, preset: str, **overrides: Any) -> TrainConfig:
    """The pretraining recipe a preset sets in book.yml (the `checkpoint` chapter's parameters).

    Output and tokenizer folders are empty unless given; `overrides` replace any field.
    """
    params = book.resolve(book.producer_of("checkpoint").slug, preset)
    base = TrainConfig.from_params(params, out_dir="", tokenizer_dir="")
    return replace(base, **overrides)


def vocab_size_for(book: Book, preset: str) -> int:
    """The vocabulary size the preset's tokenizer (the `tokenizer` artifact) is trained to."""
    return int(book.resolve(book.producer_of("tokenizer").slug, preset)["vocab_size"])


@dataclass(frozen=True)
class Plan:
    """What a config works out to: model shape, steps, tokens and FLOPs."""

    model: GPTConfig
    num_params: int  # N of the horizon: scaling_params(model, "matmul")
    flops_per_token: int
    num_steps: int
    tokens: int
    flops: float
    tokens_per_param: float
    grad_accum: int  # micro-steps per optimizer step on each rank


def plan(cfg: TrainConfig, vocab_size: int, world_size: int = 1) -> Plan:
    """Model from depth, horizon from num_steps / target_flops / tokens_per_param, accumulation."""
    model = config_for_depth(
        cfg.depth, vocab_size, cfg.seq_len, cfg.aspect_ratio, cfg.head_dim, cfg.kv_ratio
    )
    n = scaling_params(model, "matmul")
    fpt = flops_per_token(model)
    grad_accum = micro_steps(cfg.batch_tokens, cfg.device_batch_size, cfg.seq_len, world_size)
    if cfg.num_steps is not None:
        steps = cfg.num_steps
    elif cfg.target_flops is not None:
        steps = round(cfg.target_flops / (fpt * cfg.batch_tokens))
    elif cfg.tokens_per_param is not None:
        steps = round(cfg.tokens_per_param * n / cfg.batch_tokens)
    else:
        raise TrainingError("set one of num_steps, target_flops or tokens_per_param")
    steps = max(steps, 1)
    tokens = steps * cfg.batch_tokens
    return Plan(
        model=model,
        num_params=n,
        flops_per_token=fpt,
        num_steps=steps,
        tokens=tokens,
        flops=float(fpt) * tokens,
        tokens_per_param=tokens / n,
        grad_accum=grad_accum,
    )


def micro_steps(batch_tokens: int, device_batch_size: int, seq_len: int, world_size: int) -> int:
    """Micro-batches per optimizer step on each rank; TrainingError if the batch does not divide."""
    per_micro = device_batch_size * seq_len * world_size
    if batch_tokens % per_micro:
        raise TrainingError(
            f"batch_tokens={batch_tokens:,} is not a multiple of device_batch_size × seq_len × "
            f"nproc = {device_batch_size} × {seq_len} × {world_size} = {per_micro:,}; change "
            "batch_tokens or device_batch_size so that it divides"
        )
    return batch_tokens // per_micro


# ------------------------------------------------------------------------------------------------
# evaluation and sampling


def val_batches(
    tokenizer: Tokenizer, cfg: TrainConfig, rank: int = 0, world_size: int = 1, device: str = "cpu"
) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
    """The rows every evaluation reads: the val split's first eval_tokens, this rank's share."""
    loader = TokenLoader(
        tokenizer,
        cfg.data,
        "val",
        cfg.device_batch_size,
        cfg.seq_len,
        rank=rank,
        world_size=world_size,
        device=device,
        infinite=False,
    )
    left = max(cfg.eval_tokens // (cfg.seq_len * world_size), 1)  # rows this rank still reads
    for x, y in loader:
        if left <= 0:
            return
        yield x[:left], y[:left]
        left -= len(x)


@torch.no_grad()
def evaluate_bpb(model: torch.nn.Module, batches: Any, token_bytes: torch.Tensor) -> float:
    """Bits per byte: summed nats of the targets / (ln 2 × their UTF-8 bytes), over all ranks.

    Targets with no bytes (special tokens such as BOS) count in neither sum, so the number does
    not depend on the tokenizer: any two models of the same text compare.
    """
    device = token_bytes.device
    nats = torch.zeros((), dtype=torch.float64, device=device)
    n_bytes = torch.zeros((), dtype=torch.float64, device=device)
    was_training = model.training
    model.eval()
    for x, y in batches:
        with autocast_context(device):
            loss = model(x, y, loss_reduction="none")
        b = token_bytes[y]
        nats += (loss.double() * (b > 0)).sum()
        n_bytes += b.sum()
    model.train(was_training)
    if dist.is_initialized():
        for t in (nats, n_bytes):
            dist.all_reduce(t)
    return (nats / (math.log(2) * n_bytes)).item()


@torch.no_grad()
def sample_texts(
    model: GPT,
    tokenizer: Tokenizer,
    prompts: list[str],
    max_new_tokens: int,
    seed: int = 0,
    temperature: float = 0.8,
    top_k: int = 50,
) -> list[dict[str, str]]:
    """Continue each prompt (after a BOS) with sampled tokens, until a <|bos|> (a new document)
    or max_new_tokens or the model's context is full; prompt and completion as text."""
    engine = Engine(model, tokenizer, tools={})  # plain text: no tool is ever run
    out = []
    for i, prompt in enumerate(prompts):
        ids = tokenizer.encode(prompt, prepend=tokenizer.bos_id)
        room = min(max_new_tokens, model.config.seq_len - len(ids))
        gen = engine.generate(
            ids, 1, room, temperature, top_k, seed=seed + i, stop_tokens=[tokenizer.bos_id]
        )
        tokens = gen.tokens[0][:-1] if gen.stopped[0] else gen.tokens[0]
        out.append({"prompt": prompt, "completion": tokenizer.decode(tokens)})
    return out


def sample_prompts(source: str, n: int, words: int = 8, pool: int = 200) -> list[str]:
    """A few words from the middle of n val documents spread over the first `pool`: unseen text."""
    docs = list(islice(iter_texts(source, "val"), pool))
    picks = [round(j * (len(docs) - 1) / max(n - 1, 1)) for j in range(n)] if docs else []
    prompts = []
    for i in picks:
        split = docs[i].split()
        prompts.append(" ".join(split[len(split) // 2 : len(split) // 2 + words]))
    return prompts


def _prepare(cfg: TrainConfig, world_size: int) -> tuple[Tokenizer, Plan]:
    """Checks that need no device: the tokenizer artifact, the plan, the data source."""
    tokenizer = Tokenizer.load(cfg.tokenizer_dir)
    get_source(cfg.data)
    return tokenizer, plan(cfg, tokenizer.vocab_size, world_size)


def _check_memory(cfg: TrainConfig, model: GPTConfig, device: str, ranks_per_device: int) -> int:
    """Estimated bytes per rank; InsufficientMemoryError naming a device_batch_size that fits."""
    dtype = torch.bfloat16 if torch.device(device).type == "cuda" else torch.float32
    return check_memory(
        lambda rows: estimate_memory(model, rows, dtype),
        cfg.device_batch_size,
        device,
        ranks_per_device,
        what=f"the model (n_layer={model.n_layer}, d_model={model.d_model}, "
        f"seq_len={model.seq_len})",
    )


class TokenSource:
    """Pretraining's batches for the shared loop: packed rows of the train split, mean loss.

    One batch is read ahead (on a GPU while the step's kernels still run); the position saved
    with a checkpoint is the one after the last batch trained on.
    """

    def __init__(
        self,
        loader: TokenLoader,
        micro_steps: int,
        token_bytes: torch.Tensor,
        batch_tokens: int,
        flops_per_token: int,
        peak: float | None,
    ) -> None:
        self.loader, self.micro_steps, self.token_bytes = loader, micro_steps, token_bytes
        self.batch_tokens, self.flops_per_token, self.peak = batch_tokens, flops_per_token, peak
        self.target_bytes = torch.zeros((), dtype=torch.float64, device=token_bytes.device)
        self._start()  # reads and verifies the first train shard before anything is written

    def _start(self) -> None:
        self.it = iter(self.loader)
        self.consumed = self.loader.state_dict()
        self.pending = next(self.it)
        self.position = self.loader.state_dict()

    def batches(self, step: int, model: torch.nn.Module) -> Iterator[Batch]:
        """grad_accum micro-batches of (inputs, targets), no weights: the mean cross-entropy."""
        self.target_bytes.zero_()
        for _ in range(self.micro_steps):
            x, y = self.pending
            self.target_bytes += self.token_bytes[y].sum()
            yield x, y, None
            self.consumed = self.position
            self.pending = next(self.it)
            self.position = self.loader.state_dict()

    def metrics(self, loss: float, seconds: float) -> dict[str, Any]:
        """Train loss and bits per byte, tokens/s and MFU of the step just taken."""
        target_bytes = self.target_bytes.clone()
        if dist.is_initialized():
            dist.all_reduce(target_bytes)
        tokens_per_s = self.batch_tokens / seconds
        return {
            "train_loss": loss,
            # the loss includes the rare BOS targets (0 bytes), so this is bpb to within ≈0.1%
            "train_bpb": loss * self.batch_tokens / (math.log(2) * target_bytes.item()),
            "tokens_per_s": tokens_per_s,
            "mfu": self.flops_per_token * tokens_per_s / self.peak if self.peak else None,
        }

    def state_dict(self) -> dict[str, Any]:
        """The data position after the last batch trained on."""
        return self.consumed

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Restart reading at a saved position."""
        self.loader.load_state_dict(state)
        self._start()


def train(cfg: TrainConfig, *, progress: bool = True) -> dict[str, Any] | None:
    """Pretrain (or resume, or just report a finished run); rank 0 returns the run's summary.

    With `progress` rank 0 draws a progress bar; without, it prints plain lines (for a launcher
    or a sweep that shows progress itself).
    """
    rank, world = rank_info()
    device = rank_device(cfg.device)

    # Checks first: bad input fails here, before anything in out_dir is touched.
    tokenizer, p = _prepare(cfg, world)
    ranks_here = 1 if "cuda" in device else int(os.environ.get("LOCAL_WORLD_SIZE", world))
    _check_memory(cfg, p.model, device, ranks_here)
    train_loader = TokenLoader(
        tokenizer,
        cfg.data,
        "train",
        cfg.device_batch_size,
        cfg.seq_len,
        rank=rank,
        world_size=world,
        device=device,
    )

    def val() -> Any:
        return val_batches(tokenizer, cfg, rank, world, device)

    next(iter(val()))  # reads and verifies the val shard now, not at the first eval
    token_bytes = torch.tensor(tokenizer.token_bytes(), dtype=torch.long, device=device)
    peak = peak_flops(device_name(device), torch.bfloat16 if "cuda" in device else torch.float32)
    source = TokenSource(
        train_loader,
        p.grad_accum,
        token_bytes,
        cfg.batch_tokens,
        p.flops_per_token,
        peak * world if peak else None,
    )

    torch.manual_seed(cfg.seed)
    with torch.device(device):
        raw = GPT(p.model)
    optimizer = build_optimizer(
        raw,
        matrix_lr=cfg.matrix_lr,
        embedding_lr=cfg.embedding_lr,
        unembedding_lr=cfg.unembedding_lr,
        weight_decay=cfg.weight_decay,
    )
    out = cfg.save_in_out_dir() if rank == 0 else Path(cfg.out_dir)

    headline = (
        f"{p.num_steps:,} steps × {cfg.batch_tokens:,} tokens = {p.tokens:,} tokens "
        f"({p.tokens_per_param:.2f} per param, N = {p.num_params:,}), {p.flops:.3g} FLOPs; "
        f"{world} rank(s) × {p.grad_accum} micro-steps of {cfg.device_batch_size} × "
        f"{cfg.seq_len} tokens"
    )

    bf16 = cfg.bf16 if cfg.bf16 is not None else training_bf16(device)

    def tokens_so_far(step: int) -> dict[str, Any]:
        tokens = step * cfg.batch_tokens
        return {"tokens": tokens, "flops": tokens * p.flops_per_token}

    result = run_loop(
        out,
        asdict(cfg),
        NOT_TRAJECTORY,
        cfg.schedule(p.num_steps),
        raw,
        optimizer,
        source,
        lambda step, model: {"val_bpb": evaluate_bpb(model, val(), token_bytes)},
        device,
        model_meta=asdict(p.model),
        compile_model=cfg.compile,
        compile_key=verdict_key(p.model, cfg.device_batch_size, device, bf16),
        bf16=bf16,
        progress=progress,
        desc="pretraining",
        headline=headline,
        postfix=("train_loss", "tokens_per_s"),
        step_fields=tokens_so_far,
    )
    if result is None:
        return None
    timed_tokens = cfg.batch_tokens * result.timed_steps
    tokens_per_s = timed_tokens / result.timed_s if result.timed_s else None
    history = read_metrics(out)
    prompts = sample_prompts(cfg.data, cfg.num_samples)
    summary = {
        "step": result.step,
        "num_steps": p.num_steps,
        "tokens": p.tokens,
        "flops": p.flops,
        "num_params": p.num_params,
        "tokens_per_param": p.tokens_per_param,
        "val_bpb": result.last_eval.get("val_bpb"),
        "train_loss": next((r["train_loss"] for r in reversed(history) if "train_loss" in r), None),
        "tokens_per_s": tokens_per_s,
        "mfu": p.flops_per_token * tokens_per_s / (peak * world) if peak and tokens_per_s else None,
        "wall_s": result.wall_s,
        "device": device_name(device),
        "world_size": world,
        "compiled": result.compiled,
        "compile_s": result.compile_s,
        "bf16": bf16,
        "resumed_from": result.resumed_from,
        "samples": sample_texts(raw, tokenizer, prompts, cfg.sample_tokens, cfg.seed),
    }
    atomic_write_json(out / SUMMARY, summary)
    return summary


# ------------------------------------------------------------------------------------------------
# launching: in-process, or torchrun for several ranks


def launch(cfg: TrainConfig, nproc: int = 1, *, progress: bool = True) -> dict[str, Any]:
    """Train in this process (nproc = 1) or under torchrun on nproc ranks; return the summary.

    With `progress` a progress bar follows the run; without, its lines are printed plainly.
    """
    return launch_stage(cfg, nproc, train, _prepare, "nanolib.train", "pretraining", progress)


def main(argv: list[str] | None = None) -> None:
    """`python -m nanolib.train --config <out_dir>/config.json`, alone or under torchrun."""
    stage_main(argv, TrainConfig, train, "Pretrain a GPT from a saved TrainConfig.")


if __name__ == "__main__":
    main()
