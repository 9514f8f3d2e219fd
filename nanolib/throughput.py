"""Throughput: the time of whole training steps on random tokens, for benches and planners.

`measure` builds a GPT of a given shape, feeds it random tokens and times full optimizer steps
(forward, backward, Muon + AdamW; bf16 autocast on CUDA, fp32 on CPU) after two warm-up steps,
eager or under torch.compile. `bench/train_throughput.py` prints it per preset; the sweep
planner (`nanolib.sweep.measure_flops_per_s`) turns it into achieved FLOP/s per depth.
"""

from __future__ import annotations

import time

import torch

from nanolib.device import autocast_context, sync
from nanolib.model import GPT, GPTConfig
from nanolib.optim import build_optimizer


def measure(
    model_config: GPTConfig, rows: int, device: str, steps: int = 5, compile_model: bool = False
) -> dict[str, float]:
    """Time `steps` optimizer steps of `rows` × seq_len random tokens after warm-up.

    Returns tokens_per_s and warmup_s (the two first steps, which compile and warm caches).
    Seeds torch with 0, so the random tokens and the model's initialisation are fixed.
    """
    torch.manual_seed(0)
    with torch.device(device):
        raw = GPT(model_config)
    opt = build_optimizer(raw)
    model = torch.compile(raw) if compile_model else raw
    shape = (rows, model_config.seq_len)
    x = torch.randint(0, model_config.vocab_size, shape, device=device)
    y = torch.randint(0, model_config.vocab_size, shape, device=device)

    def step() -> None:
        with autocast_context(device):
            loss = model(x, y)
        loss.backward()
        opt.step()
        opt.zero_grad(set_to_none=True)

    t0 = time.perf_counter()
    for _ in range(2):
        step()
    sync(device)
    warmup = time.perf_counter() - t0
    t0 = time.perf_counter()
    for _ in range(steps):
        step()
    sync(device)
    dt = (time.perf_counter() - t0) / steps
    return {"tokens_per_s": rows * model_config.seq_len / dt, "warmup_s": warmup}
