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
- `read_meta(dir)`, `read_metrics(dir)` (the JSON lines of `metrics.jsonl`; a torn last line,
  which a kill mid-write leaves, is skipped).

`step=None` means the step meta.json names; another step is an error that lists the ones there.
meta.json records the size and sha256 of both files (`files`); loading checks them, so a cut or
damaged file is a `CheckpointError` naming the file and how to make it again, never a model
with silently wrong weights.
"""

from __future__ import annotations

import json
import random
from pathlib import Path
from typing import Any

import numpy as np
import torch

from nanolib.files import atomic_write, atomic_write_json, read_json, sha256_file
from nanolib.model import GPT, GPTConfig
from nanolib.runs import remake_hint

CONFIG, METRICS, META, SUMMARY = "config.json", "metrics.jsonl", "meta.json", "summary.json"


class CheckpointError(ValueError):
    """A checkpoint file is missing, cut short or damaged; the message says how to recover."""


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
    files = {
        p.name: {"bytes": p.stat().st_size, "sha256": sha256_file(p)}
        for p in (model_path, optim_path)
    }
    atomic_write_json(directory / META, {**meta, "step": step, "files": files})
    for old in [*directory.glob("model_*.pt"), *directory.glob("optim_*.pt")]:
        if old not in (model_path, optim_path):
            old.unlink(missing_ok=True)
    for tmp in [*directory.glob(".model_*.tmp"), *directory.glob(".optim_*.tmp")]:
        tmp.unlink(missing_ok=True)  # what a run killed mid-save left


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


def _recovery(directory: Path) -> str:
    return f"delete {directory} to train it from scratch, or {remake_hint(directory)}"


def _load_verified(path: Path, meta: dict, *, weights_only: bool, device: Any) -> Any:
    """torch.load a checkpoint file after checking it against the size and sha256 in meta."""
    if not path.is_file():
        raise CheckpointError(
            f"checkpoint file {path} is missing (meta.json names step {meta['step']}); "
            f"{_recovery(path.parent)}"
        )
    recorded = (meta.get("files") or {}).get(path.name)
    if recorded is not None:
        size = path.stat().st_size
        if size != recorded["bytes"]:
            raise CheckpointError(
                f"checkpoint file {path} holds {size:,} bytes, meta.json recorded "
                f"{recorded['bytes']:,} (cut short); {_recovery(path.parent)}"
            )
        if sha256_file(path) != recorded["sha256"]:
            raise CheckpointError(
                f"checkpoint file {path} differs from the sha256 meta.json recorded (damaged); "
                f"{_recovery(path.parent)}"
            )
    try:
        return torch.load(path, map_location=device, weights_only=weights_only)
    except Exception as e:  # torch raises several kinds for a damaged file
        raise CheckpointError(
            f"cannot read checkpoint file {path} ({type(e).__name__}: {e}); "
            f"{_recovery(path.parent)}"
        ) from None


def load_checkpoint(
    directory: str | Path, device: str | torch.device = "cpu", step: int | None = None
) -> tuple[dict, dict, dict]:
    """(model state on `device`, optimizer + RNG state on the CPU, meta) of a step, verified."""
    directory = Path(directory)
    meta = read_meta(directory)
    step, model_path, optim_path = _step_files(directory, meta, step)
    meta = {**meta, "step": step}
    model_state = _load_verified(model_path, meta, weights_only=True, device=device)
    # to the CPU: RNG states must stay there; the optimizer moves its state to its parameters
    optim = _load_verified(optim_path, meta, weights_only=False, device="cpu")
    return model_state, optim, meta


def load_model(
    directory: str | Path, device: str | torch.device = "cpu", *, step: int | None = None
) -> tuple[GPT, dict]:
    """The GPT of a checkpoint directory (in eval mode, on `device`) and its meta.json."""
    directory = Path(directory)
    meta = read_meta(directory)
    step, model_path, _ = _step_files(directory, meta, step)
    model = GPT(GPTConfig(**meta["model"]))
    state = _load_verified(model_path, {**meta, "step": step}, weights_only=True, device=device)
    model.load_state_dict(state)
    return model.to(device).eval(), meta


def read_metrics(directory: str | Path) -> list[dict]:
    """The JSON lines of a run's metrics.jsonl (empty if there are none yet). A torn last line —
    what a kill mid-write leaves — is skipped; a damaged line before it is an error."""
    path = Path(directory) / METRICS
    if not path.exists():
        return []
    lines = [line for line in path.read_text().splitlines() if line.strip()]
    records = []
    for n, line in enumerate(lines, start=1):
        try:
            records.append(json.loads(line))
        except json.JSONDecodeError:
            if n == len(lines):
                break
            raise ValueError(
                f"{path} line {n} is not JSON (damaged); {remake_hint(path.parent)}"
            ) from None
    return records
