"""Independent training runs side by side: one worker process per CPU core, or per GPU.

A sweep's runs do not talk to each other, so the cheapest speed-up on a machine with several
cores is to train several at once. Each worker is a process of its own (`python -m
nanolib.parallel`, so it never re-imports the caller's script) that takes one run at a time from
the parent over its stdin, trains it with `nanolib.train.launch` (one torch thread on a CPU, its
own GPU on a multi-GPU node), logs to the run's `train.log`, and answers with the run's summary
on its stdout. The parent records each finished run at once (so a killed sweep loses nothing)
and follows the runs' metrics.jsonl for one progress bar over all of them. If a run fails, no
new run starts, the running ones finish and are recorded, and the failure is raised with the end
of the run's log. Workers die with the parent, and are stopped, with everything they started,
when the parent is interrupted.
"""

from __future__ import annotations

import json
import os
import selectors
import subprocess
import sys
import traceback
from collections.abc import Callable, Sequence
from contextlib import redirect_stdout
from dataclasses import asdict
from pathlib import Path
from typing import Any

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
        import torch

        return max(1, torch.cuda.device_count())
    return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()


def log_tail(out_dir: str | Path, lines: int = 15) -> list[str]:
    """The last lines of a run's train.log (none if it has no log)."""
    path = Path(out_dir) / LOG
    return path.read_text(errors="replace").splitlines()[-lines:] if path.exists() else []


def _worker_main() -> None:
    """A worker: for each JSON job line on stdin, train it and answer one JSON line."""
    answers = os.fdopen(os.dup(1), "w")
    os.dup2(2, 1)  # anything else printed (C libraries included) stays off the answer channel
    sys.stdout = sys.stderr
    for line in sys.stdin:
        job = json.loads(line)
        cfg = TrainConfig(**job["config"])
        try:
            Path(cfg.out_dir).mkdir(parents=True, exist_ok=True)
            with open(Path(cfg.out_dir) / LOG, "a") as log, redirect_stdout(log):
                answer = {"summary": launch(cfg, 1, progress=False)}
        except Exception:  # reported to the parent, which raises it
            answer = {"error": traceback.format_exc()}
        answers.write(json.dumps({"index": job["index"], **answer}) + "\n")
        answers.flush()


def _start_worker(slot: int, cuda: bool) -> subprocess.Popen:
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    if cuda:  # the slot-th GPU this process may use
        visible = os.environ.get("CUDA_VISIBLE_DEVICES")
        env["CUDA_VISIBLE_DEVICES"] = visible.split(",")[slot] if visible else str(slot)
    else:  # one thread per run: the cores are shared out between the runs
        env["OMP_NUM_THREADS"] = "1"
    return subprocess.Popen(
        [sys.executable, "-m", "nanolib.parallel"],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        env=env,
        text=True,
        start_new_session=True,  # so that stopping it stops what it started
        preexec_fn=die_with_parent,
    )


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
    if not configs:
        return
    cuda = pick_device(configs[0].device) == "cuda"
    workers = max(1, min(workers, len(configs)))
    procs = [_start_worker(slot, cuda) for slot in range(workers)]
    sel = selectors.DefaultSelector()
    for slot, proc in enumerate(procs):
        sel.register(proc.stdout, selectors.EVENT_READ, slot)
    running: dict[int, int] = {}  # slot -> index of the run it trains
    next_job, finished, base = 0, 0, bar.n if bar is not None else 0
    failure: tuple[int, str] | None = None

    def feed(slot: int) -> None:
        nonlocal next_job
        if failure is None and next_job < len(configs):
            job = {"index": next_job, "config": asdict(configs[next_job])}
            procs[slot].stdin.write(json.dumps(job) + "\n")
            procs[slot].stdin.flush()
            running[slot], next_job = next_job, next_job + 1
        else:
            procs[slot].stdin.close()  # no more work: the worker exits

    try:
        for slot in range(workers):
            feed(slot)
        while running:
            for key, _ in sel.select(timeout=1.0):
                slot = key.data
                line = procs[slot].stdout.readline()
                if not line:  # the worker exited: out of work, or killed mid-run
                    sel.unregister(key.fileobj)
                    code = procs[slot].wait()
                    if slot in running:
                        index = running.pop(slot)
                        failure = failure or (index, f"its worker died (exit status {code})")
                    continue
                index = running.pop(slot)
                answer = json.loads(line)
                if "summary" in answer:
                    finished += 1
                    on_done(index, answer["summary"])
                else:
                    failure = failure or (index, answer["error"])
                feed(slot)
            if bar is not None:
                fractions = sum(_fraction_done(configs[i], steps[i]) for i in running.values())
                bar.n = round(base + finished + fractions, 2)
                bar.refresh()
    except BaseException:
        for proc in procs:
            if proc.poll() is None:
                stop_tree(proc.pid, grace_s=2.0)
        raise
    finally:
        sel.close()
        for proc in procs:
            if proc.stdin and not proc.stdin.closed:
                proc.stdin.close()
            proc.wait()
    if failure is not None:
        index, error = failure
        out = configs[index].out_dir
        lines = [*error.strip().splitlines()[-8:], f"the end of its log ({Path(out) / LOG}):"]
        raise TrainingError("\n".join([f"run {Path(out).name} failed:", *lines, *log_tail(out)]))


if __name__ == "__main__":
    _worker_main()
