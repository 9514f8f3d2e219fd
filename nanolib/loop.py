"""The training loop every stage shares — pretraining, SFT, RL — and the launcher that runs it.

`run_loop` is one straight loop: resume if `out_dir` holds a checkpoint of the same
configuration → for each step: evaluate when due, write the step's metrics line, checkpoint when
due, then one optimizer step with a scheduled LR over this rank's micro-batches. A micro-batch is
`(inputs, targets, weights)`; its loss is

- the mean cross-entropy ÷ the micro-steps, when weights is None (pretraining), or
- Σ weights · cross-entropy, when the stage weighs every target itself (SFT: 1/N on assistant
  tokens; RL: advantage/N on sampled tokens, see nanolib.rl),

so stages differ only in the `StepSource` that yields their batches (and in what they evaluate).
Gradients are all-reduced once per step under DDP, which averages the ranks' losses.

A stage runs in one process, or in each rank under torchrun: a stage's configuration is a
`StageConfig` dataclass saved as `<out_dir>/config.json`; `launch_stage` runs the stage here or
through `launch_module(module, …)`, which starts `torchrun … -m <module> --config
<out_dir>/config.json`, streams rank 0's lines and follows `metrics.jsonl` with a progress bar;
`stage_main` is each stage module's command line, with `init_ranks`/`finish_ranks` around a rank's
work.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import selectors
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator, Mapping
from contextlib import nullcontext
from dataclasses import asdict, dataclass, fields
from pathlib import Path
from typing import Any, Protocol, TypeVar

import torch
import torch.distributed as dist
import torch.nn as nn

from nanolib.checkpoint import (
    CONFIG,
    METRICS,
    SUMMARY,
    load_checkpoint,
    read_metrics,
    restore_rng,
    save_checkpoint,
)
from nanolib.compiling import CompileTrial, read_verdict, use_inductor_cache
from nanolib.device import autocast_context, device_name, pick_device, sync, training_bf16
from nanolib.files import atomic_write_json, atomic_write_text, read_json
from nanolib.procs import die_with_parent

Batch = tuple[torch.Tensor, torch.Tensor, torch.Tensor | None]  # inputs, targets, weights


class TrainingError(RuntimeError):
    """A training run cannot start or failed; the message says why and what to change."""


class StepSource(Protocol):
    """What a stage feeds the loop: each optimizer step's micro-batches on this rank."""

    micro_steps: int  # micro-batches per optimizer step on each rank (the same on every rank)

    def batches(self, step: int, model: nn.Module) -> Iterator[Batch]:
        """This rank's micro-batches for the step after `step` (model: the raw model, on-policy)."""
        ...

    def metrics(self, loss: float, seconds: float) -> dict[str, Any]:
        """The metrics line of the step just taken (loss: averaged over ranks)."""
        ...

    def state_dict(self) -> dict[str, Any]:
        """Where the data stands after the last step taken (saved with a checkpoint)."""
        ...

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Resume the data where a checkpoint left it."""
        ...


@dataclass(frozen=True)
class Schedule:
    """How long a run is, its LR shape, and how often it evaluates and checkpoints."""

    num_steps: int
    warmup_steps: int = 0
    warmdown_ratio: float = 0.0  # the last fraction of steps decays the LR linearly …
    final_lr_frac: float = 0.0  # … to this fraction of the peak
    eval_every: int = 0  # steps between evaluations (0: at the start and the end only)
    checkpoint_every: int = 0  # steps between checkpoints (0: at the end only)


@dataclass
class LoopResult:
    """What rank 0 knows when the loop ends."""

    step: int
    resumed_from: int | None
    wall_s: float  # the whole run's, resumed parts included
    timed_steps: int  # steps timed for throughput (the first one of each process is not)
    timed_s: float
    last_eval: dict[str, Any]
    compiled: bool = False  # torch.compile at the end of the run (model and Muon)
    compile_s: float | None = None  # the first compiled step, compilation included

    def run_fields(self, device: str, world: int) -> dict[str, Any]:
        """How the run went, for a stage's summary: step time, wall time, device, ranks, resume."""
        return {
            "step_s": self.timed_s / self.timed_steps if self.timed_steps else None,
            "wall_s": self.wall_s,
            "device": device_name(device),
            "world_size": world,
            "resumed_from": self.resumed_from,
        }


def lr_multiplier(
    step: int, num_steps: int, warmup_steps: int, warmdown_ratio: float, final_lr_frac: float
) -> float:
    """LR factor for step (0-based): linear warmup to 1, flat, linear warmdown to final_lr_frac."""
    warmup = (step + 1) / warmup_steps if warmup_steps > 0 else 1.0
    warmdown_steps = round(warmdown_ratio * num_steps)
    left = num_steps - step  # steps still to take, this one included
    warmdown = 1.0
    if warmdown_steps > 0 and left <= warmdown_steps:
        frac = left / warmdown_steps
        warmdown = frac + (1 - frac) * final_lr_frac
    return min(warmup, warmdown, 1.0)


def config_changes(old: Mapping[str, Any], new: Mapping[str, Any], ignore: set[str]) -> list[str]:
    """The fields (outside `ignore`) whose values differ, as "key: old → new"."""
    keys = (set(old) | set(new)) - ignore
    return [
        f"{k}: {old.get(k)!r} → {new.get(k)!r}" for k in sorted(keys) if old.get(k) != new.get(k)
    ]


def maybe_die(step: int, rank: int) -> None:
    """Test hook: NANOBOOK_TEST_DIE="step[:rank[:kill|raise]]" ends a rank after that step."""
    spec = os.environ.get("NANOBOOK_TEST_DIE")
    if not spec:
        return
    parts = spec.split(":")
    if int(parts[0]) != step or (len(parts) > 1 and int(parts[1]) != rank):
        return
    if len(parts) > 2 and parts[2] == "raise":
        raise RuntimeError(f"NANOBOOK_TEST_DIE: rank {rank} fails after step {step}")
    os.kill(os.getpid(), signal.SIGKILL)


def rank_info() -> tuple[int, int]:
    """(rank, world size): (0, 1) outside torchrun."""
    return (dist.get_rank(), dist.get_world_size()) if dist.is_initialized() else (0, 1)


def rank_device(wanted: str) -> str:
    """The device this rank trains on: its own GPU under torchrun, else pick_device(wanted)."""
    device = pick_device(wanted)
    if device == "cuda":
        device = f"cuda:{int(os.environ.get('LOCAL_RANK', 0))}"
        torch.cuda.set_device(device)
        torch.set_float32_matmul_precision("high")
    return device


def find_resume(
    out: Path, config: Mapping[str, Any], ignore: set[str], say: Callable[[str], None]
) -> dict[str, Any] | None:
    """meta.json of a checkpoint in out made with this configuration, else None (and why)."""
    meta_path = out / "meta.json"
    if not meta_path.exists():
        return None
    meta = read_json(meta_path)
    changes = config_changes(meta.get("config", {}), config, ignore)
    if not changes:
        return meta
    say(
        f"{out} holds a checkpoint of another configuration ({'; '.join(changes)}): "
        "training from scratch; it is replaced at the first checkpoint"
    )
    return None


def _format(values: Mapping[str, Any]) -> str:
    def number(v: int | float) -> str:
        return f"{v:,}" if isinstance(v, int) else f"{v:.4f}"

    return " · ".join(f"{k} {number(v)}" for k, v in values.items() if isinstance(v, int | float))


def run_loop(
    out_dir: str | Path,
    config: Mapping[str, Any],
    ignore: set[str],
    schedule: Schedule,
    model: nn.Module,
    optimizer: Any,
    source: StepSource,
    evaluate: Callable[[int, nn.Module], dict[str, Any]],
    device: str,
    *,
    model_meta: Mapping[str, Any],
    compile_model: bool | None = False,
    compile_key: dict[str, Any] | None = None,
    bf16: bool | None = None,
    progress: bool = True,
    desc: str = "training",
    headline: str | None = None,
    postfix: tuple[str, ...] = (),
    step_fields: Callable[[int], dict[str, Any]] | None = None,
) -> LoopResult | None:
    """Train `model` (raw, on `device`) for schedule.num_steps; rank 0 returns a LoopResult.

    `config` (JSON-able) is saved in every checkpoint; a checkpoint whose config differs outside
    `ignore` is not resumed. `evaluate(step, model)` runs at step 0, every eval_every steps and
    at the end, on every rank, and returns the metrics to log. `headline` (the run's plan) is
    printed at the start, after "starting: " or "resuming at step N: "; `postfix` names metrics
    shown on the progress bar; `step_fields(step)` adds fields to every metrics line (e.g. tokens
    and FLOPs so far).
    `compile_model` None measures whether torch.compile pays (nanolib.compiling, keyed by
    `compile_key`); `bf16` None autocasts where `device.training_bf16` says (CUDA, native-bf16
    CPUs).
    """
    if bf16 is None:
        bf16 = training_bf16(device)
    ddp = dist.is_initialized()
    rank, world = rank_info()
    master = rank == 0
    out = Path(out_dir)
    from tqdm.auto import tqdm

    num_steps = schedule.num_steps
    bar = tqdm(total=num_steps, desc=desc, unit="step", disable=not (master and progress))
    say = bar.write if master and progress else (lambda s: print(s, flush=True))
    resume = find_resume(out, config, ignore, say if master else (lambda s: None))
    step, wall_before, timed_steps, timed_s, last_eval = 0, 0.0, 0, 0.0, {}
    if resume:
        step, wall_before = resume["step"], resume["wall_s"]
        timed_steps, timed_s = resume["timed_steps"], resume["timed_s"]
        last_eval = resume.get("last_eval", {})
        model_state, state, _ = load_checkpoint(out, device, step)
        model.load_state_dict(model_state)
        optimizer.load_state_dict(state["optimizer"])
        restore_rng(state["rng"])
        source.load_state_dict(resume["source"])
    bar.update(step)
    use_inductor_cache()
    wanted = compile_model
    if wanted is None and (ddp or compile_key is None):  # ranks must agree: no trial under DDP
        stored = read_verdict(compile_key) if compile_key else None
        wanted = bool(stored["pays"]) if stored else "cuda" in device
    trial = CompileTrial(compile_key or {}, num_steps - step, wanted)
    trial_note = trial.start()
    compiled = torch.compile(model) if trial.compiled else None
    train_model = model if compiled is None else compiled  # a module has no truth value
    _use_compiled(optimizer, trial.compiled)
    running_compiled = trial.compiled
    if ddp:
        ids = [torch.device(device).index] if "cuda" in device else None
        train_model = torch.nn.parallel.DistributedDataParallel(train_model, device_ids=ids)

    metrics = None
    if master:
        out.mkdir(parents=True, exist_ok=True)
        kept = [r for r in read_metrics(out) if r["step"] <= step] if resume else []
        atomic_write_text(out / METRICS, "".join(json.dumps(r) + "\n" for r in kept))
        metrics = open(out / METRICS, "a")  # appended to, line by line, for the whole run
        if headline:
            start = f"resuming at step {step}" if resume is not None else "starting"
            say(f"{start}: {headline}" + (", bf16 autocast" if bf16 else ""))
        if trial_note:
            say(trial_note)

    t_start = time.perf_counter()
    first_step, record = step, {"step": step}
    try:
        while True:
            last = step == num_steps
            fresh = resume is None or step > first_step  # not the step the checkpoint holds
            every = schedule.eval_every
            if fresh and (last or step == 0 or (every and step % every == 0)):
                last_eval = evaluate(step, model)
                record.update(last_eval)
                if master and last_eval:
                    say(f"step {step:,}/{num_steps:,} · {_format(last_eval)}")
            wall = wall_before + time.perf_counter() - t_start
            if master and fresh:
                if step_fields:
                    record.update(step_fields(step))
                record["wall_s"] = round(wall, 3)
                metrics.write(json.dumps(record) + "\n")
                metrics.flush()
            every = schedule.checkpoint_every
            if fresh and (last or (every and step % every == 0 and step > 0)):
                if master:
                    meta = {
                        "config": dict(config),
                        "model": dict(model_meta),
                        "num_steps": num_steps,
                        "source": source.state_dict(),
                        "last_eval": last_eval,
                        "wall_s": wall,
                        "timed_steps": timed_steps,
                        "timed_s": timed_s,
                    }
                    save_checkpoint(out, step, model, optimizer, meta)
                if ddp:
                    dist.barrier()
            if fresh:
                maybe_die(step, rank)
            if last:
                break

            lrm = lr_multiplier(
                step,
                num_steps,
                schedule.warmup_steps,
                schedule.warmdown_ratio,
                schedule.final_lr_frac,
            )
            for group in optimizer.param_groups:
                group["lr"] = group["initial_lr"] * lrm
            sync(device)
            t0 = time.perf_counter()
            loss_sum = torch.zeros((), dtype=torch.float64, device=device)
            n_micro = source.micro_steps
            for micro, (x, y, w) in enumerate(source.batches(step, model)):
                skip_sync = ddp and micro < n_micro - 1  # all-reduce gradients once per step
                with train_model.no_sync() if skip_sync else nullcontext():
                    with autocast_context(device, bf16):
                        if w is None:
                            loss = train_model(x, y) / n_micro
                        else:
                            loss = (train_model(x, y, loss_reduction="none").float() * w).sum()
                    loss.backward()
                loss_sum += loss.detach().double()
            optimizer.step()
            optimizer.zero_grad(set_to_none=True)
            if ddp:
                dist.all_reduce(loss_sum)
            dt = time.perf_counter() - t0
            step += 1
            compiling = trial.compiled and trial.compile_s is None
            if step > first_step + 1 and not compiling:  # warm-up, compilation: not throughput
                timed_steps, timed_s = timed_steps + 1, timed_s + dt
            note = trial.record(dt)
            if note and master:
                say(note)
            if trial.compiled != running_compiled:  # the trial switched modes
                if compiled is None:  # a module's truth value is not defined: test for None
                    compiled = torch.compile(model)
                train_model = compiled if trial.compiled else model  # no DDP: trials run alone
                _use_compiled(optimizer, trial.compiled)
                running_compiled = trial.compiled
            record = {
                "step": step,
                "lr": optimizer.param_groups[0]["lr"],
                **source.metrics(loss_sum.item() / world, dt),
            }
            bar.update(1)
            shown = {k: record[k] for k in postfix if isinstance(record.get(k), int | float)}
            bar.set_postfix({k: f"{v:.3g}" for k, v in shown.items()})
    finally:
        bar.close()
        if metrics is not None:
            metrics.close()
    if not master:
        return None
    return LoopResult(
        step=step,
        resumed_from=first_step if resume else None,
        wall_s=wall_before + time.perf_counter() - t_start,
        timed_steps=timed_steps,
        timed_s=timed_s,
        last_eval=last_eval,
        compiled=trial.compiled,
        compile_s=trial.compile_s,
    )


def _use_compiled(optimizer: Any, on: bool) -> None:
    """Switch an optimizer's compiled step (Muon's) where it has one."""
    if hasattr(optimizer, "use_compiled"):
        optimizer.use_compiled(on)


# ------------------------------------------------------------------------------------------------
# launching: in-process, or torchrun for several ranks

C = TypeVar("C", bound="StageConfig")


class StageConfig:
    """Base of a stage's config dataclass: made from a chapter's parameters, saved as JSON."""

    out_dir: str
    device: str

    @classmethod
    def from_params(cls: type[C], params: dict[str, Any], **fixed: Any) -> C:
        """A config from a chapter's resolved parameters; keys that are not fields are skipped."""
        names = {f.name for f in fields(cls)}
        return cls(**{k: v for k, v in params.items() if k in names}, **fixed)

    def save(self, path: str | Path) -> None:
        """Write the config as JSON, atomically."""
        atomic_write_json(path, asdict(self))

    def save_in_out_dir(self) -> Path:
        """Create out_dir and write the config there as config.json; return out_dir."""
        out = Path(self.out_dir)
        out.mkdir(parents=True, exist_ok=True)
        self.save(out / CONFIG)
        return out

    def schedule(self, num_steps: int, **overrides: Any) -> Schedule:
        """The loop's Schedule of num_steps, from this config's fields of the same names."""
        names = {f.name for f in fields(Schedule)} - {"num_steps"}
        given = {n: getattr(self, n) for n in names if hasattr(self, n)}
        return Schedule(num_steps, **{**given, **overrides})

    @classmethod
    def load(cls: type[C], path: str | Path) -> C:
        """Read a config written by `save`, naming any unknown key."""
        raw = read_json(path)
        known = {f.name for f in fields(cls)}
        unknown = set(raw) - known
        if unknown:
            raise ValueError(f"{path}: unknown key(s) {sorted(unknown)}; valid: {sorted(known)}")
        return cls(**raw)


def launch_stage(
    cfg: StageConfig,
    nproc: int,
    run: Callable[..., dict[str, Any] | None],
    prepare: Callable[[Any, int], tuple[Any, ...]],
    module: str,
    desc: str,
    progress: bool = True,
) -> dict[str, Any]:
    """Run a stage in this process (nproc = 1) or under torchrun on nproc ranks; its summary.

    `run(cfg, progress=…)` is the stage and `module` the one torchrun starts; `prepare(cfg,
    nproc)` (the stage's checks that need no device, returning a tuple that ends with its plan)
    runs here first, so what can be checked before the ranks start fails here, in the notebook.
    """
    if nproc == 1:
        return run(cfg, progress=progress)
    steps = prepare(cfg, nproc)[-1].num_steps
    out = cfg.save_in_out_dir()
    return launch_module(module, out / CONFIG, nproc, steps, desc=desc, progress=progress)


def stage_main(
    argv: list[str] | None,
    config_type: type[StageConfig],
    run: Callable[..., Any],
    description: str,
) -> None:
    """A stage module's command line, `--config <out_dir>/config.json`, alone or under torchrun."""
    from torch.distributed.elastic.multiprocessing.errors import record

    ap = argparse.ArgumentParser(description=description)
    name = config_type.__name__
    ap.add_argument("--config", required=True, help=f"a config.json written by {name}.save")
    ap.add_argument("--no-progress", action="store_true", help="plain lines, no progress bar")
    args = ap.parse_args(argv)
    cfg = config_type.load(args.config)
    init_ranks(cfg.device)
    # on an exception torchrun gets the traceback in the rank's error file
    record(run)(cfg, progress=not args.no_progress)
    finish_ranks()


def torchrun_command(
    config_path: str | Path, nproc: int, log_dir: str | Path, module: str = "nanolib.train"
) -> list[str]:
    """The torchrun command line that runs `python -m module --config …` on nproc local ranks.

    The ranks draw no progress bar (`--no-progress`): the launcher follows metrics.jsonl instead.
    """
    exe = Path(sys.executable).with_name("torchrun")
    head = [str(exe)] if exe.exists() else [sys.executable, "-m", "torch.distributed.run"]
    return [
        *head,
        "--standalone",
        f"--nproc_per_node={nproc}",
        f"--log-dir={log_dir}",
        "--tee=3",  # every rank's output also goes to <log_dir>/<run>/attempt_0/<rank>/
        "--local-ranks-filter=0",  # the console (and so the notebook) shows rank 0 only
        "-m",
        module,
        "--config",
        str(config_path),
        "--no-progress",
    ]


def launch_module(
    module: str,
    config_path: str | Path,
    nproc: int,
    num_steps: int,
    *,
    desc: str = "training",
    progress: bool = True,
) -> dict[str, Any]:
    """Run a stage's module under torchrun on nproc ranks; return the summary.json it wrote."""
    out = Path(config_path).parent
    log_dir = Path(tempfile.mkdtemp(dir=out, prefix="torchrun-logs-"))
    cmd = torchrun_command(config_path, nproc, log_dir, module)
    print("$", " ".join(cmd), flush=True)
    env = {"OMP_WAIT_POLICY": "PASSIVE", **os.environ}
    env["PYTHONUNBUFFERED"] = "1"  # rank 0's lines reach the notebook as they are printed
    proc = subprocess.Popen(  # torchrun (and its ranks) stop when this process dies
        cmd,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        env=env,
        start_new_session=True,
        preexec_fn=die_with_parent,
    )
    from tqdm.auto import tqdm

    tail: list[str] = []  # torchrun's own lines, shown if a rank fails
    bar = tqdm(total=num_steps, desc=f"{desc} on {nproc} ranks", unit="step", disable=not progress)
    sel = selectors.DefaultSelector()
    sel.register(proc.stdout, selectors.EVENT_READ)
    try:
        while True:
            if sel.select(timeout=1.0):
                raw_line = proc.stdout.readline()
                if not raw_line:
                    break
                line = raw_line.decode(errors="replace").rstrip("\n")
                if line.startswith("[default0]:"):
                    bar.write(line[len("[default0]:") :])
                else:
                    tail = (tail + [line])[-40:]
            done = read_metrics(out)
            if done:
                bar.update(done[-1]["step"] - bar.n)
        rc = proc.wait()
    except BaseException:
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait()
        raise
    finally:
        bar.close()
        sel.close()
    if rc != 0:
        raise TrainingError(_rank_failure(log_dir, rc, tail))
    shutil.rmtree(log_dir, ignore_errors=True)
    return read_json(out / SUMMARY)


def _rank_failure(log_dir: Path, rc: int, tail: list[str]) -> str:
    """The message for a failed torchrun: which rank died first, and the end of its stderr."""
    ranks = []
    for rank_dir in log_dir.glob("*/attempt_*/*"):
        error = rank_dir / "error.json"
        stderr = rank_dir / "stderr.log"
        text = stderr.read_text(errors="replace") if stderr.exists() else ""
        when = error.stat().st_mtime if error.exists() else math.inf
        if error.exists() or "Traceback" in text:
            ranks.append((when, rank_dir.name, text))
    if not ranks:
        context = "\n".join(tail[-15:])
        return f"torchrun exited with status {rc} and no rank left a traceback:\n{context}"
    _, rank, text = min(ranks)
    lines = text.strip().splitlines()
    start = max((i for i, ln in enumerate(lines) if ln.startswith("Traceback")), default=0)
    return (
        f"rank {rank} failed (torchrun exit status {rc}); its error:\n"
        + "\n".join(lines[start:][-25:])
        + f"\n(all ranks' logs: {log_dir})"
    )


def init_ranks(wanted_device: str) -> None:
    """Under torchrun (WORLD_SIZE > 1): join the process group (NCCL on GPUs, else gloo)."""
    if int(os.environ.get("WORLD_SIZE", 1)) > 1:
        cuda = pick_device(wanted_device) == "cuda"
        if cuda:
            torch.cuda.set_device(int(os.environ["LOCAL_RANK"]))
        dist.init_process_group(backend="nccl" if cuda else "gloo")


def finish_ranks() -> None:
    """Leave the process group, after a barrier (without it a rank may abort at exit)."""
    if dist.is_initialized():
        dist.barrier()
        dist.destroy_process_group()
