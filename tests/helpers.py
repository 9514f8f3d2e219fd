"""Small builders shared by several test modules (fixtures live in conftest.py)."""

from __future__ import annotations

from pathlib import Path

from nanolib.train import TrainConfig

# A model of ≈0.1M parameters on a 512-id vocabulary: a few milliseconds per training step.
# Eager: a compile trial (nanolib.compiling) would make a run's numbers depend on machine load.
TINY_RUN = dict(depth=1, head_dim=32, seq_len=64, eval_tokens=2048, device="cpu", compile=False)


def tiny_config(tokenizer_dir: str | Path, out_dir: str | Path = "", **kw) -> TrainConfig:
    """TINY_RUN with the given tokenizer and output folder; keywords override any field."""
    fields = {**TINY_RUN, **kw}
    return TrainConfig(out_dir=str(out_dir), tokenizer_dir=str(tokenizer_dir), **fields)


def parity_reward(record: dict, completion: str) -> float:
    """A reward an untrained model earns about half the time: 1 for an odd-length completion."""
    return float(len(completion) % 2)
