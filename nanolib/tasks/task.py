"""A task is rows of one data set read as conversation records; a mixture interleaves tasks."""

from __future__ import annotations

import math
from collections import Counter
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

KINDS = ("chat", "categorical", "generative")


@dataclass(frozen=True)
class Task:
    """Rows in their source's schema and the function that turns one into a conversation record.

    Rows are converted when read, so a large Arrow-backed `datasets.Dataset` stays on disk. A
    record is `{"messages": [...], "task": name, "kind": kind, …}`; categorical records also hold
    `letters` and the answer letter `answer`, GSM8K-style records the reference number `answer`.
    """

    name: str
    kind: str
    rows: Sequence[Mapping[str, Any]]
    convert: Callable[[Mapping[str, Any]], dict[str, Any]]

    def __post_init__(self) -> None:
        if self.kind not in KINDS:
            raise ValueError(f"unknown task kind {self.kind!r}; valid kinds: {', '.join(KINDS)}")

    def __len__(self) -> int:
        return len(self.rows)

    def __getitem__(self, index: int) -> dict[str, Any]:
        if not -len(self) <= index < len(self):
            raise IndexError(f"task {self.name!r} has {len(self)} rows, no row {index}")
        record = self.convert(self.rows[int(index) % len(self)])
        return {**record, "task": self.name, "kind": self.kind}

    def __iter__(self) -> Iterator[dict[str, Any]]:
        return (self[i] for i in range(len(self)))

    def select(self, indices: Sequence[int] | range) -> Task:
        """The task restricted to the rows at indices (in that order)."""
        indices = [int(i) for i in indices]
        if any(not 0 <= i < len(self) for i in indices):
            raise IndexError(f"task {self.name!r} has {len(self)} rows; an index is out of range")
        select = getattr(self.rows, "select", None)  # a datasets.Dataset keeps rows on disk
        rows = select(indices) if callable(select) else [self.rows[i] for i in indices]
        return Task(self.name, self.kind, rows, self.convert)


def split_held_out(task: Task, held_out: int | float, seed: int = 0) -> tuple[Task, Task]:
    """Split a task into (rest, held out): held_out rows (an int) or a fraction (a float)."""
    n = len(task)
    count = round(held_out * n) if isinstance(held_out, float) else held_out
    if not isinstance(count, int) or not 0 <= count <= n:
        raise ValueError(
            f"held_out must be a count in 0…{n} or a fraction in [0, 1], got {held_out}"
        )
    order = np.random.default_rng(seed).permutation(n)
    return task.select(sorted(order[count:])), task.select(sorted(order[:count]))


class Mixture:
    """The records of several tasks in one seeded shuffle, each task repeated for its epochs.

    `epochs` may be fractional: 2.5 is every row twice plus a seeded half of them once more;
    passing a task twice also oversamples it.
    """

    def __init__(self, tasks: Sequence[Task | tuple[Task, float]], seed: int = 0) -> None:
        if not tasks:
            raise ValueError("a mixture needs at least one task")
        self.tasks: list[Task] = []
        self.epochs: list[float] = []
        chunks = []
        for t, entry in enumerate(tasks):
            task, epochs = entry if isinstance(entry, tuple) else (entry, 1.0)
            if not isinstance(task, Task):
                raise TypeError(f"mixture entry {t} is a {type(task).__name__}, not a Task")
            if not (isinstance(epochs, int | float) and math.isfinite(epochs) and epochs >= 0):
                raise ValueError(f"task {task.name!r}: epochs must be ≥ 0, got {epochs!r}")
            self.tasks.append(task)
            self.epochs.append(float(epochs))
            whole, frac = divmod(float(epochs), 1.0)
            rows = [np.tile(np.arange(len(task)), int(whole))]
            extra = round(frac * len(task))
            if extra:
                rows.append(
                    np.sort(np.random.default_rng([seed, t]).permutation(len(task))[:extra])
                )
            local = np.concatenate(rows)
            chunks.append(np.stack([np.full_like(local, t), local], axis=1))
        index = np.concatenate(chunks)
        self._index = index[np.random.default_rng(seed).permutation(len(index))]

    def __len__(self) -> int:
        return len(self._index)

    def __getitem__(self, i: int) -> dict[str, Any]:
        t, row = self._index[i]
        return self.tasks[int(t)][int(row)]

    def __iter__(self) -> Iterator[dict[str, Any]]:
        return (self[i] for i in range(len(self)))

    def counts(self) -> dict[str, int]:
        """How many records of each task (by name) the mixture holds."""
        per_task = Counter(int(t) for t in self._index[:, 0])
        out: Counter[str] = Counter()
        for t, task in enumerate(self.tasks):
            out[task.name] += per_task.get(t, 0)
        return dict(out)

    def order(self) -> list[tuple[str, int]]:
        """(task name, row) of every record in mixture order."""
        return [(self.tasks[int(t)].name, int(row)) for t, row in self._index]
