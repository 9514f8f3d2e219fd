"""Chat tasks as conversation records: the real data sets, the tiny world, and their mixtures.

`load_task(name, split)` is the one door: `smoltalk`, `mmlu`, `gsm8k`, `arc_easy`,
`arc_challenge`, `humaneval` (read with `datasets.load_dataset` or from local files in their
schema), and the tiny world's `tiny_chat`, `tiny_numbers`, `tiny_cloze`, `tiny_arithmetic`
(generated from a seed). Every task has a held-out split: "test" (or "validation").
"""

from __future__ import annotations

from typing import Any

from nanolib.tasks.formats import (
    SchemaError,
    arc_record,
    calculator_parts,
    extract_answer,
    gsm8k_record,
    humaneval_record,
    mmlu_record,
    render_choices,
    smoltalk_record,
)
from nanolib.tasks.hub import load_arc, load_gsm8k, load_humaneval, load_mmlu, load_smoltalk
from nanolib.tasks.task import KINDS, Mixture, Task, split_held_out
from nanolib.tasks.tiny import SIZES as TINY_SIZES
from nanolib.tasks.tiny import load_tiny, tiny_world_rows

__all__ = [
    "KINDS",
    "TASK_NAMES",
    "TINY_SIZES",
    "Mixture",
    "SchemaError",
    "Task",
    "arc_record",
    "calculator_parts",
    "extract_answer",
    "gsm8k_record",
    "humaneval_record",
    "load_task",
    "mmlu_record",
    "render_choices",
    "smoltalk_record",
    "split_held_out",
    "tiny_world_rows",
]

HUB_LOADERS = {
    "smoltalk": load_smoltalk,
    "mmlu": load_mmlu,
    "gsm8k": load_gsm8k,
    "arc_easy": lambda split, **kw: load_arc("easy", split, **kw),
    "arc_challenge": lambda split, **kw: load_arc("challenge", split, **kw),
    "humaneval": load_humaneval,
}
TASK_NAMES = (*HUB_LOADERS, *TINY_SIZES)


def load_task(name: str, split: str, **options: Any) -> Task:
    """One split of a task by name; options go to its loader (data_files, path, seed, sizes)."""
    if name in TINY_SIZES:
        return load_tiny(name, split, **options)
    if name not in HUB_LOADERS:
        raise ValueError(f"unknown task {name!r}; valid tasks: {', '.join(TASK_NAMES)}")
    return HUB_LOADERS[name](split, **options)
