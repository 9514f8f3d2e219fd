"""CORE (DCLM): in-context tasks scored by centred accuracy, evaluated on our checkpoints.

CORE (Li et al. 2024, DataComp-LM) is the mean, over 22 few-shot tasks, of each task's accuracy
centred on its random baseline: ``(acc − baseline) / (1 − baseline)``, so guessing scores 0 and a
perfect model 1. The tasks come as an *eval bundle* (`nanolib.core_bundle` reads, checks and
downloads them). Three task types, one forward pass each:

- ``multiple_choice`` (``query``, ``choices``, ``gold``): one row per choice,
  ``query + delimiter + choice``; the choice with the lowest mean loss is the prediction;
- ``schema`` (``context_options``, ``continuation``, ``gold``): one row per context,
  ``option + delimiter + continuation``; the context under which the shared continuation has the
  lowest mean loss is the prediction;
- ``language_modeling`` (``context``, ``continuation``): one row,
  ``context.strip() + delimiter + continuation``; right only if the greedy (argmax) prediction
  reproduces every continuation token.

Every row is ``few-shot block + prompt``, encoded after a BOS token; the scored tokens are those
after the longest common token prefix of the row with and without its continuation, i.e. the
whole continuation, as llm-foundry (DCLM's harness) scores it. (nanochat instead scores a choice
after the tokens all choices share, and a schema row over the tokens all rows share at the end;
the two agree unless choices start, or contexts end, with the same tokens.) Few-shot
examples (``gold`` answers filled in, separated by blank lines) are drawn per item with
``random.Random(1234 + index)`` and never include the item itself; items are shuffled with
``random.Random(1337)`` before ``max_per_task`` keeps the first ones (nanochat's conventions).
Ties in the lowest loss go to the first choice. Rows longer than the model's context are cut
from the left. The GPT-3 calibration and the CORE-vs-FLOPs fit live in `nanolib.core_fit`.
"""

from __future__ import annotations

import json
import random
import time
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, Protocol

import pandas as pd
import torch
import torch.nn as nn
import torch.nn.functional as F

from nanolib.checkpoint import META, load_model
from nanolib.core_bundle import Bundle, Task, load_bundle
from nanolib.device import autocast_context
from nanolib.files import atomic_write_json, atomic_write_text, sha256_file
from nanolib.model import unwrap_model

FEWSHOT_SEED = 1234  # few-shot examples of item i come from random.Random(FEWSHOT_SEED + i)
SHUFFLE_SEED = 1337  # items are shuffled once with this seed before max_per_task cuts them


# ------------------------------------------------------------------------------------------------
# prompts


def fewshot_indices(
    n: int, index: int, k: int, seed: int = FEWSHOT_SEED, exclude: Iterable[int] = ()
) -> list[int]:
    """k distinct item indices in [0, n) drawn with Random(seed + index); never index or exclude."""
    banned = {index, *exclude}
    if n - sum(0 <= b < n for b in banned) < k:
        raise ValueError(f"{n} items leave fewer than k={k} few-shot examples for item {index}")
    rng = random.Random(seed + index)
    chosen: list[int] = []
    while len(chosen) < k:
        j = rng.randrange(n)
        if j not in banned:
            banned.add(j)
            chosen.append(j)
    return chosen


def _solved(task_type: str, item: dict, delimiter: str) -> str:
    """An item with its gold answer filled in, as a few-shot example."""
    if task_type == "multiple_choice":
        return item["query"] + delimiter + item["choices"][item["gold"]]
    if task_type == "schema":
        return item["context_options"][item["gold"]] + delimiter + item["continuation"]
    return item["context"].strip() + delimiter + item["continuation"]


def render_rows(
    task_type: str, item: dict, shots: Sequence[dict], delimiter: str
) -> list[tuple[str, str]]:
    """The (context, continuation) texts to score for one item: one per choice/option, or one."""
    prefix = "".join(_solved(task_type, s, delimiter) + "\n\n" for s in shots)
    if task_type == "multiple_choice":
        return [(prefix + item["query"] + delimiter, c) for c in item["choices"]]
    if task_type == "schema":
        return [(prefix + o + delimiter, item["continuation"]) for o in item["context_options"]]
    return [(prefix + item["context"].strip() + delimiter, item["continuation"])]


class TextEncoder(Protocol):
    """What scoring needs of a tokenizer (nanolib.tokenizer.Tokenizer is one)."""

    @property
    def bos_id(self) -> int: ...

    def encode_batch(self, texts: Sequence[str]) -> list[list[int]]: ...


def encode_rows(
    tokenizer: TextEncoder, pairs: Sequence[tuple[str, str]]
) -> tuple[list[list[int]], list[tuple[int, int]]]:
    """Token rows (BOS + context + continuation) and the [start, end) span of the continuation.

    The span starts after the longest common token prefix of the row with and without its
    continuation, so a delimiter space that BPE glues to the next word is scored with it.
    """
    encoded = tokenizer.encode_batch([c for c, _ in pairs] + [c + x for c, x in pairs])
    bos, n = tokenizer.bos_id, len(pairs)
    rows, spans = [], []
    for ctx, full in zip(encoded[:n], encoded[n:]):
        start = 0
        for a, b in zip(ctx, full):
            if a != b:
                break
            start += 1
        rows.append([bos, *full])
        spans.append((start + 1, len(full) + 1))
    return rows, spans


# ------------------------------------------------------------------------------------------------
# scoring


class Scorer(Protocol):
    """Scores token rows; spans are [start, end) of the tokens to judge (position 0 is BOS)."""

    def continuation_losses(
        self, rows: Sequence[Sequence[int]], spans: Sequence[tuple[int, int]]
    ) -> list[float]:
        """Mean cross-entropy of each row's span tokens given everything before them."""
        ...

    def greedy_matches(
        self, rows: Sequence[Sequence[int]], spans: Sequence[tuple[int, int]]
    ) -> list[bool]:
        """Whether greedy (argmax) next-token predictions reproduce each row's span exactly."""
        ...


class ModelScorer:
    """A Scorer backed by a GPT: rows left-truncated to seq_len, length-sorted, padded, batched."""

    def __init__(self, model: nn.Module, pad_id: int = 0, batch_tokens: int = 8192) -> None:
        # the plain module: DDP hooks are not needed, and a compiled model would recompile for
        # every new batch shape
        self.model = unwrap_model(model)
        self.seq_len = self.model.config.seq_len
        self.device = next(model.parameters()).device
        self.pad_id = pad_id
        self.batch_tokens = batch_tokens

    def _fit(self, row: Sequence[int], span: tuple[int, int]) -> tuple[list[int], int, int]:
        cut = max(0, len(row) - self.seq_len)  # drop the oldest tokens, as nanochat does
        return list(row[cut:]), max(1, span[0] - cut), span[1] - cut

    @torch.inference_mode()
    def _score(
        self, rows: Sequence[Sequence[int]], spans: Sequence[tuple[int, int]]
    ) -> tuple[list[float], list[bool]]:
        fitted = [self._fit(r, s) for r, s in zip(rows, spans)]
        order = sorted(range(len(fitted)), key=lambda i: -len(fitted[i][0]))
        losses, matches = [0.0] * len(rows), [False] * len(rows)
        i = 0
        while i < len(order):
            width = len(fitted[order[i]][0])  # the longest row of the batch comes first
            batch = order[i : i + max(1, self.batch_tokens // width)]
            i += len(batch)
            idx = torch.full((len(batch), width), self.pad_id, dtype=torch.long)
            targets = torch.full((len(batch), width), -1, dtype=torch.long)
            for b, j in enumerate(batch):
                row, start, end = fitted[j]
                idx[b, : len(row)] = torch.tensor(row)
                # the logits at position t predict token t + 1
                targets[b, start - 1 : end - 1] = torch.tensor(row[start:end])
            idx, targets = idx.to(self.device), targets.to(self.device)
            with autocast_context(self.device):
                logits = self.model(idx)
            logits = logits.float()
            loss = F.cross_entropy(
                logits.flatten(0, 1), targets.flatten(), ignore_index=-1, reduction="none"
            ).view_as(targets)
            scored = targets != -1
            mean = (loss.sum(1) / scored.sum(1)).tolist()
            exact = ((logits.argmax(-1) == targets) | ~scored).all(1).tolist()
            for b, j in enumerate(batch):
                losses[j], matches[j] = mean[b], exact[b]
        return losses, matches

    def continuation_losses(
        self, rows: Sequence[Sequence[int]], spans: Sequence[tuple[int, int]]
    ) -> list[float]:
        """Mean cross-entropy of each row's span tokens given everything before them."""
        return self._score(rows, spans)[0]

    def greedy_matches(
        self, rows: Sequence[Sequence[int]], spans: Sequence[tuple[int, int]]
    ) -> list[bool]:
        """Whether greedy next-token predictions reproduce each row's span exactly."""
        return self._score(rows, spans)[1]


# ------------------------------------------------------------------------------------------------
# evaluation


def centered_accuracy(accuracy: float, baseline: float) -> float:
    """(accuracy − baseline) / (1 − baseline): 0 for random guessing, 1 for perfect."""
    return (accuracy - baseline) / (1.0 - baseline)


def core_score(centered: Iterable[float]) -> float:
    """CORE: the plain mean of the tasks' centred accuracies."""
    values = list(centered)
    return float(sum(values) / len(values))


@dataclass(frozen=True)
class TaskResult:
    """One task's score; items and correct are totals over all ranks."""

    label: str
    task_type: str
    num_fewshot: int
    items: int
    correct: int
    baseline_v1: float
    baseline_v2: float
    seconds: float

    @property
    def accuracy(self) -> float:
        """Fraction of items right."""
        return self.correct / self.items if self.items else float("nan")

    @property
    def centered_v1(self) -> float:
        """Accuracy centred on the v1 baseline."""
        return centered_accuracy(self.accuracy, self.baseline_v1)

    @property
    def centered_v2(self) -> float:
        """Accuracy centred on the v2 baseline."""
        return centered_accuracy(self.accuracy, self.baseline_v2)

    def to_dict(self) -> dict[str, Any]:
        """The stored fields plus accuracy and both centred accuracies."""
        return {
            **asdict(self),
            "accuracy": self.accuracy,
            "centered_v1": self.centered_v1,
            "centered_v2": self.centered_v2,
        }


@dataclass(frozen=True)
class CoreResult:
    """Every task's result and CORE under both baseline tables."""

    bundle: str
    tasks: tuple[TaskResult, ...]
    seconds: float
    max_per_task: int | None = None
    world_size: int = 1

    @property
    def core_v1(self) -> float:
        """CORE with the v1 baselines (nanochat's, and the GPT-2/GPT-3 numbers')."""
        return core_score(t.centered_v1 for t in self.tasks)

    @property
    def core_v2(self) -> float:
        """CORE with DCLM's corrected (v2) baselines."""
        return core_score(t.centered_v2 for t in self.tasks)

    @property
    def items(self) -> int:
        """Items evaluated over all tasks and ranks."""
        return sum(t.items for t in self.tasks)

    @property
    def items_per_s(self) -> float:
        """Evaluation throughput of the whole run (all ranks together)."""
        return self.items / self.seconds if self.seconds > 0 else float("nan")

    def to_frame(self) -> pd.DataFrame:
        """One row per task."""
        return pd.DataFrame([t.to_dict() for t in self.tasks])

    def to_dict(self) -> dict[str, Any]:
        """Everything, JSON-ready."""
        return {
            "bundle": self.bundle,
            "core_v1": self.core_v1,
            "core_v2": self.core_v2,
            "items": self.items,
            "seconds": self.seconds,
            "items_per_s": self.items_per_s,
            "max_per_task": self.max_per_task,
            "world_size": self.world_size,
            "tasks": [t.to_dict() for t in self.tasks],
        }


def _dist_rank_world() -> tuple[int, int]:
    import torch.distributed as dist

    if dist.is_available() and dist.is_initialized():
        return dist.get_rank(), dist.get_world_size()
    return 0, 1


def _all_reduce_sum(values: list[int]) -> list[int]:
    """Sum integers over the ranks when torch.distributed is initialised; else unchanged."""
    import torch.distributed as dist

    if not (dist.is_available() and dist.is_initialized()) or dist.get_world_size() == 1:
        return values
    on_gpu = dist.get_backend() == "nccl"
    device = torch.device("cuda", torch.cuda.current_device()) if on_gpu else torch.device("cpu")
    t = torch.tensor(values, dtype=torch.long, device=device)
    dist.all_reduce(t)
    return t.tolist()


def evaluation_order(n: int) -> list[int]:
    """File indices of a task's items in evaluation order: shuffled once with Random(1337)."""
    order = list(range(n))
    random.Random(SHUFFLE_SEED).shuffle(order)
    return order


def evaluate_task(
    task: Task,
    tokenizer: TextEncoder,
    scorer: Scorer,
    *,
    max_items: int | None = None,
    rank: int | None = None,
    world_size: int | None = None,
    seed: int = FEWSHOT_SEED,
    flush_rows: int = 256,
    bar: Any = None,
) -> TaskResult:
    """Score one task: this rank's share of items (index % world_size), summed over ranks."""
    t0 = time.perf_counter()
    drank, dworld = _dist_rank_world()
    rank = drank if rank is None else rank
    world_size = dworld if world_size is None else world_size
    spec = task.spec
    items = [task.items[i] for i in evaluation_order(len(task.items))]
    keys = [json.dumps(it, sort_keys=True) for it in items]
    same: dict[str, list[int]] = {}
    for i, key in enumerate(keys):
        same.setdefault(key, []).append(i)
    n_eval = len(items) if max_items is None else min(max_items, len(items))
    mine = range(n_eval)[rank::world_size]
    correct = 0
    pending: list[tuple[int, list[tuple[str, str]]]] = []  # (item, its rows) not yet scored

    def flush() -> int:
        rows, spans = encode_rows(tokenizer, [p for _, ps in pending for p in ps])
        if spec.task_type == "language_modeling":  # one row per item
            right = sum(scorer.greedy_matches(rows, spans))
        else:
            losses, right, at = scorer.continuation_losses(rows, spans), 0, 0
            for i, ps in pending:
                chunk = losses[at : at + len(ps)]
                right += chunk.index(min(chunk)) == items[i]["gold"]  # ties: the first choice
                at += len(ps)
        if bar is not None:
            bar.update(len(pending))
        pending.clear()
        return right

    n_rows = 0
    for i in mine:
        shots = fewshot_indices(len(items), i, spec.num_fewshot, seed, exclude=same[keys[i]])
        pairs = render_rows(spec.task_type, items[i], [items[j] for j in shots], spec.delimiter)
        pending.append((i, pairs))
        n_rows += len(pairs)
        if n_rows >= flush_rows:
            correct += flush()
            n_rows = 0
    if pending:
        correct += flush()
    total, correct = _all_reduce_sum([len(mine), correct])
    return TaskResult(
        label=spec.label,
        task_type=spec.task_type,
        num_fewshot=spec.num_fewshot,
        items=total,
        correct=correct,
        baseline_v1=spec.baseline_v1,
        baseline_v2=spec.baseline_v2,
        seconds=time.perf_counter() - t0,
    )


def evaluate_core(
    model: nn.Module | None,
    tokenizer: TextEncoder,
    bundle: Bundle | str | Path,
    max_per_task: int | None = None,
    rank: int | None = None,
    world_size: int | None = None,
    *,
    scorer: Scorer | None = None,
    batch_tokens: int = 8192,
    progress: bool = True,
) -> CoreResult:
    """CORE of a model on a bundle (v1 and v2 baselines); ranks split items, counts all-reduced."""
    from tqdm.auto import tqdm

    bundle = bundle if isinstance(bundle, Bundle) else load_bundle(bundle)
    drank, dworld = _dist_rank_world()
    rank = drank if rank is None else rank
    world_size = dworld if world_size is None else world_size
    if scorer is None:
        if model is None:
            raise ValueError("evaluate_core needs a model or a scorer")
        scorer = ModelScorer(model, pad_id=tokenizer.bos_id, batch_tokens=batch_tokens)
    sizes = [
        len(t.items) if max_per_task is None else min(max_per_task, len(t.items))
        for t in bundle.tasks
    ]
    total = sum(len(range(rank, n, world_size)) for n in sizes)
    t0 = time.perf_counter()
    results = []
    with tqdm(total=total, desc="CORE", unit="item", disable=not progress or rank != 0) as bar:
        for task in bundle.tasks:
            bar.set_postfix_str(task.label)
            results.append(
                evaluate_task(
                    task,
                    tokenizer,
                    scorer,
                    max_items=max_per_task,
                    rank=rank,
                    world_size=world_size,
                    bar=bar,
                )
            )
    return CoreResult(
        bundle=str(bundle.root),
        tasks=tuple(results),
        seconds=time.perf_counter() - t0,
        max_per_task=max_per_task,
        world_size=world_size,
    )


def write_results(
    result: CoreResult,
    run_dir: str | Path,
    name: str = "core",
    extra: Mapping[str, Any] | None = None,
) -> dict[str, Path]:
    """Write <name>.csv (one row per task) and <name>.json (everything, plus extra) atomically."""
    run_dir = Path(run_dir)
    paths = {"csv": run_dir / f"{name}.csv", "json": run_dir / f"{name}.json"}
    atomic_write_text(paths["csv"], result.to_frame().to_csv(index=False))
    atomic_write_json(paths["json"], {**result.to_dict(), **(extra or {})})
    return paths


SUMMARY_KEYS = ("core_v1", "core_v2", "items", "seconds", "items_per_s")
MODELS_CSV = "models.csv"  # the evaluated models' summaries, one row each, beside results


def evaluate_checkpoints(
    checkpoints: Mapping[str, str | Path],
    tokenizer: TextEncoder | Mapping[str, TextEncoder],
    bundle: Bundle | str | Path,
    out_dir: str | Path,
    max_per_task: int | None = None,
    *,
    batch_tokens: int = 8192,
    device: str = "cpu",
    progress: bool = True,
) -> pd.DataFrame:
    """CORE of each checkpoint dir (name → dir) into out_dir/<name>.csv|json; one row per model.

    `tokenizer` is one tokenizer for every model, or a mapping name → the tokenizer that model
    trained with (a family trained on another vocabulary). A result already in out_dir is reused
    when it was made from the same checkpoint (the sha256 of its meta.json), bundle and
    max_per_task, so an interrupted evaluation resumes model by model. The `reused` column says
    which rows were not evaluated this time.
    """
    bundle = bundle if isinstance(bundle, Bundle) else load_bundle(bundle)
    out_dir = Path(out_dir)
    rows = []
    if isinstance(tokenizer, Mapping) and (missing := set(checkpoints) - set(tokenizer)):
        raise ValueError(f"no tokenizer given for {sorted(missing)}")
    for name, ckpt in checkpoints.items():
        ckpt = Path(ckpt)
        encoder = tokenizer[name] if isinstance(tokenizer, Mapping) else tokenizer
        if not (ckpt / META).is_file():
            raise FileNotFoundError(f"{name}: no checkpoint in {ckpt} (no {META})")
        key = {
            "checkpoint": str(ckpt),
            "checkpoint_sha256": sha256_file(ckpt / META),
            "bundle": str(bundle.root),
            "max_per_task": max_per_task,
        }
        done = out_dir / f"{name}.json"
        if done.is_file():
            saved = json.loads(done.read_text())
            if all(saved.get(k) == v for k, v in key.items()):
                rows.append({"model": name, **{k: saved[k] for k in SUMMARY_KEYS}, "reused": True})
                continue
        model, _ = load_model(ckpt, device)
        vocab = getattr(encoder, "vocab_size", model.config.vocab_size)
        if model.config.vocab_size != vocab:
            raise ValueError(
                f"{name}: the model in {ckpt} has a vocabulary of {model.config.vocab_size:,} ids "
                f"but the tokenizer has {vocab:,}; evaluate it with the tokenizer it trained with"
            )
        result = evaluate_core(
            model, encoder, bundle, max_per_task, batch_tokens=batch_tokens, progress=progress
        )
        write_results(result, out_dir, name, extra=key)
        summary = result.to_dict()
        rows.append({"model": name, **{k: summary[k] for k in SUMMARY_KEYS}, "reused": False})
        del model  # free it before the next one loads
    return pd.DataFrame(rows)
