"""Independent training runs side by side: one worker process per CPU core, or per GPU.

A sweep's runs do not talk to each other, so the cheapest speed-up on a machine with several
cores is to train several at once: each worker process takes one run at a time from the parent,
trains it with `nanolib.train.launch` (one torch thread on a CPU, its own GPU on a multi-GPU
node), logs to the run's `train.log`, and hands back the run's summary. The parent records each
finished run at once (so a killed sweep loses nothing) and follows the runs' metrics.jsonl for
one progress bar over all of them. If a run fails, no new run starts, the running ones finish
and are recorded, and the failure is raised with the end of the run's log. Workers die with the
parent (and are stopped, with everything they started, when the parent is interrupted).
"""

from __future__ import annotations

import multiprocessing as mp
import os
import queue
import traceback
from collections.abc import Callable, Sequence
from contextlib import redirect_stdout
from pathlib import Path
from typing import Any

import torch

from nanolib.checkpoint import read_metrics
from nanolib.device import pick_device
from nanolib.procs import die_with_parent, stop_tree
from nanolib.train import TrainConfig, TrainingError, launch

LOG = "train.log"  # each run's printed lines, inside its folder


def side_by_side(device: str, nproc: int = 1) -> int:
    """How many runs fit side by side: one per CPU core or per GPU; 1 for torchrun runs."""
    if nproc > 1:
        return 1
    if pick_device(device) == "cuda":
        return max(1, torch.cuda.device_count())
    return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()


def log_tail(out_dir: str | Path, lines: int = 15) -> list[str]:
    """The last lines of a run's train.log (none if it has no log)."""
    path = Path(out_dir) / LOG
    return path.read_text(errors="replace").splitlines()[-lines:] if path.exists() else []


def _worker(slot: int, gpu: int | None, jobs: Any, results: Any) -> None:
    """A worker's loop: train each (index, config) it is given until it gets None."""
    die_with_parent()
    if gpu is not None:
        os.environ["CUDA_VISIBLE_DEVICES"] = str(gpu)
    else:
        torch.set_num_threads(1)
    while (job := jobs.get()) is not None:
        index, cfg = job
        results.put(("start", slot, index, None))
        try:
            Path(cfg.out_dir).mkdir(parents=True, exist_ok=True)
            with open(Path(cfg.out_dir) / LOG, "a") as log, redirect_stdout(log):
                summary = launch(cfg, 1, progress=False)
        except BaseException:  # noqa: BLE001 — reported to the parent, which raises it
            results.put(("failed", slot, index, traceback.format_exc()))
        else:
            results.put(("done", slot, index, summary))


def _fraction_done(cfg: TrainConfig, steps: int) -> float:
    """How far a running run is, from its metrics.jsonl (0 before its first step is logged)."""
    try:
        logged = read_metrics(cfg.out_dir)
    except (OSError, ValueError):
        return 0.0
    return min(1.0, logged[-1]["step"] / steps) if logged and steps else 0.0


def train_side_by_side(
    configs: Sequence[TrainConfig],
    workers: int,
    on_done: Callable[[int, dict[str, Any]], None],
    *,
    steps: Sequence[int],
    bar: Any = None,
) -> None:
    """Train `configs` in `workers` processes; call on_done(index, summary) as each finishes.

    `steps` are the runs' planned step counts (for the progress bar `bar`, whose n becomes the
    finished runs plus the running runs' fractions). Runs start in the order given.
    """
    ctx = mp.get_context("spawn")  # a forked copy of a process with OpenMP threads can hang
    jobs, results = ctx.Queue(), ctx.Queue()
    cuda = pick_device(configs[0].device) == "cuda" if configs else False
    workers = max(1, min(workers, len(configs)))
    procs = [
        ctx.Process(target=_worker, args=(slot, slot if cuda else None, jobs, results), daemon=True)
        for slot in range(workers)
    ]
    next_job, running, finished = 0, {}, 0
    failure: tuple[int, str] | None = None

    def feed() -> None:
        nonlocal next_job
        if failure is None and next_job < len(configs):
            jobs.put((next_job, configs[next_job]))
            next_job += 1
        else:
            jobs.put(None)

    base = bar.n if bar is not None else 0
    try:
        for proc in procs:
            proc.start()
        for _ in procs:
            feed()
        while running or any(proc.is_alive() for proc in procs):
            try:
                kind, slot, index, payload = results.get(timeout=1.0)
            except queue.Empty:
                for slot, proc in enumerate(procs):
                    if not proc.is_alive() and slot in running:  # killed (OOM, a signal)
                        index = running.pop(slot)
                        failure = failure or (index, f"its worker died (exit code {proc.exitcode})")
            else:
                if kind == "start":
                    running[slot] = index
                    continue
                running.pop(slot, None)
                if kind == "done":
                    finished += 1
                    on_done(index, payload)
                else:
                    failure = failure or (index, payload)
                feed()
            if bar is not None:
                fractions = sum(_fraction_done(configs[i], steps[i]) for i in running.values())
                bar.n = round(base + finished + fractions, 2)
                bar.refresh()
    except BaseException:
        for proc in procs:
            if proc.is_alive():
                stop_tree(proc.pid, grace_s=2.0)
        raise
    finally:
        for proc in procs:
            proc.join(timeout=5)
    if failure is None and finished < len(configs):
        raise TrainingError(
            f"the workers exited with {len(configs) - finished} of {len(configs)} runs untrained"
        )
    if failure is not None:
        index, error = failure
        out = configs[index].out_dir
        lines = [*error.strip().splitlines()[-8:], f"the end of its log ({Path(out) / LOG}):"]
        raise TrainingError("\n".join([f"run {Path(out).name} failed:", *lines, *log_tail(out)]))
