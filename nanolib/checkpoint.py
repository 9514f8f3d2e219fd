"""Checkpoints: a model's weights, its optimizer and RNG states, meta.json, and metrics reading.

A checkpoint directory (a chapter's `checkpoint` artifact, a sweep run, a miniseries member)
holds, for one step:

- `model_<step>.pt`: the model's state dict;
- `optim_<step>.pt`: `{"optimizer": state dict, "rng": python/numpy/torch/cuda RNG states}`;
- `meta.json` (`META`): at least `step` and `model` (the `GPTConfig` fields), plus whatever the
  writer adds (the training run adds its config, data position, val_bpb, timings). It is written
  last, so it is the commit point: a run killed mid-save still has its previous checkpoint;
- beside them a training run keeps `config.json`, `metrics.jsonl` and `summary.json`.

The API:

- `save_checkpoint(dir, step, model, optimizer, meta)` writes all three atomically and removes
  older steps' files;
- `load_model(dir, device="cpu", step=None) -> (model, meta)`: the GPT in eval mode on `device`;
- `load_checkpoint(dir, device="cpu", step=None) -> (model_state, optim_state, meta)`: raw
  states to resume training (`optim_state` holds "optimizer" and "rng"; `restore_rng` applies
  the latter);
- `read_meta(dir)`, `read_metrics(dir)` (the JSON lines of `metrics.jsonl`).

`step=None` means the step meta.json names; another step is an error that lists the ones there.
"""

from __future__ import annotations

import json
import random
from pathlib import Path
from typing import Any

import numpy as np
import torch

from nanolib.files import atomic_write, atomic_write_json, read_json
from nanolib.model import GPT, GPTConfig

CONFIG, METRICS, META, SUMMARY = "config.json", "metrics.jsonl", "meta.json", "summary.json"


def checkpoint_files(directory: str | Path, step: int) -> tuple[Path, Path]:
    """The weights file and the optimizer-state file of `step` in a checkpoint directory."""
    directory = Path(directory)
    return directory / f"model_{step:06d}.pt", directory / f"optim_{step:06d}.pt"


def rng_state() -> dict[str, Any]:
    """Python, NumPy, torch and (where present) CUDA RNG states, for `restore_rng`."""
    return {
        "python": random.getstate(),
        "numpy": np.random.get_state(),
        "torch": torch.get_rng_state(),
        "cuda": torch.cuda.get_rng_state_all() if torch.cuda.is_available() else None,
    }


def restore_rng(rng: dict[str, Any]) -> None:
    """Put back RNG states saved by `rng_state`."""
    random.setstate(rng["python"])
    np.random.set_state(rng["numpy"])
    torch.set_rng_state(rng["torch"])
    if rng.get("cuda") is not None and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(rng["cuda"])


def save_checkpoint(
    directory: str | Path, step: int, model: torch.nn.Module, optimizer: Any, meta: dict
) -> None:
    """Weights, optimizer + RNG, then meta.json (the commit point); older checkpoints go."""
    directory = Path(directory)
    model_path, optim_path = checkpoint_files(directory, step)
    atomic_write(model_path, lambda tmp: torch.save(model.state_dict(), tmp))
    state = {"optimizer": optimizer.state_dict(), "rng": rng_state()}
    atomic_write(optim_path, lambda tmp: torch.save(state, tmp))
    atomic_write_json(directory / META, {**meta, "step": step})
    for old in [*directory.glob("model_*.pt"), *directory.glob("optim_*.pt")]:
        if old not in (model_path, optim_path):
            old.unlink(missing_ok=True)


def read_meta(directory: str | Path) -> dict:
    """meta.json of a checkpoint directory; a clear error if there is no checkpoint."""
    directory = Path(directory)
    if not (directory / META).is_file():
        raise FileNotFoundError(
            f"no checkpoint in {directory} (no {META}): train one there first; a chapter's "
            "`checkpoint` artifact error names the chapter that makes it"
        )
    return read_json(directory / META)


def _step_files(directory: Path, meta: dict, step: int | None) -> tuple[int, Path, Path]:
    """The step to load and its files; an error listing the steps present if it is not there."""
    step = meta["step"] if step is None else step
    model_path, optim_path = checkpoint_files(directory, step)
    if not model_path.is_file():
        have = sorted(int(p.stem.split("_")[1]) for p in directory.glob("model_*.pt"))
        raise FileNotFoundError(f"{directory}: no checkpoint of step {step}; steps here: {have}")
    return step, model_path, optim_path


def load_checkpoint(
    directory: str | Path, device: str | torch.device = "cpu", step: int | None = None
) -> tuple[dict, dict | None, dict]:
    """(model state on `device`, optimizer + RNG state on the CPU or None, meta) of a step."""
    directory = Path(directory)
    meta = read_meta(directory)
    _, model_path, optim_path = _step_files(directory, meta, step)
    model_state = torch.load(model_path, map_location=device, weights_only=True)
    # to the CPU: RNG states must stay there; the optimizer moves its state to its parameters
    optim = None
    if optim_path.is_file():
        optim = torch.load(optim_path, map_location="cpu", weights_only=False)
    return model_state, optim, meta


def load_model(
    directory: str | Path, device: str | torch.device = "cpu", *, step: int | None = None
) -> tuple[GPT, dict]:
    """The GPT of a checkpoint directory (in eval mode, on `device`) and its meta.json."""
    directory = Path(directory)
    meta = read_meta(directory)
    _, model_path, _ = _step_files(directory, meta, step)
    model = GPT(GPTConfig(**meta["model"]))
    model.load_state_dict(torch.load(model_path, map_location=device, weights_only=True))
    return model.to(device).eval(), meta


def read_metrics(directory: str | Path) -> list[dict]:
    """The JSON lines of a run's metrics.jsonl (empty if there are none yet)."""
    path = Path(directory) / METRICS
    if not path.exists():
        return []
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]
