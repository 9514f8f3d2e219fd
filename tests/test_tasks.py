"""nanolib.tasks: loaders on local files in the real schemas, the tiny world, mixtures, splits."""

import gzip
import json
import re

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from nanolib.chat import normalize_conversation
from nanolib.tasks import (
    TINY_SIZES,
    Mixture,
    SchemaError,
    Task,
    calculator_parts,
    extract_answer,
    gsm8k_record,
    load_task,
    split_held_out,
    tiny_world_rows,
)
from nanolib.tasks.tiny import _fill, cloze_lines, corpus_words, split_of, val_texts

# ------------------------------------------------------------------------------------------------
# fixtures in each data set's own schema (column names, nesting and types as on the hub)

NATALIA = {
    "question": "Natalia sold clips to 48 of her friends in April, and then she sold half as many "
    "clips in May. How many clips did Natalia sell altogether in April and May?",
    "answer": "Natalia sold 48/2 = <<48/2=24>>24 clips in May.\n"
    "Natalia sold 48+24 = <<48+24=72>>72 clips altogether in April and May.\n#### 72",
}
MMLU_ROWS = [
    {"question": "What is 2+2?", "subject": "elementary_mathematics",
     "choices": ["3", "4", "5", "22"], "answer": 1},
    {"question": "Which gas do plants take in?", "subject": "college_biology",
     "choices": ["oxygen", "nitrogen", "carbon dioxide", "helium"], "answer": 2},
]  # fmt: skip
MMLU_SCHEMA = pa.schema(
    [
        ("question", pa.string()),
        ("subject", pa.string()),
        ("choices", pa.list_(pa.string())),
        ("answer", pa.int64()),
    ]
)
ARC_SCHEMA = pa.schema(
    [
        ("id", pa.string()),
        ("question", pa.string()),
        ("choices", pa.struct([("text", pa.list_(pa.string())), ("label", pa.list_(pa.string()))])),
        ("answerKey", pa.string()),
    ]
)
SMOLTALK_SCHEMA = pa.schema(
    [
        ("messages", pa.list_(pa.struct([("content", pa.string()), ("role", pa.string())]))),
        ("source", pa.string()),
    ]
)


def write_parquet(path, rows, schema):
    pq.write_table(pa.Table.from_pylist(rows, schema=schema), path)
    return path


def test_smoltalk_from_a_local_parquet(tmp_path):
    rows = [
        {
            "messages": [
                {"content": "You are kind.", "role": "system"},
                {"content": "Hi", "role": "user"},
                {"content": "Hello!", "role": "assistant"},
            ],
            "source": "smol-magpie-ultra",
        },
        {"messages": [{"content": "2+2?", "role": "user"}, {"content": "4", "role": "assistant"}],
         "source": "everyday-conversations"},
    ]  # fmt: skip
    path = write_parquet(tmp_path / "test-00000-of-00001.parquet", rows, SMOLTALK_SCHEMA)
    task = load_task("smoltalk", "test", data_files=path)
    assert (task.name, task.kind, len(task)) == ("smoltalk", "chat", 2)
    record = task[0]
    assert record["source"] == "smol-magpie-ultra" and record["task"] == "smoltalk"
    assert normalize_conversation(record)[0] == {"role": "user", "content": "You are kind.\n\nHi"}


def test_mmlu_test_and_auxiliary_train_schemas(tmp_path):
    flat = write_parquet(tmp_path / "test.parquet", MMLU_ROWS, MMLU_SCHEMA)
    wrapped_schema = pa.schema([("train", pa.struct(list(MMLU_SCHEMA)))])
    wrapped = write_parquet(
        tmp_path / "aux.parquet", [{"train": r} for r in MMLU_ROWS], wrapped_schema
    )
    test, train = (
        load_task("mmlu", "test", data_files=flat),
        load_task("mmlu", "train", data_files=wrapped),
    )
    for task in (test, train):
        assert (task.kind, len(task)) == ("categorical", 2)
        record = task[1]
        assert record["letters"] == ["A", "B", "C", "D"] and record["answer"] == "C"
        assert record["subject"] == "college_biology"
        prompt = record["messages"][0]["content"]
        assert prompt.startswith("Which gas do plants take in?\n- oxygen [A]\n")
        assert "- carbon dioxide [C]" in prompt
        assert record["messages"][1] == {"role": "assistant", "content": "C"}


def test_arc_keeps_its_own_labels(tmp_path):
    rows = [
        {
            "id": "Mercury_1",
            "question": "Which is a liquid at room temperature?",
            "choices": {"text": ["iron", "water", "salt"], "label": ["A", "B", "C"]},
            "answerKey": "B",
        },
        {
            "id": "NYSEDREGENTS_2",
            "question": "How many legs does an insect have?",
            "choices": {"text": ["4", "6", "8", "10"], "label": ["1", "2", "3", "4"]},
            "answerKey": "2",
        },
    ]
    path = write_parquet(tmp_path / "test.parquet", rows, ARC_SCHEMA)
    task = load_task("arc_challenge", "test", data_files=path)
    assert task.name == "arc_challenge"
    assert task[0]["letters"] == ["A", "B", "C"] and task[0]["answer"] == "B"
    assert task[1]["letters"] == ["1", "2", "3", "4"] and task[1]["answer"] == "2"
    assert "- 6 [2]" in task[1]["messages"][0]["content"]
    assert load_task("arc_easy", "test", data_files=path).name == "arc_easy"


def test_gsm8k_from_parquet_and_jsonl(tmp_path):
    path = write_parquet(
        tmp_path / "test.parquet",
        [NATALIA],
        pa.schema([("question", pa.string()), ("answer", pa.string())]),
    )
    jsonl = tmp_path / "test.jsonl"
    jsonl.write_text(json.dumps(NATALIA) + "\n")
    for files in (path, [jsonl]):
        task = load_task("gsm8k", "test", data_files=files)
        assert task.kind == "generative" and task[0] == {
            **gsm8k_record(NATALIA),
            "task": "gsm8k",
            "kind": "generative",
        }


def test_gsm8k_calculator_steps_become_tool_parts():
    record = gsm8k_record(NATALIA)
    assert record["answer"] == "72"
    assert record["messages"][0] == {"role": "user", "content": NATALIA["question"]}
    assert record["messages"][1]["content"] == [
        {"type": "text", "text": "Natalia sold 48/2 = "},
        {"type": "python", "text": "48/2"},
        {"type": "python_output", "text": "24"},
        {"type": "text", "text": "24 clips in May.\nNatalia sold 48+24 = "},
        {"type": "python", "text": "48+24"},
        {"type": "python_output", "text": "72"},
        {"type": "text", "text": "72 clips altogether in April and May.\n#### 72"},
    ]
    # every GSM8K solution's text survives: parts joined with the <<expr=result>> give it back
    assert calculator_parts("<<2+2>>") == [
        {"type": "python", "text": "2+2"},
        {"type": "python_output", "text": ""},
    ]
    with pytest.raises(SchemaError, match="####"):
        gsm8k_record({"question": "q", "answer": "no final answer"})


@pytest.mark.parametrize(
    "text, number",
    [
        ("so 3+4 = 7\n#### 7", "7"),
        ("#### 1,234", "1234"),
        ("#### -5", "-5"),
        ("#### 2.5", "2.5"),
        ("#### 72.", "72"),
        ("####12", "12"),
        ("the answer is 7", None),
        ("#### .", None),
        ("#### 3 and later #### 4", "3"),
    ],
)
def test_extract_answer(text, number):
    assert extract_answer(text) == number


def test_humaneval_from_a_local_jsonl_gz(tmp_path):
    problem = {
        "task_id": "HumanEval/0",
        "prompt": 'def add(a, b):\n    """Add two numbers."""\n',
        "entry_point": "add",
        "canonical_solution": "    return a + b\n",
        "test": "def check(candidate):\n    assert candidate(1, 2) == 3\n",
    }
    path = tmp_path / "HumanEval.jsonl.gz"
    with gzip.open(path, "wt") as f:
        f.write(json.dumps(problem) + "\n")
    task = load_task("humaneval", "test", path=path)
    record = task[0]
    assert (task.kind, len(task), record["entry_point"]) == ("generative", 1, "add")
    assert record["messages"][1]["content"] == problem["prompt"] + problem["canonical_solution"]
    with pytest.raises(ValueError, match="valid splits: test"):
        load_task("humaneval", "train")


def test_humaneval_shipped_by_the_package():
    task = load_task("humaneval", "test")
    assert len(task) == 164 and task[0]["task_id"] == "HumanEval/0"


def test_loader_errors_are_clear(tmp_path):
    with pytest.raises(ValueError, match="unknown task 'mmlu2'; valid tasks: smoltalk"):
        load_task("mmlu2", "test")
    with pytest.raises(ValueError, match="unknown MMLU split 'val'; valid splits: train"):
        load_task("mmlu", "val")
    with pytest.raises(FileNotFoundError, match="no such data file"):
        load_task("gsm8k", "test", data_files=tmp_path / "missing.parquet")
    gsm = write_parquet(
        tmp_path / "gsm.parquet",
        [NATALIA],
        pa.schema([("question", pa.string()), ("answer", pa.string())]),
    )
    with pytest.raises(SchemaError, match="'choices' field"):  # a GSM8K file read as MMLU
        load_task("mmlu", "test", data_files=gsm)
    (tmp_path / "x.txt").write_text("hi")
    with pytest.raises(ValueError, match="must all be one of"):
        load_task("gsm8k", "test", data_files=tmp_path / "x.txt")


# ------------------------------------------------------------------------------------------------
# the tiny world

SMALL = {"n_train": 60, "n_test": 30}


def split_keys(name, rows):
    """What decides a row's split: the problem text (the source line for a cloze)."""
    if name == "tiny_arithmetic":
        return [r["question"] for r in rows]
    if name == "tiny_cloze":
        return [
            r["question"]
            .split('"')[1]
            .replace("____", r["choices"]["text"][ord(r["answerKey"]) - 65])
            for r in rows
        ]
    if name == "tiny_numbers":
        return [f"{r['question']} {sorted(r['choices'])}" for r in rows]
    return [repr(r["messages"]) for r in rows]


@pytest.mark.parametrize("name", list(TINY_SIZES))
def test_tiny_world_is_reproducible_and_its_splits_disjoint(name):
    make = tiny_world_rows.__wrapped__  # bypass the cache: generate twice for real
    first, again, other = make(name, 0, **SMALL), make(name, 0, **SMALL), make(name, 1, **SMALL)
    assert first == again
    assert first != other
    assert (len(first["train"]), len(first["test"])) == (60, 30)
    for world in (first, other):
        train, test = (set(split_keys(name, world[s])) for s in ("train", "test"))
        assert not train & test
    # a problem's split depends on its text only, so seeds never leak test items into train
    assert not set(split_keys(name, first["train"])) & set(split_keys(name, other["test"]))
    for key in split_keys(name, first["test"]):
        assert split_of(key) == "test"
    task = load_task(name, "test", seed=0, **SMALL)
    for record in task:
        normalize_conversation(record)  # every row converts and renders


def test_tiny_world_default_sizes():
    assert all(test >= 200 for _, test in TINY_SIZES.values())
    assert TINY_SIZES["tiny_arithmetic"][1] >= 400
    for name, (n_train, n_test) in TINY_SIZES.items():
        assert (len(load_task(name, "train")), len(load_task(name, "test"))) == (n_train, n_test)


def _evaluate(expr):
    assert re.fullmatch(r"\d+[-+*]\d+", expr), expr
    a, op, b = re.split(r"([-+*])", expr)
    return {"+": int(a) + int(b), "-": int(a) - int(b), "*": int(a) * int(b)}[op]


def test_tiny_arithmetic_steps_are_right_and_small():
    steps_seen = set()
    for record in load_task("tiny_arithmetic", "test"):
        parts = record["messages"][1]["content"]
        calls = [p["text"] for p in parts if p["type"] == "python"]
        outputs = [p["text"] for p in parts if p["type"] == "python_output"]
        assert [str(_evaluate(c)) for c in calls] == outputs
        assert outputs[-1] == record["answer"] and int(record["answer"]) >= 0
        # each result is written into the text right after the tool's output
        for i, part in enumerate(parts):
            if part["type"] == "python_output":
                assert parts[i + 1]["text"].startswith(part["text"])
        steps_seen.add(len(calls))
        assert len(record["messages"][0]["content"]) < 240
    assert steps_seen == {1, 2, 3}


@pytest.mark.parametrize("name", ["tiny_numbers", "tiny_cloze"])
def test_tiny_multiple_choice_rows(name):
    for record in load_task(name, "test"):
        assert len(record["letters"]) == 4 and record["answer"] in record["letters"]
        choices = re.findall(r"^- (.*) \[[A-D]\]$", record["messages"][0]["content"], re.M)
        assert len(set(choices)) == 4


def test_tiny_numbers_answers_are_right():
    for record in load_task("tiny_numbers", "test"):
        prompt = record["messages"][0]["content"]
        assert prompt.startswith("Which of these is a number?")
        choices = re.findall(r"^- (.*) \[[A-D]\]$", prompt, re.M)
        picked = choices[record["letters"].index(record["answer"])]
        assert re.fullmatch(r"[1-9]\d", picked)
        assert sum(c.isdigit() for c in choices) == 1


def test_tiny_cloze_comes_from_the_held_out_corpus():
    lines = {line for _, line in cloze_lines(val_texts())}
    real = corpus_words(val_texts())
    rows = tiny_world_rows("tiny_cloze")
    for row in rows["train"][:50] + rows["test"][:50]:
        blanked = row["question"].split('"')[1]
        answer = row["choices"]["text"][row["choices"]["label"].index(row["answerKey"])]
        assert blanked.replace("____", answer, 1) in lines
        # the distractors reorder the answer's letters and are no word of the corpus
        for fake in row["choices"]["text"]:
            assert sorted(fake) == sorted(answer)
            assert fake == answer or fake not in real


def test_tiny_world_errors():
    with pytest.raises(ValueError, match="ran out of distinct"):
        _fill(lambda i: ("same", "same", {}), 5, 5, "constant")
    with pytest.raises(ValueError, match="unknown tiny task"):
        tiny_world_rows("tiny_poetry")
    with pytest.raises(ValueError, match="valid splits: train, test"):
        load_task("tiny_chat", "validation")


# ------------------------------------------------------------------------------------------------
# tasks, held-out splits and mixtures


def letters_task(name, n):
    return Task(name, "chat", [{"i": i} for i in range(n)], lambda row: {"messages": [], **row})


def test_task_select_and_errors():
    task = letters_task("a", 5)
    assert [r["i"] for r in task.select([4, 0])] == [4, 0]
    assert task[-1]["i"] == 4 and task[0]["task"] == "a"
    with pytest.raises(IndexError, match="no row 5"):
        task[5]
    with pytest.raises(ValueError, match="unknown task kind"):
        Task("a", "essay", [], dict)


def test_split_held_out():
    task = letters_task("a", 20)
    rest, held = split_held_out(task, 0.25, seed=3)
    assert (len(rest), len(held)) == (15, 5)
    ids = [r["i"] for r in rest] + [r["i"] for r in held]
    assert sorted(ids) == list(range(20))
    assert [r["i"] for r in split_held_out(task, 5, seed=3)[1]] == [r["i"] for r in held]
    assert [r["i"] for r in split_held_out(task, 5, seed=4)[1]] != [r["i"] for r in held]
    with pytest.raises(ValueError, match="held_out"):
        split_held_out(task, 21)


def test_mixture_is_deterministic_and_honours_epochs():
    a, b, c = letters_task("a", 10), letters_task("b", 8), letters_task("c", 4)
    mix = Mixture([(a, 2.0), (b, 0.5), c], seed=0)
    assert mix.counts() == {"a": 20, "b": 4, "c": 4}
    assert len(mix) == 28
    order = mix.order()
    assert order == Mixture([(a, 2.0), (b, 0.5), c], seed=0).order()
    assert order != Mixture([(a, 2.0), (b, 0.5), c], seed=1).order()
    b_rows = [row for name, row in order if name == "b"]
    assert len(set(b_rows)) == 4  # half of b: distinct rows
    assert sorted(row for name, row in order if name == "a") == sorted(list(range(10)) * 2)
    assert [r["task"] for r in mix] == [name for name, _ in order]
    assert order[:10] != sorted(order[:10])  # shuffled, not task after task
    with pytest.raises(ValueError, match="epochs must be"):
        Mixture([(a, -1.0)])
    with pytest.raises(ValueError, match="at least one task"):
        Mixture([])


def test_mixture_of_tiny_tasks_renders():
    tasks = [load_task(name, "train", **SMALL) for name in TINY_SIZES]
    mix = Mixture(tasks, seed=0)
    assert mix.counts() == {name: 60 for name in TINY_SIZES}
    for record in mix:
        normalize_conversation(record)
