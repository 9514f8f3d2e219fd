"""Small builders shared by several test modules (fixtures live in conftest.py)."""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Iterable
from pathlib import Path
from typing import Any

import pytest
import torch
import torch.nn as nn

from nanolib.config import book_root
from nanolib.model import GPTConfig
from nanolib.train import TrainConfig

# Every stage's test run is eager fp32 on the CPU: a compile trial (nanolib.compiling) or bf16
# would make its numbers depend on the machine, and the tests compare resumes and ranks tightly.
EXACT_CPU = dict(device="cpu", compile=False, bf16=False)
# A model of ≈0.1M parameters on a 512-id vocabulary: a few milliseconds per training step.
TINY_RUN = dict(depth=1, head_dim=32, seq_len=64, eval_tokens=2048, **EXACT_CPU)


def tiny_config(tokenizer_dir: str | Path, out_dir: str | Path = "", **kw) -> TrainConfig:
    """TINY_RUN with the given tokenizer and output folder; keywords override any field."""
    fields = {**TINY_RUN, **kw}
    return TrainConfig(out_dir=str(out_dir), tokenizer_dir=str(tokenizer_dir), **fields)


def stage_env(**extra: str) -> dict[str, str]:
    """A stage process's environment: one thread, as torchrun gives each rank (so a 1-process run
    matches the ranks' numbers), and tests/ importable (the ranks load test rewards from it)."""
    path = os.pathsep.join([str(book_root()), str(book_root() / "tests")])
    return {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": path, **extra}


def run_stage_module(
    module: str, cfg: Any, timeout: float = 600, progress: bool = False, **env: str
) -> subprocess.CompletedProcess:
    """`python -m <module> --config <out_dir>/config.json` in a fresh process, as torchrun starts
    a rank; env adds variables (e.g. NANOBOOK_TEST_DIE)."""
    path = cfg.save_in_out_dir() / "config.json"
    cmd = [sys.executable, "-m", module, "--config", str(path)]
    cmd += [] if progress else ["--no-progress"]
    return subprocess.run(
        cmd, env=stage_env(**env), capture_output=True, text=True, timeout=timeout
    )


def metrics_without(out_dir: str | Path, drop: Iterable[str]) -> list[dict]:
    """A run's metrics lines without the given (timing) fields."""
    from nanolib.checkpoint import read_metrics

    drop = set(drop)
    return [{k: v for k, v in r.items() if k not in drop} for r in read_metrics(out_dir)]


def assert_same_metrics(a: list[dict], b: list[dict], tol: float) -> None:
    """Two runs logged the same steps and fields, floats equal within tol."""
    assert [r["step"] for r in a] == [r["step"] for r in b]
    for ra, rb in zip(a, b):
        assert set(ra) == set(rb), ra["step"]
        for k, v in ra.items():
            if isinstance(v, float):
                assert v == pytest.approx(rb[k], abs=tol), (ra["step"], k)
            else:
                assert v == rb[k], (ra["step"], k)


def parity_reward(record: dict, completion: str) -> float:
    """A reward an untrained model earns about half the time: 1 for an odd-length completion."""
    return float(len(completion) % 2)


def save_model_run(runs: Path, slug: str, artifact: str, model, preset: str = "smoke") -> Path:
    """Save a model as the named checkpoint artifact of a successful run runs/<preset>/<slug>."""
    import json
    from dataclasses import asdict

    from nanolib.checkpoint import save_checkpoint

    d = runs / preset / slug
    optimizer = torch.optim.SGD(model.parameters(), lr=0.0)
    save_checkpoint(d / artifact, 1, model, optimizer, {"model": asdict(model.config)})
    (d / "manifest.json").write_text(json.dumps({"status": "ok", "chapter": slug}))
    return d / artifact


def make_chat_runs(runs: Path, tokenizer_dir: Path, preset: str = "smoke", seq_len: int = 64):
    """runs/<preset> holding a tokenizer (chapter 01) and a random base model (chapter 03)."""
    import json
    import shutil

    from nanolib.model import GPT
    from nanolib.tokenizer import Tokenizer

    tok_run = runs / preset / "01_tokenizer"
    shutil.copytree(tokenizer_dir, tok_run / "tokenizer", dirs_exist_ok=True)
    (tok_run / "manifest.json").write_text(json.dumps({"status": "ok", "chapter": "01_tokenizer"}))
    vocab = Tokenizer.load(tokenizer_dir).vocab_size
    torch.manual_seed(0)
    config = GPTConfig(vocab_size=vocab, seq_len=seq_len, n_layer=1, d_model=32, n_head=1)
    return save_model_run(runs, "03_pretraining", "checkpoint", GPT(config).eval(), preset)


class Typist(nn.Module):
    """A stand-in GPT that writes a fixed list of tokens after any prompt, by position (so tokens
    may repeat); a tool's forced output must sit in the script where the engine will force it."""

    def __init__(self, vocab: int, script: list[int], seq_len: int = 256) -> None:
        super().__init__()
        self.config = GPTConfig(vocab_size=vocab, seq_len=seq_len, n_layer=1, d_model=8, n_head=1)
        self.anchor = nn.Parameter(torch.zeros(()))  # gives the engine a device and dtype
        self.script, self.prompt_len = list(script), 0

    def forward(self, idx: torch.Tensor, kv_cache=None) -> torch.Tensor:
        B, T = idx.shape
        if kv_cache.pos == 0:
            self.prompt_len = T
        j = min(kv_cache.pos + T - self.prompt_len, len(self.script) - 1)
        logits = torch.full((B, T, self.config.vocab_size), -30.0)
        logits[:, -1, self.script[j]] = 10.0
        kv_cache.advance(T)
        return logits
