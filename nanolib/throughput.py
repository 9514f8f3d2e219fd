"""Throughput: the time of whole training steps on random tokens, for benches and planners.

A `Setup` says how a step runs: model eager or under torch.compile, Muon's matrices one by one
or batched by shape, Muon's update compiled or not, bf16 autocast or fp32. `measure` times one
setup (after two warm-up steps, which compile); `compare` times several side by side, one step
of each in turn, and reports medians — on a machine shared with other work a load that comes
and goes then slows every setup alike, and the ratios hold. `bench/train_throughput.py` prints
them per shape; the sweep planner (`nanolib.sweep.measure_flops_per_s`) turns `measure` into
achieved FLOP/s per depth.
"""

from __future__ import annotations

import statistics
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import torch

from nanolib.device import autocast_context, sync
from nanolib.model import GPT, GPTConfig
from nanolib.optim import build_optimizer


@dataclass(frozen=True)
class Setup:
    """How a training step runs; bf16 None: autocast on CUDA only."""

    compile_model: bool = False
    batched: bool = True  # Muon: same-shape matrices orthogonalised as one batch
    compile_optimizer: bool = False
    bf16: bool | None = None

    @property
    def label(self) -> str:
        """A short name, e.g. "compile, batched Muon (compiled)"."""
        muon = "batched Muon" if self.batched else "per-matrix Muon"
        parts = [
            "compile" if self.compile_model else "eager",
            muon + (" (compiled)" if self.compile_optimizer else ""),
        ]
        if self.bf16 is not None:
            parts.append("bf16" if self.bf16 else "fp32")
        return ", ".join(parts)


def training_step(
    model_config: GPTConfig, rows: int, device: str, setup: Setup = Setup()
) -> Callable[[], None]:
    """One optimizer step of `rows` × seq_len random tokens as a function (seeded with 0)."""
    torch.manual_seed(0)
    with torch.device(device):
        raw = GPT(model_config)
    opt = build_optimizer(raw, batched=setup.batched, compile=setup.compile_optimizer)
    model = torch.compile(raw) if setup.compile_model else raw
    shape = (rows, model_config.seq_len)
    x = torch.randint(0, model_config.vocab_size, shape, device=device)
    y = torch.randint(0, model_config.vocab_size, shape, device=device)

    def step() -> None:
        with autocast_context(device, setup.bf16):
            loss = model(x, y)
        loss.backward()
        opt.step()
        opt.zero_grad(set_to_none=True)

    return step


def _timed(step: Callable[[], None], device: str) -> float:
    t0 = time.perf_counter()
    step()
    sync(device)
    return time.perf_counter() - t0


def measure(
    model_config: GPTConfig,
    rows: int,
    device: str,
    steps: int = 5,
    compile_model: bool = False,
    setup: Setup | None = None,
) -> dict[str, float]:
    """Time `steps` optimizer steps of `rows` × seq_len random tokens after warm-up.

    Returns tokens_per_s and warmup_s (the two first steps, which compile and warm caches).
    `setup` (default: eager, or compiled with `compile_model`) says how the step runs.
    """
    setup = setup or Setup(compile_model=compile_model)
    step = training_step(model_config, rows, device, setup)
    warmup = _timed(step, device) + _timed(step, device)
    t0 = time.perf_counter()
    for _ in range(steps):
        step()
    sync(device)
    dt = (time.perf_counter() - t0) / steps
    return {"tokens_per_s": rows * model_config.seq_len / dt, "warmup_s": warmup}


def compare(
    model_config: GPTConfig, rows: int, device: str, setups: Sequence[Setup], rounds: int = 8
) -> dict[Setup, dict[str, float]]:
    """Median step time of each setup over `rounds` rounds of one step each, side by side.

    Returns per setup: step_s (the median), tokens_per_s, and warmup_s (its first two steps).
    """
    steps, warmup = {}, {}
    for setup in setups:
        steps[setup] = training_step(model_config, rows, device, setup)
        warmup[setup] = _timed(steps[setup], device) + _timed(steps[setup], device)
    times: dict[Setup, list[float]] = {setup: [] for setup in setups}
    for _ in range(rounds):
        for setup in setups:
            times[setup].append(_timed(steps[setup], device))
    tokens = rows * model_config.seq_len
    out = {}
    for setup in setups:
        step_s = statistics.median(times[setup])
        out[setup] = {"step_s": step_s, "tokens_per_s": tokens / step_s, "warmup_s": warmup[setup]}
    return out
