"""The device a run uses: mixed precision, synchronisation, memory and peak FLOP/s for MFU."""

from __future__ import annotations

from contextlib import AbstractContextManager, nullcontext

import torch

# Published dense (no 2:4 sparsity) tensor-core peaks in FLOP/s, from NVIDIA's datasheets.
# fp32 matmuls reach the tf32 peak only when torch allows TF32 (float32 matmul precision
# "high" or "medium"); otherwise they run on the much slower plain-fp32 units.
# Checked in order, so a more specific name ("h100 nvl") comes before its prefix ("h100").
PEAK_FLOPS: dict[str, dict[str, float]] = {
    "h100 nvl": {"bf16": 835e12, "tf32": 417.5e12, "fp32": 60e12},
    "h100 pcie": {"bf16": 756e12, "tf32": 378e12, "fp32": 51e12},
    "h100": {"bf16": 989e12, "tf32": 494.7e12, "fp32": 67e12},  # SXM
    "h200 nvl": {"bf16": 835e12, "tf32": 417.5e12, "fp32": 60e12},
    "h200": {"bf16": 989e12, "tf32": 494.7e12, "fp32": 67e12},  # SXM
    "a100": {"bf16": 312e12, "tf32": 156e12, "fp32": 19.5e12},
}


def peak_flops(device_name: str, dtype: torch.dtype = torch.bfloat16) -> float | None:
    """Published dense peak FLOP/s of a GPU for matmuls in dtype; None for CPUs and unknowns."""
    name = device_name.lower()
    if dtype in (torch.bfloat16, torch.float16):
        key = "bf16"
    elif dtype == torch.float32:
        key = "fp32" if torch.get_float32_matmul_precision() == "highest" else "tf32"
    else:
        return None
    for gpu, peaks in PEAK_FLOPS.items():
        if gpu in name:
            return peaks[key]
    return None


def device_name(device: str | torch.device) -> str:
    """A readable name of the device, e.g. "NVIDIA H100 80GB HBM3" or "cpu"."""
    device = torch.device(device)
    if device.type == "cuda":
        return torch.cuda.get_device_name(device)
    return device.type


def autocast_context(device: str | torch.device) -> AbstractContextManager:
    """bf16 autocast on CUDA; plain fp32 (a null context) elsewhere."""
    device = torch.device(device)
    if device.type == "cuda":
        return torch.autocast(device_type="cuda", dtype=torch.bfloat16)
    return nullcontext()


def sync(device: str | torch.device) -> None:
    """Wait for queued GPU work to finish, so wall-clock timings are honest."""
    device = torch.device(device)
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def memory_bytes(device: str | torch.device) -> int | None:
    """Total memory of a GPU in bytes; None for a CPU (shared with everything else)."""
    device = torch.device(device)
    if device.type == "cuda":
        return torch.cuda.get_device_properties(device).total_memory
    return None
