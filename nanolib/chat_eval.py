"""Chat evals: categorical (multiple choice by restricted logits), generative (answer checks),
95% binomial intervals, and ChatCORE.

Categorical: prime the model with the question up to `<|assistant_start|>` and read the logits
of its next token restricted to the choice letters; the largest wins (no sampling). Generative:
the engine writes a greedy completion, calling tools as it goes (`greedy_completions`), and the
completion is checked: GSM8K's way for word problems (the number after `####`, commas
stripped), and for HumanEval by running the code with the problem's tests in the sandbox
(`humaneval_passes`). `evaluate_tasks` scores any list of tasks of both kinds. ChatCORE is the
mean over tasks of the centred accuracy (accuracy − baseline) / (1 − baseline), the baseline
being random guessing: 1/choices for categorical tasks, 0 for generative ones. Every accuracy
comes with its item count and a 95% Wilson interval (`EvalResult`).
"""

from __future__ import annotations

import math
import re
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from statistics import NormalDist
from typing import Any

import numpy as np
import torch
import torch.nn as nn

from nanolib.chat import messages_of, render_for_completion
from nanolib.device import autocast_context
from nanolib.engine import Engine
from nanolib.model import unwrap_model
from nanolib.sandbox import humaneval_program, run_python
from nanolib.tasks import Task, extract_answer
from nanolib.tokenizer import Tokenizer
from nanolib.tools import Tool, calculator

Record = Mapping[str, Any]


def wilson_interval(correct: int, items: int, confidence: float = 0.95) -> tuple[float, float]:
    """Wilson score interval for a binomial proportion correct/items."""
    if not (isinstance(items, int) and items > 0):
        raise ValueError(f"an interval needs at least one item, got items={items!r}")
    if not (isinstance(correct, int) and 0 <= correct <= items):
        raise ValueError(f"correct must be a whole number in 0…{items}, got {correct!r}")
    if not 0 < confidence < 1:
        raise ValueError(f"confidence must be in (0, 1), got {confidence}")
    z = NormalDist().inv_cdf(0.5 + confidence / 2)
    p, n = correct / items, items
    denom = 1 + z * z / n
    centre = (p + z * z / (2 * n)) / denom
    half = z * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n)) / denom
    return max(0.0, centre - half), min(1.0, centre + half)


def centered_accuracy(accuracy: float, baseline: float) -> float:
    """(accuracy − baseline) / (1 − baseline): 0 for random guessing, 1 for perfect."""
    if not 0 <= baseline < 1:
        raise ValueError(f"baseline must be in [0, 1), got {baseline}")
    return (accuracy - baseline) / (1 - baseline)


@dataclass(frozen=True)
class EvalResult:
    """One task's score: totals, the random-guess baseline, and the 95% interval."""

    task: str
    kind: str  # "categorical" | "generative"
    items: int
    correct: int
    baseline: float

    @property
    def accuracy(self) -> float:
        """Share of items answered correctly."""
        return self.correct / self.items

    @property
    def interval(self) -> tuple[float, float]:
        """95% Wilson interval of the accuracy."""
        return wilson_interval(self.correct, self.items)

    @property
    def centered(self) -> float:
        """Centred accuracy: 0 at the baseline, 1 when perfect."""
        return centered_accuracy(self.accuracy, self.baseline)

    def to_dict(self) -> dict[str, Any]:
        """A flat dict for metrics, manifests and tables."""
        low, high = self.interval
        return {
            "task": self.task,
            "kind": self.kind,
            "items": self.items,
            "correct": self.correct,
            "accuracy": self.accuracy,
            "ci_low": low,
            "ci_high": high,
            "baseline": self.baseline,
            "centered": self.centered,
        }


def chatcore(results: Iterable[EvalResult]) -> float:
    """ChatCORE: the mean centred accuracy over the tasks."""
    values = [r.centered for r in results]
    if not values:
        raise ValueError("ChatCORE needs at least one task result")
    return sum(values) / len(values)


def _name(records: Sequence[Record], name: str | None) -> str:
    if name is not None:
        return name
    names = {r.get("task") for r in records}
    return str(names.pop()) if len(names) == 1 else "mixed"


# ------------------------------------------------------------------------------------------------
# categorical


def letter_ids(tokenizer: Tokenizer, letters: Sequence[str]) -> list[int]:
    """The token id of each choice letter; each must be exactly one token."""
    ids = []
    for letter in letters:
        encoded = tokenizer.encode(letter)
        if len(encoded) != 1:
            raise ValueError(
                f"choice letter {letter!r} is {len(encoded)} tokens in this tokenizer, not one; "
                "categorical eval reads a single next-token logit per choice"
            )
        ids.append(encoded[0])
    return ids


def _choices(record: Record) -> tuple[list[str], str]:
    letters = record.get("letters")
    if not letters:
        raise ValueError(f"record of task {record.get('task')!r} has no `letters`: not categorical")
    answer = record.get("answer")
    if answer is None:  # fall back to the reference reply itself
        answer = messages_of(record)[-1]["content"]
    if answer not in letters:
        raise ValueError(f"answer {answer!r} is not one of the letters {list(letters)}")
    return list(letters), answer


@torch.inference_mode()
def categorical_predictions(
    model: nn.Module, tokenizer: Tokenizer, records: Sequence[Record], batch_size: int = 32
) -> list[str]:
    """The letter the model ranks highest for each record (logits restricted to its letters)."""
    model = unwrap_model(model)
    seq_len = model.config.seq_len
    device = next(model.parameters()).device
    prompts, choices = [], []
    for record in records:
        letters, _ = _choices(record)
        ids = render_for_completion(tokenizer, record)
        prompts.append(ids[-seq_len:])  # keep the end: the question and <|assistant_start|>
        choices.append((letters, letter_ids(tokenizer, letters)))
    predictions = []
    for start in range(0, len(prompts), batch_size):
        batch = prompts[start : start + batch_size]
        width = max(len(p) for p in batch)
        idx = torch.zeros((len(batch), width), dtype=torch.long)
        for b, row in enumerate(batch):  # right padding: causal attention never looks ahead
            idx[b, : len(row)] = torch.tensor(row)
        with autocast_context(device):
            logits = model(idx.to(device))
        last = logits[torch.arange(len(batch)), torch.tensor([len(p) - 1 for p in batch])]
        for b, (letters, ids) in enumerate(choices[start : start + len(batch)]):
            scores = last[b, ids].float()
            predictions.append(letters[int(scores.argmax())])
    return predictions


def evaluate_categorical(
    model: nn.Module,
    tokenizer: Tokenizer,
    records: Sequence[Record],
    name: str | None = None,
    batch_size: int = 32,
) -> EvalResult:
    """Accuracy of a multiple-choice task; the baseline is the mean of 1/choices."""
    records = list(records)
    if not records:
        raise ValueError("nothing to evaluate: no records")
    predictions = categorical_predictions(model, tokenizer, records, batch_size)
    answers = [_choices(r) for r in records]
    correct = sum(p == answer for p, (_, answer) in zip(predictions, answers))
    baseline = sum(1 / len(letters) for letters, _ in answers) / len(answers)
    return EvalResult(_name(records, name), "categorical", len(records), correct, baseline)


# ------------------------------------------------------------------------------------------------
# generative


def reference_answer(record: Record) -> str:
    """The reference number of a GSM8K-style record (its `answer`, else its last `####`)."""
    if record.get("answer") is not None:
        return str(record["answer"])
    content = messages_of(record)[-1]["content"]
    text = content if isinstance(content, str) else "".join(p["text"] for p in content)
    answer = extract_answer(text)
    if answer is None:
        raise ValueError("the record's last message has no '#### <number>' answer")
    return answer


def answer_is_correct(record: Record, completion: str) -> bool:
    """GSM8K's rule: the completion's number after `####` equals the reference's."""
    predicted = extract_answer(completion)
    return predicted is not None and predicted == reference_answer(record)


def evaluate_generative(
    records: Sequence[Record],
    complete: Callable[[Record], str],
    check: Callable[[Record, str], bool] = answer_is_correct,
    name: str | None = None,
) -> EvalResult:
    """Accuracy of a generative task: complete(record) writes a reply, check grades it."""
    records = list(records)
    if not records:
        raise ValueError("nothing to evaluate: no records")
    correct = sum(bool(check(r, complete(r))) for r in records)
    return EvalResult(_name(records, name), "generative", len(records), correct, 0.0)


CODE_FENCE = re.compile(r"```(?:python|py)?[ \t]*\n(.*?)(?:```|$)", re.DOTALL)


def extract_code(completion: str) -> str:
    """The code of a completion: its first fenced block if it has one, else all of it."""
    match = CODE_FENCE.search(completion)
    return match.group(1) if match else completion


def humaneval_passes(record: Record, completion: str, timeout_s: float = 10.0) -> bool:
    """Whether the completion's code passes the problem's tests, run in the sandbox.

    The program is the prompt, the code, the tests and `check(entry_point)`: a completion that
    continues the prompt's function body and one that writes the whole function again both run.
    """
    for key in ("prompt", "test", "entry_point"):
        if key not in record:
            raise ValueError(f"a HumanEval record needs {key!r}; it has {sorted(record)}")
    program = humaneval_program(dict(record), extract_code(completion))
    return run_python(program, timeout_s=timeout_s).ok


def check_for(record: Record) -> Callable[[Record, str], bool]:
    """How a generative record's completion is graded: tests for code, else the `####` answer."""
    return humaneval_passes if "entry_point" in record else answer_is_correct


def greedy_completions(
    engine: Engine, records: Sequence[Record], max_new_tokens: int, batch_size: int = 32
) -> list[str]:
    """The engine's greedy reply to each record (tools run mid-answer), as text.

    Prompts are batched by length; a batch gets max_new_tokens or what fits after its longest
    prompt in the model's context. A prompt that leaves no room at all gets an empty reply.
    The reply stops at `<|assistant_end|>`, which is not part of the text.
    """
    tokenizer = engine.tokenizer
    if tokenizer is None:
        raise ValueError("generative eval needs an engine with a tokenizer")
    if max_new_tokens < 1 or batch_size < 1:
        raise ValueError(
            f"need max_new_tokens ≥ 1 and batch_size ≥ 1, got {max_new_tokens}, {batch_size}"
        )
    seq_len = engine.config.seq_len
    prompts = [render_for_completion(tokenizer, r) for r in records]
    order = sorted(range(len(prompts)), key=lambda i: len(prompts[i]))
    fits = [i for i in order if len(prompts[i]) < seq_len]
    stops = set(engine.default_stop_tokens)
    out = [""] * len(prompts)
    for start in range(0, len(fits), batch_size):
        batch = fits[start : start + batch_size]
        room = min(max_new_tokens, seq_len - len(prompts[batch[-1]]))
        gen = engine.generate_many([prompts[i] for i in batch], 1, room, temperature=0.0)
        for i, tokens in zip(batch, gen.tokens):
            if tokens and tokens[-1] in stops:
                tokens = tokens[:-1]
            out[i] = tokenizer.decode(tokens)
    return out


def evaluate_generative_task(
    engine: Engine,
    records: Sequence[Record],
    max_new_tokens: int = 512,
    batch_size: int = 32,
    name: str | None = None,
) -> tuple[EvalResult, list[str]]:
    """Greedy completions of a generative task, graded by `check_for`; the result and replies."""
    records = list(records)
    if not records:
        raise ValueError("nothing to evaluate: no records")
    replies = greedy_completions(engine, records, max_new_tokens, batch_size)
    by_position = iter(replies)
    result = evaluate_generative(
        records, lambda r: next(by_position), lambda r, c: check_for(r)(r, c), name
    )
    return result, replies


def evaluate_tasks(
    model: nn.Module,
    tokenizer: Tokenizer,
    tasks: Sequence[Task],
    max_items: int | None = None,
    max_new_tokens: int = 512,
    batch_size: int = 32,
    tools: Mapping[str, Tool] | None = None,
    seed: int = 0,
) -> list[EvalResult]:
    """Score a model on each task (all of it, or max_items records picked with seed).

    Generative answers may call `tools` (default: the calculator alone, as nanochat's evals).
    ChatCORE over all of them is `chatcore(results)`.
    """
    engine = Engine(model, tokenizer, {"calculator": calculator} if tools is None else tools)
    results = []
    for task in tasks:
        if task.kind == "chat":
            raise ValueError(f"task {task.name!r} is conversations: it has no answers to score")
        if max_items is not None and max_items < len(task):
            picked = np.random.default_rng(seed).permutation(len(task))[:max_items]
            task = task.select(sorted(int(i) for i in picked))
        if task.kind == "categorical":
            results.append(evaluate_categorical(model, tokenizer, task, task.name, batch_size))
        else:
            result, _ = evaluate_generative_task(
                engine, task, max_new_tokens, batch_size, task.name
            )
            results.append(result)
    return results
