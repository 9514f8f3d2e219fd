"""Pretraining: the recipe, the plan (horizon, batch), the training loop, and its launcher.

`train(cfg)` is one straight loop: plan → checks → model and optimizer → resume if a checkpoint
is there → steps of gradient accumulation with a scheduled LR, periodic bits-per-byte on val,
checkpoints, metrics → samples. It runs in one process, or in each rank under torchrun
(`python -m nanolib.train --config <out_dir>/config.json`); `launch(cfg, nproc)` picks which.

Everything a run writes lives in `cfg.out_dir` (a chapter's `checkpoint` artifact):
`config.json`, `metrics.jsonl` (one JSON line per step), the checkpoint files of
`nanolib.checkpoint` (weights, optimizer and RNG states, and `meta.json` with the step, data
position and model shape) and `summary.json`. `recipe_for(book, preset)` is the pretraining
recipe a preset sets in book.yml, for every chapter and bench that trains "the book's model".
"""

from __future__ import annotations

import argparse
import json
import math
import os
import selectors
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from contextlib import nullcontext
from dataclasses import asdict, dataclass, fields, replace
from itertools import islice
from pathlib import Path
from typing import Any

import torch
import torch.distributed as dist

from nanolib.checkpoint import (
    CONFIG,
    META,
    METRICS,
    SUMMARY,
    load_checkpoint,
    read_metrics,
    restore_rng,
    save_checkpoint,
)
from nanolib.compiling import CompileTrial, read_verdict, use_inductor_cache, verdict_key
from nanolib.config import Book
from nanolib.data import TokenLoader, get_source, iter_texts
from nanolib.device import (
    autocast_context,
    check_memory,
    device_name,
    peak_flops,
    pick_device,
    sync,
)
from nanolib.engine import Engine
from nanolib.files import atomic_write_json, atomic_write_text, read_json
from nanolib.model import (
    GPT,
    GPTConfig,
    config_for_depth,
    estimate_memory,
    flops_per_token,
    scaling_params,
)
from nanolib.optim import build_optimizer
from nanolib.procs import die_with_parent
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


class TrainingError(RuntimeError):
    """A training run cannot start or failed; the message says why and what to change."""


@dataclass
class TrainConfig:
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
    bf16: bool | None = None  # bf16 autocast of the training steps; None: on CUDA only

    @classmethod
    def from_params(cls, params: dict[str, Any], **fixed: Any) -> TrainConfig:
        """A config from a chapter's resolved parameters; keys that are not fields are skipped."""
        names = {f.name for f in fields(cls)}
        return cls(**{k: v for k, v in params.items() if k in names}, **fixed)

    def save(self, path: str | Path) -> None:
        """Write the config as JSON, atomically."""
        atomic_write_json(path, asdict(self))

    @classmethod
    def load(cls, path: str | Path) -> TrainConfig:
        """Read a config written by `save`, naming any unknown key."""
        raw = read_json(path)
        known = {f.name for f in fields(cls)}
        unknown = set(raw) - known
        if unknown:
            raise ValueError(f"{path}: unknown key(s) {sorted(unknown)}; valid: {sorted(known)}")
        return cls(**raw)


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
    per_micro = cfg.device_batch_size * cfg.seq_len * world_size
    if cfg.batch_tokens % per_micro:
        raise TrainingError(
            f"batch_tokens={cfg.batch_tokens:,} is not a multiple of device_batch_size × seq_len "
            f"× nproc = {cfg.device_batch_size} × {cfg.seq_len} × {world_size} = {per_micro:,}; "
            "change batch_tokens or device_batch_size so that it divides"
        )
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
        grad_accum=cfg.batch_tokens // per_micro,
    )


def lr_multiplier(
    step: int, num_steps: int, warmup_steps: int, warmdown_ratio: float, final_lr_frac: float
) -> float:
    """LR factor for step (0-based): linear warmup to 1, flat, linear warmdown to final_lr_frac."""
    warmup = (step + 1) / warmup_steps if warmup_steps > 0 else 1.0
    warmdown_steps = round(warmdown_ratio * num_steps)
    left = num_steps - step  # steps still to take, this one included
    warmdown = 1.0
    if warmdown_steps > 0 and left <= warmdown_steps:
        frac = left / warmdown_steps
        warmdown = frac + (1 - frac) * final_lr_frac
    return min(warmup, warmdown, 1.0)


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


def _config_changes(old: dict, new: dict) -> list[str]:
    keys = (set(old) | set(new)) - NOT_TRAJECTORY
    return [
        f"{k}: {old.get(k)!r} → {new.get(k)!r}" for k in sorted(keys) if old.get(k) != new.get(k)
    ]


# ------------------------------------------------------------------------------------------------
# the loop


def _maybe_die(step: int, rank: int) -> None:
    """Test hook: NANOBOOK_TEST_DIE="step[:rank[:kill|raise]]" ends a rank after that step."""
    spec = os.environ.get("NANOBOOK_TEST_DIE")
    if not spec:
        return
    parts = spec.split(":")
    if int(parts[0]) != step or (len(parts) > 1 and int(parts[1]) != rank):
        return
    if len(parts) > 2 and parts[2] == "raise":
        raise RuntimeError(f"NANOBOOK_TEST_DIE: rank {rank} fails after step {step}")
    os.kill(os.getpid(), signal.SIGKILL)


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


def train(cfg: TrainConfig, *, progress: bool = True) -> dict[str, Any] | None:
    """Pretrain (or resume, or just report a finished run); rank 0 returns the run's summary.

    With `progress` rank 0 draws a progress bar; without, it prints plain lines (for a launcher
    or a sweep that shows progress itself).
    """
    ddp = dist.is_initialized()
    rank, world = (dist.get_rank(), dist.get_world_size()) if ddp else (0, 1)
    master = rank == 0
    device = pick_device(cfg.device)
    if device == "cuda":
        device = f"cuda:{int(os.environ.get('LOCAL_RANK', 0))}"
        torch.cuda.set_device(device)
        torch.set_float32_matmul_precision("high")

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

    out = Path(cfg.out_dir)
    resume = None
    if (out / META).exists():
        meta = read_json(out / META)
        changes = _config_changes(meta["config"], asdict(cfg))
        if not changes:
            resume = meta
        elif master:
            print(
                f"{out} holds a checkpoint of another configuration ({'; '.join(changes)}): "
                "training from scratch; it is replaced at the first checkpoint"
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
    step, wall_before, timed_tokens, timed_s = 0, 0.0, 0, 0.0
    val_bpb = None
    if resume:
        step, val_bpb = resume["step"], resume["val_bpb"]
        wall_before, timed_tokens, timed_s = (
            resume["wall_s"],
            resume["timed_tokens"],
            resume["timed_s"],
        )
        model_state, state, _ = load_checkpoint(out, device, step)
        raw.load_state_dict(model_state)
        optimizer.load_state_dict(state["optimizer"])
        restore_rng(state["rng"])
        train_loader.load_state_dict(resume["loader"])
    it = iter(train_loader)
    consumed = train_loader.state_dict()  # the data position after the last batch trained on
    x, y = next(it)  # reads and verifies the first train shard before anything is written
    position = train_loader.state_dict()
    bf16 = cfg.bf16 if cfg.bf16 is not None else "cuda" in device
    use_inductor_cache()
    key = verdict_key(p.model, cfg.device_batch_size, device, bf16)
    wanted = cfg.compile
    if ddp and wanted is None:  # the ranks must agree, so no trial: a stored verdict, else CUDA
        stored = read_verdict(key)
        wanted = bool(stored["pays"]) if stored else "cuda" in device
    trial = CompileTrial(key, p.num_steps - step, wanted)
    trial_note = trial.start()
    compiled = torch.compile(raw) if trial.compiled else None
    model = compiled or raw
    optimizer.use_compiled(trial.compiled)
    train_model = model
    if ddp:
        ids = [torch.device(device).index] if "cuda" in device else None
        train_model = torch.nn.parallel.DistributedDataParallel(model, device_ids=ids)

    metrics = None
    if master:
        out.mkdir(parents=True, exist_ok=True)
        cfg.save(out / CONFIG)
        kept = [r for r in read_metrics(out) if r["step"] <= step] if resume else []
        atomic_write_text(out / METRICS, "".join(json.dumps(r) + "\n" for r in kept))
        metrics = open(out / METRICS, "a")  # appended to, line by line, for the whole run
    token_bytes = torch.tensor(tokenizer.token_bytes(), dtype=torch.long, device=device)
    peak = peak_flops(device_name(device), torch.bfloat16 if "cuda" in device else torch.float32)
    from tqdm.auto import tqdm

    show_bar = master and progress
    bar = tqdm(
        total=p.num_steps, initial=step, desc="pretraining", unit="step", disable=not show_bar
    )
    say = bar.write if show_bar else (lambda s: print(s, flush=True))
    if master:
        say(
            f"{'resuming at step ' + str(step) if resume else 'starting'}: {p.num_steps:,} steps × "
            f"{cfg.batch_tokens:,} tokens = {p.tokens:,} tokens ({p.tokens_per_param:.2f} per "
            f"param, N = {p.num_params:,}), {p.flops:.3g} FLOPs; {world} rank(s) × "
            f"{p.grad_accum} micro-steps of {cfg.device_batch_size} × {cfg.seq_len} tokens"
            + (", bf16 autocast" if bf16 else "")
        )
        if trial_note:
            say(trial_note)

    t_start = time.perf_counter()
    first_step, record = step, {"step": step}
    while True:
        last = step == p.num_steps
        fresh = resume is None or step > first_step  # not the step the checkpoint already holds
        if fresh and (last or step == 0 or (cfg.eval_every and step % cfg.eval_every == 0)):
            val_bpb = evaluate_bpb(model, val(), token_bytes)
            record["val_bpb"] = val_bpb
            if master:
                say(f"step {step:,}/{p.num_steps:,} · val_bpb {val_bpb:.4f}")
        wall = wall_before + time.perf_counter() - t_start
        if master and fresh:
            tokens = step * cfg.batch_tokens
            record.update(tokens=tokens, flops=tokens * p.flops_per_token, wall_s=round(wall, 3))
            metrics.write(json.dumps(record) + "\n")
            metrics.flush()
        every = cfg.checkpoint_every
        if fresh and (last or (every and step % every == 0 and step > 0)):
            if master:
                meta = {
                    "config": asdict(cfg),
                    "model": asdict(p.model),
                    "num_steps": p.num_steps,
                    "loader": consumed,
                    "val_bpb": val_bpb,
                    "wall_s": wall,
                    "timed_tokens": timed_tokens,
                    "timed_s": timed_s,
                }
                save_checkpoint(out, step, raw, optimizer, meta)
            if ddp:
                dist.barrier()
        if fresh:
            _maybe_die(step, rank)
        if last:
            break

        lrm = lr_multiplier(
            step, p.num_steps, cfg.warmup_steps, cfg.warmdown_ratio, cfg.final_lr_frac
        )
        for group in optimizer.param_groups:
            group["lr"] = group["initial_lr"] * lrm
        sync(device)
        t0 = time.perf_counter()
        stats = torch.zeros(2, dtype=torch.float64, device=device)  # summed loss, target bytes
        for micro in range(p.grad_accum):
            skip_sync = ddp and micro < p.grad_accum - 1  # all-reduce gradients once per step
            with train_model.no_sync() if skip_sync else nullcontext():
                with autocast_context(device, bf16):
                    loss = train_model(x, y)
                (loss / p.grad_accum).backward()
            stats[0] += loss.detach().double()
            stats[1] += token_bytes[y].sum()
            consumed = position
            x, y = next(it)  # on a GPU this runs while the step's kernels are still queued
            position = train_loader.state_dict()
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
        if ddp:
            dist.all_reduce(stats)
        train_loss = stats[0].item() / (p.grad_accum * world)
        dt = time.perf_counter() - t0
        step += 1
        compiling = trial.compiled and trial.compile_s is None
        if step > 1 and not compiling:  # warm-up and compilation are not throughput
            timed_tokens, timed_s = timed_tokens + cfg.batch_tokens, timed_s + dt
        note = trial.record(dt)
        if note and master:
            say(note)
        if trial.compiled != optimizer.muon.compiled:  # the trial switched modes (no DDP here)
            compiled = compiled or torch.compile(raw)
            model = train_model = compiled if trial.compiled else raw
            optimizer.use_compiled(trial.compiled)
        tokens_per_s = cfg.batch_tokens / dt
        record = {
            "step": step,
            "train_loss": train_loss,
            # the loss includes the rare BOS targets (0 bytes), so this is bpb to within ≈0.1%
            "train_bpb": train_loss * cfg.batch_tokens / (math.log(2) * stats[1].item()),
            "lr": optimizer.param_groups[0]["lr"],
            "tokens_per_s": tokens_per_s,
            "mfu": p.flops_per_token * tokens_per_s / (peak * world) if peak else None,
        }
        bar.update(1)
        bar.set_postfix(loss=f"{train_loss:.3f}", tok_s=f"{tokens_per_s:,.0f}")
    bar.close()
    if not master:
        return None
    metrics.close()
    tokens_per_s = timed_tokens / timed_s if timed_s else None
    history = read_metrics(out)
    prompts = sample_prompts(cfg.data, cfg.num_samples)
    summary = {
        "step": step,
        "num_steps": p.num_steps,
        "tokens": p.tokens,
        "flops": p.flops,
        "num_params": p.num_params,
        "tokens_per_param": p.tokens_per_param,
        "val_bpb": val_bpb,
        "train_loss": next((r["train_loss"] for r in reversed(history) if "train_loss" in r), None),
        "tokens_per_s": tokens_per_s,
        "mfu": p.flops_per_token * tokens_per_s / (peak * world) if peak and tokens_per_s else None,
        "wall_s": wall_before + time.perf_counter() - t_start,
        "device": device_name(device),
        "world_size": world,
        "compiled": trial.compiled,  # torch.compile at the end of the run (model and Muon)
        "compile_s": trial.compile_s,  # the first compiled step, compilation included
        "bf16": bf16,
        "resumed_from": first_step if resume else None,
        "samples": sample_texts(raw, tokenizer, prompts, cfg.sample_tokens, cfg.seed),
    }
    atomic_write_json(out / SUMMARY, summary)
    return summary


# ------------------------------------------------------------------------------------------------
# launching: in-process, or torchrun for several ranks


def torchrun_command(config_path: str | Path, nproc: int, log_dir: str | Path) -> list[str]:
    """The torchrun command line that trains a saved config on nproc local ranks.

    The ranks draw no progress bar (`--no-progress`): the launcher follows metrics.jsonl instead.
    """
    exe = Path(sys.executable).with_name("torchrun")
    head = [str(exe)] if exe.exists() else [sys.executable, "-m", "torch.distributed.run"]
    return [
        *head,
        "--standalone",
        f"--nproc_per_node={nproc}",
        f"--log-dir={log_dir}",
        "--tee=3",  # every rank's output also goes to <log_dir>/<run>/attempt_0/<rank>/
        "--local-ranks-filter=0",  # the console (and so the notebook) shows rank 0 only
        "-m",
        "nanolib.train",
        "--config",
        str(config_path),
        "--no-progress",
    ]


def launch(cfg: TrainConfig, nproc: int = 1, *, progress: bool = True) -> dict[str, Any]:
    """Train in this process (nproc = 1) or under torchrun on nproc ranks; return the summary.

    With `progress` a progress bar follows the run; without, its lines are printed plainly.
    """
    if nproc == 1:
        return train(cfg, progress=progress)
    _, p = _prepare(cfg, nproc)  # fail here, in the notebook, on what can be checked here
    out = Path(cfg.out_dir)
    out.mkdir(parents=True, exist_ok=True)
    cfg.save(out / CONFIG)
    log_dir = Path(tempfile.mkdtemp(dir=out, prefix="torchrun-logs-"))
    cmd = torchrun_command(out / CONFIG, nproc, log_dir)
    print("$", " ".join(cmd), flush=True)
    env = {"OMP_WAIT_POLICY": "PASSIVE", **os.environ}
    env["PYTHONUNBUFFERED"] = "1"  # rank 0's lines reach the notebook as they are printed
    proc = subprocess.Popen(  # torchrun (and its ranks) stop when this process dies
        cmd,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        env=env,
        start_new_session=True,
        preexec_fn=die_with_parent,
    )
    from tqdm.auto import tqdm

    tail: list[str] = []  # torchrun's own lines, shown if a rank fails
    bar = tqdm(
        total=p.num_steps, desc=f"pretraining on {nproc} ranks", unit="step", disable=not progress
    )
    sel = selectors.DefaultSelector()
    sel.register(proc.stdout, selectors.EVENT_READ)
    try:
        while True:
            if sel.select(timeout=1.0):
                raw_line = proc.stdout.readline()
                if not raw_line:
                    break
                line = raw_line.decode(errors="replace").rstrip("\n")
                if line.startswith("[default0]:"):
                    bar.write(line[len("[default0]:") :])
                else:
                    tail = (tail + [line])[-40:]
            done = read_metrics(out)
            if done:
                bar.update(done[-1]["step"] - bar.n)
        rc = proc.wait()
    except BaseException:
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait()
        raise
    finally:
        bar.close()
        sel.close()
    if rc != 0:
        raise TrainingError(_rank_failure(log_dir, rc, tail))
    import shutil

    shutil.rmtree(log_dir, ignore_errors=True)
    return read_json(out / SUMMARY)


def _rank_failure(log_dir: Path, rc: int, tail: list[str]) -> str:
    """The message for a failed torchrun: which rank died first, and the end of its stderr."""
    ranks = []
    for rank_dir in log_dir.glob("*/attempt_*/*"):
        error = rank_dir / "error.json"
        stderr = rank_dir / "stderr.log"
        text = stderr.read_text(errors="replace") if stderr.exists() else ""
        when = error.stat().st_mtime if error.exists() else math.inf
        if error.exists() or "Traceback" in text:
            ranks.append((when, rank_dir.name, text))
    if not ranks:
        context = "\n".join(tail[-15:])
        return f"torchrun exited with status {rc} and no rank left a traceback:\n{context}"
    _, rank, text = min(ranks)
    lines = text.strip().splitlines()
    start = max((i for i, ln in enumerate(lines) if ln.startswith("Traceback")), default=0)
    return (
        f"rank {rank} failed (torchrun exit status {rc}); its error:\n"
        + "\n".join(lines[start:][-25:])
        + f"\n(all ranks' logs: {log_dir})"
    )


def main(argv: list[str] | None = None) -> None:
    """`python -m nanolib.train --config <out_dir>/config.json`, alone or under torchrun."""
    from torch.distributed.elastic.multiprocessing.errors import record

    ap = argparse.ArgumentParser(description="Pretrain a GPT from a saved TrainConfig.")
    ap.add_argument("--config", required=True, help="a config.json written by TrainConfig.save")
    ap.add_argument("--no-progress", action="store_true", help="plain lines, no progress bar")
    args = ap.parse_args(argv)
    cfg = TrainConfig.load(args.config)
    if int(os.environ.get("WORLD_SIZE", 1)) > 1:
        cuda = pick_device(cfg.device) == "cuda"
        if cuda:
            torch.cuda.set_device(int(os.environ["LOCAL_RANK"]))
        dist.init_process_group(backend="nccl" if cuda else "gloo")
    # on an exception torchrun gets the traceback in the rank's error file
    record(train)(cfg, progress=not args.no_progress)
    if dist.is_initialized():
        dist.barrier()  # without it a rank may tear down while another still talks (SIGABRT)
        dist.destroy_process_group()


if __name__ == "__main__":
    main()
