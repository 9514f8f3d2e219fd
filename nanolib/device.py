"""The device a run uses: which one, mixed precision, synchronisation, memory, peak FLOP/s, cost.

`pick_device` turns a preset's `device` into the one to use; `available_memory` and
`check_memory` say whether a run fits before it starts; `peak_flops` gives a measured MFU its
denominator, and `gpu_cost` turns FLOPs into GPU-hours and dollars at the assumptions of
book.yml's `cost:` block — the one place the book's cost estimates are computed.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from contextlib import AbstractContextManager, nullcontext
from pathlib import Path

import torch

from nanolib.config import DeviceCost, load_book

MEMORY_HEADROOM = 0.9  # plan to use at most this fraction of the memory a device has

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


def autocast_context(
    device: str | torch.device, bf16: bool | None = None
) -> AbstractContextManager:
    """bf16 autocast where `bf16` (None: on CUDA only); plain fp32 (a null context) elsewhere."""
    device = torch.device(device)
    if bf16 if bf16 is not None else device.type == "cuda":
        return torch.autocast(device_type=device.type, dtype=torch.bfloat16)
    return nullcontext()


def cpu_has_native_bf16() -> bool:
    """Whether this CPU multiplies bf16 natively (AVX-512 BF16 or AMX), from /proc/cpuinfo."""
    try:
        flags = Path("/proc/cpuinfo").read_text()
    except OSError:
        return False
    return bool(re.search(r"\b(avx512_bf16|amx_bf16)\b", flags))


def training_bf16(device: str | torch.device) -> bool:
    """Whether training autocasts to bf16 by default: on CUDA, and on CPUs with native bf16.

    Measured on an AVX-512 BF16 CPU at the `tiny` shape: ≈ 1.3× eager and ≈ 1.7× with
    torch.compile over fp32 (bench/train_throughput.py --bf16). Evaluations stay in fp32 on CPU.
    """
    device = torch.device(device)
    return device.type == "cuda" or (device.type == "cpu" and cpu_has_native_bf16())


def sync(device: str | torch.device) -> None:
    """Wait for queued GPU work to finish, so wall-clock timings are honest."""
    device = torch.device(device)
    if device.type == "cuda":
        torch.cuda.synchronize(device)


class InsufficientMemoryError(MemoryError):
    """A run at this batch size does not fit the device's memory; the message says what fits."""


def pick_device(wanted: str) -> str:
    """'cpu', 'cuda' or 'auto' → the device to use; asking for cuda without one is an error."""
    has_cuda = torch.cuda.is_available()
    if wanted == "auto":
        return "cuda" if has_cuda else "cpu"
    if wanted == "cuda" and not has_cuda:
        raise RuntimeError(
            "this preset needs a CUDA GPU but torch sees none; use --preset tiny on a CPU"
        )
    return wanted


def available_memory(device: str | torch.device) -> int:
    """Bytes a run may plan to use: a GPU's total memory, or the host's available RAM."""
    device = torch.device(device)
    if device.type == "cuda":
        return torch.cuda.get_device_properties(device).total_memory
    try:
        import psutil

        return psutil.virtual_memory().available
    except ImportError:
        meminfo = Path("/proc/meminfo").read_text()
        return int(re.search(r"MemAvailable:\s+(\d+) kB", meminfo).group(1)) * 1024


def check_memory(
    need: Callable[[int], int],
    batch_size: int,
    device: str,
    ranks_per_device: int = 1,
    what: str = "the model",
    capacity: int | None = None,
) -> int:
    """Bytes per rank `need(batch_size)`; raise InsufficientMemoryError with a batch that fits.

    `need` maps a per-rank batch size (rows) to the bytes it takes on one rank; `capacity` is the
    device's memory in bytes (None: measured with `available_memory`, so a plan can check a GPU
    it does not have).
    """
    total = available_memory(device) if capacity is None else capacity
    have = total * MEMORY_HEADROOM / ranks_per_device
    bytes_needed = need(batch_size)
    if bytes_needed <= have:
        return bytes_needed
    gib = 2**30
    smaller = batch_size // 2
    while smaller >= 1 and need(smaller) > have:
        smaller //= 2
    if smaller >= 1:
        fix = (
            f"set device_batch_size to {smaller} (≈ {need(smaller) / gib:.1f} GiB): batch_tokens "
            "stays the same through more gradient-accumulation steps"
        )
    else:
        fix = "even device_batch_size=1 does not fit: use a smaller depth or seq_len"
    raise InsufficientMemoryError(
        f"{what} needs ≈ {bytes_needed / gib:.1f} GiB per rank at device_batch_size={batch_size}, "
        f"but {device} offers ≈ {have / gib:.1f} GiB ({MEMORY_HEADROOM:.0%} of what it has); {fix}"
    )


def assumed_cost(kind: str = "cuda") -> DeviceCost:
    """book.yml's cost assumptions for a device kind (cuda: the GPU presets are planned on)."""
    return load_book().cost_of(kind)


def gpu_cost(flops: float, gpus: int = 1, cost: DeviceCost | None = None) -> dict[str, float]:
    """Wall-clock hours, device-hours and dollars to spend `flops` on `gpus` devices.

    At the achieved FLOP/s and price of `cost` (default: book.yml's `cost: cuda:`). Works
    elementwise when `flops` is an array.
    """
    cost = cost or assumed_cost("cuda")
    hours = flops / (gpus * cost.flops_per_s) / 3600
    return {
        "hours": hours,
        "gpu_hours": hours * gpus,
        "dollars": hours * gpus * cost.dollars_per_hour,
    }
