"""Whether torch.compile pays for a training run: measured on the run itself, remembered.

Compiling makes each step faster by some factor and costs a one-off compilation (tens of
seconds cold on a CPU). Whether that pays depends on the machine, the model's shape and the
run's length, so it is measured, not guessed from the device name: a `CompileTrial` times a few
eager steps of the run, compiles, times a few compiled steps, and keeps the faster mode for the
rest. The verdict is stored per (machine, torch, threads, shape, precision) under
`runs/.cache/compile/`, so the next run of that shape decides at once, and inductor's own cache
lives beside it (`runs/.cache/inductor/`), so a re-run compiles warm.
"""

from __future__ import annotations

import hashlib
import json
import os
import platform
import statistics
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import torch

from nanolib.files import atomic_write_json, read_json
from nanolib.model import GPTConfig
from nanolib.runs import runs_root

TRIAL_STEPS = 4  # timed steps per mode (after one warm-up step each)
GUESSED_COMPILE_S = 60.0  # assumed for a first compile before any was measured here
MIN_SPEEDUP = 1.03  # compiled must beat eager by this factor to be kept


def cache_root() -> Path:
    """`runs/.cache/`: what speeds up re-runs and is safe to delete."""
    return runs_root() / ".cache"


def use_inductor_cache() -> Path:
    """Point inductor's on-disk cache at `runs/.cache/inductor/` (unless set already)."""
    # torch reads the cache's place only from this variable; ranks and compile workers inherit it
    os.environ.setdefault("TORCHINDUCTOR_CACHE_DIR", str(cache_root() / "inductor"))
    return Path(os.environ["TORCHINDUCTOR_CACHE_DIR"])


def _machine(device: str) -> str:
    if "cuda" in device:
        return torch.cuda.get_device_name(torch.device(device))
    cpu = (
        next(
            (
                line.split(":", 1)[1].strip()
                for line in Path("/proc/cpuinfo").read_text().splitlines()
                if line.startswith("model name")
            ),
            platform.processor(),
        )
        if Path("/proc/cpuinfo").exists()
        else platform.processor()
    )
    return f"{cpu}, {torch.get_num_threads()} threads"


def verdict_key(model: GPTConfig, rows: int, device: str, bf16: bool) -> dict[str, Any]:
    """What a verdict depends on: the machine, torch, the step's shape and precision."""
    return {
        "machine": _machine(device),
        "torch": torch.__version__,
        "model": asdict(model),
        "rows": rows,
        "bf16": bf16,
    }


def _verdict_path(key: dict[str, Any]) -> Path:
    digest = hashlib.sha256(json.dumps(key, sort_keys=True).encode()).hexdigest()[:16]
    return cache_root() / "compile" / f"{digest}.json"


def read_verdict(key: dict[str, Any]) -> dict[str, Any] | None:
    """The stored measurement for `key` (eager_s, compiled_s, compile_s, pays), or None."""
    path = _verdict_path(key)
    try:
        verdict = read_json(path)
    except (OSError, ValueError):
        return None
    return verdict if verdict.get("key") == key else None


def known_compile_s() -> float:
    """The median first-compile cost measured on this machine so far (a guess if none)."""
    costs = []
    for path in (cache_root() / "compile").glob("*.json"):
        try:
            costs.append(float(read_json(path)["compile_s"]))
        except (OSError, ValueError, KeyError, TypeError):
            continue
    return statistics.median(costs) if costs else GUESSED_COMPILE_S


@dataclass
class CompileTrial:
    """Decides eager or compiled for one run from its own first steps (see the module doc).

    `wanted` True/False forces a mode; None measures (or reuses a stored verdict). Feed every
    optimizer step's seconds to `record`; it returns a message when the mode changes or the
    verdict is in, and `compiled` says the mode for the next step.
    """

    key: dict[str, Any]
    remaining_steps: int
    wanted: bool | None = None
    compiled: bool = False
    decided: bool = False
    eager_s: list[float] = field(default_factory=list)
    compiled_s: list[float] = field(default_factory=list)
    compile_s: float | None = None

    def start(self) -> str | None:
        """The mode of the first step, and a line saying why (None: nothing to say)."""
        if self.wanted is not None:
            self.compiled, self.decided = self.wanted, True
            return None
        stored = read_verdict(self.key)
        if stored is not None:
            self.compiled, self.decided = bool(stored["pays"]), True
            return (
                f"torch.compile {'on' if self.compiled else 'off'}: measured on this machine "
                f"for this shape, {stored['speedup']:.2f}× per step"
            )
        return None

    def record(self, step_s: float) -> str | None:
        """Take one step's time; return a progress line when something was decided."""
        if self.compiled and self.compile_s is None:
            self.compile_s = step_s
            return f"torch.compile: the first compiled step took {step_s:.1f} s (it compiles)"
        if self.decided:
            return None
        self.remaining_steps -= 1
        if not self.compiled:
            self.eager_s.append(step_s)
            if len(self.eager_s) <= TRIAL_STEPS:  # the first one is a warm-up
                return None
            eager = statistics.median(self.eager_s[1:])
            # At best compiling would halve the rest of the run: try only if that beats its cost.
            if self.remaining_steps * eager / 2 < known_compile_s():
                self.decided = True
                return f"torch.compile off: {self.remaining_steps} steps left are too few to pay"
            self.compiled = True
            return "torch.compile: compiling model and optimizer (timed against eager steps)"
        self.compiled_s.append(step_s)
        if len(self.compiled_s) < TRIAL_STEPS:
            return None
        eager, compiled = statistics.median(self.eager_s[1:]), statistics.median(self.compiled_s)
        speedup = eager / compiled
        self.compiled, self.decided = speedup >= MIN_SPEEDUP, True
        verdict = {
            "key": self.key,
            "eager_s": eager,
            "compiled_s": compiled,
            "compile_s": self.compile_s,
            "speedup": speedup,
            "pays": self.compiled,
        }
        atomic_write_json(_verdict_path(self.key), verdict)
        return (
            f"torch.compile {'kept' if self.compiled else 'dropped'}: {eager:.3f} s eager vs "
            f"{compiled:.3f} s compiled per step ({speedup:.2f}×)"
        )
