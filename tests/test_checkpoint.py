"""Checkpoints verify what they load: a cut, damaged or missing file is a clear error naming the
file and how to recover; a torn metrics line and a killed save's leftovers are handled."""

from __future__ import annotations

import json
from dataclasses import asdict
from pathlib import Path

import pytest
import torch

from nanolib.checkpoint import (
    META,
    METRICS,
    CheckpointError,
    checkpoint_files,
    load_checkpoint,
    load_model,
    read_metrics,
    save_checkpoint,
)
from nanolib.model import GPT, GPTConfig

CONFIG = GPTConfig(vocab_size=300, seq_len=16, n_layer=1, d_model=32, n_head=2)


@pytest.fixture
def ckpt(tmp_path, monkeypatch) -> Path:
    """A checkpoint of step 4 where chapter 03 keeps one at smoke."""
    monkeypatch.setenv("NANOBOOK_RUNS", str(tmp_path / "runs"))
    d = tmp_path / "runs/smoke/03_pretraining/checkpoint"
    torch.manual_seed(0)
    model = GPT(CONFIG)
    optimizer = torch.optim.AdamW(model.parameters())
    model(torch.zeros(1, 4, dtype=torch.long)).float().sum().backward()
    optimizer.step()
    save_checkpoint(d, 4, model, optimizer, {"model": asdict(CONFIG)})
    return d


FIX = r"delete .*checkpoint to train it from scratch, or re-run `nanobook run 03 --preset smoke"


def test_a_good_checkpoint_loads(ckpt):
    model, meta = load_model(ckpt)
    assert meta["step"] == 4 and set(meta["files"]) == {"model_000004.pt", "optim_000004.pt"}
    model_state, optim, _ = load_checkpoint(ckpt)
    assert "optimizer" in optim and "rng" in optim


def test_zeroed_bytes_are_caught(ckpt):
    model_path, _ = checkpoint_files(ckpt, 4)
    data = bytearray(model_path.read_bytes())
    data[-2000:-1744] = bytes(256)  # inside the weights: torch would load it without a word
    model_path.write_bytes(bytes(data))
    for load in (load_model, load_checkpoint):
        with pytest.raises(
            CheckpointError, match=f"model_000004.pt differs from the sha256.*{FIX}"
        ):
            load(ckpt)


def test_a_cut_file_is_caught(ckpt):
    model_path, optim_path = checkpoint_files(ckpt, 4)
    optim_path.write_bytes(optim_path.read_bytes()[:1000])
    with pytest.raises(CheckpointError, match=rf"optim_000004.pt holds 1,000 bytes.*{FIX}"):
        load_checkpoint(ckpt)


def test_a_missing_optimizer_file_is_named(ckpt):
    checkpoint_files(ckpt, 4)[1].unlink()
    with pytest.raises(CheckpointError, match=rf"optim_000004.pt is missing .*step 4.*{FIX}"):
        load_checkpoint(ckpt)
    load_model(ckpt)  # the weights alone are still usable for evaluation


def test_a_cut_file_without_recorded_hashes_is_named(ckpt):
    meta = json.loads((ckpt / META).read_text())
    del meta["files"]  # a checkpoint saved before hashes were recorded
    (ckpt / META).write_text(json.dumps(meta))
    model_path, _ = checkpoint_files(ckpt, 4)
    model_path.write_bytes(model_path.read_bytes()[:3000])
    with pytest.raises(CheckpointError, match=r"cannot read checkpoint file .*model_000004.pt"):
        load_model(ckpt)


def test_a_killed_saves_leftovers_are_cleaned(ckpt):
    (ckpt / ".optim_000008.pt.abc123.tmp").write_bytes(b"half")
    (ckpt / ".model_000008.pt.def456.tmp").write_bytes(b"half")
    model, _ = load_model(ckpt)
    save_checkpoint(
        ckpt, 8, model, torch.optim.AdamW(model.parameters()), {"model": asdict(CONFIG)}
    )
    assert sorted(p.name for p in ckpt.iterdir()) == [META, "model_000008.pt", "optim_000008.pt"]


def test_a_torn_last_metrics_line_is_skipped(tmp_path):
    lines = [json.dumps({"step": s, "train_loss": 1.0 / s}) for s in (1, 2, 3)]
    (tmp_path / METRICS).write_text("\n".join(lines) + "\n" + lines[0][:9])
    assert [r["step"] for r in read_metrics(tmp_path)] == [1, 2, 3]
    (tmp_path / METRICS).write_text(lines[0][:9] + "\n" + "\n".join(lines) + "\n")
    with pytest.raises(ValueError, match="metrics.jsonl line 1 is not JSON"):
        read_metrics(tmp_path)
