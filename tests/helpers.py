"""Small builders shared by several test modules (fixtures live in conftest.py)."""

from __future__ import annotations

from pathlib import Path

import torch
import torch.nn as nn

from nanolib.model import GPTConfig
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
