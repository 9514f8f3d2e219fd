"""The tiny world: chat tasks generated from a seed, in the real data sets' schemas.

At the CPU presets the book cannot download SmolTalk, MMLU, ARC or GSM8K, and a 1M-parameter
model could not learn them anyway. The tiny world stands in for them, row for row in their
schemas, so the loaders' converters, the chat template, the mixture and the evals run unchanged:

- `tiny_chat` (SmolTalk schema): greetings, what the model is, what it was trained on, what it
  can do; one to three exchanges, sometimes after a system message.
- `tiny_numbers` (MMLU schema): "Which of these is a number?", a two-digit number among three
  words (some of them number words such as "seven").
- `tiny_cloze` (ARC schema): a line of the corpus's held-out (val) split with one word blanked;
  the choices are that word and three reorderings of its letters that are no word of the split.
  The pretrained model knows the corpus's words, but it never saw these lines.
- `tiny_arithmetic` (GSM8K schema): word problems of one to three steps on small numbers; every
  step is a `<<expr=result>>` calculator call, so the model must copy the right numbers into the
  call and the tool's result into its answer, not do the arithmetic itself.

In both multiple-choice tasks the right choice can be told by looking at it alone. A model of a
million parameters fine-tuned for a minute can bind such a choice to its letter; a choice that is
right only relative to the question (the number after n, the largest of four, a word of the same
document that fits the sense of the line) is a much harder binding for it.

Each item is drawn from its own random stream (seed, task, index), built on
`random.Random.random()`, whose sequence Python guarantees across versions. Whether an item is
train or test depends only on the hash of its text (a quarter goes to test), so the two splits
never share a problem, whatever the seed or the sizes.
"""

from __future__ import annotations

import hashlib
import random
import re
from collections.abc import Callable, Sequence
from collections.abc import Set as AbstractSet
from functools import lru_cache
from typing import Any

from nanolib.tasks.formats import arc_record, gsm8k_record, mmlu_record, smoltalk_record
from nanolib.tasks.task import Task

MODEL_NAME = "nanobook"
TEST_SHARE = 4  # an item whose key hashes to 0 modulo this is a test item
SIZES = {  # name -> (train, test): ≥ 200 held-out items per task, ≥ 400 for the RL problems
    "tiny_chat": (800, 200),
    "tiny_numbers": (2000, 300),
    "tiny_cloze": (2000, 300),
    "tiny_arithmetic": (4000, 500),
}
SPLITS = ("train", "test")


class _Draw:
    """Random picks from one stream, keyed by anything printable."""

    def __init__(self, *key: Any) -> None:
        digest = hashlib.sha256(repr(key).encode()).digest()
        self._random = random.Random(int.from_bytes(digest[:8], "big")).random

    def int(self, low: int, high: int) -> int:
        """A whole number in [low, high]."""
        return low + int(self._random() * (high - low + 1))

    def pick(self, seq: Sequence[Any]) -> Any:
        """One element of seq."""
        return seq[int(self._random() * len(seq))]

    def chance(self, p: float) -> bool:
        """True with probability p."""
        return self._random() < p

    def shuffled(self, seq: Sequence[Any]) -> list[Any]:
        """A shuffled copy of seq (Fisher–Yates)."""
        out = list(seq)
        for i in range(len(out) - 1, 0, -1):
            j = self.int(0, i)
            out[i], out[j] = out[j], out[i]
        return out

    def sample(self, seq: Sequence[Any], k: int) -> list[Any]:
        """k distinct elements of seq."""
        return self.shuffled(seq)[:k]


def split_of(key: str) -> str:
    """The split an item belongs to, from its key's hash alone."""
    bucket = int.from_bytes(hashlib.sha256(key.encode()).digest()[:8], "big") % TEST_SHARE
    return "test" if bucket == 0 else "train"


Item = tuple[str, str, dict[str, Any]] | None  # (split key, dedup text, row), None: no item


def _fill(make: Callable[[int], Item], n_train: int, n_test: int, what: str) -> dict[str, tuple]:
    """Draw items 0, 1, 2, … into their hashed split until both hold enough distinct ones."""
    need = {"train": n_train, "test": n_test}
    out: dict[str, list] = {"train": [], "test": []}
    seen: set[str] = set()
    tries = 40 * (n_train + n_test) + 1000
    for i in range(tries):
        if all(len(out[s]) >= need[s] for s in SPLITS):
            break
        item = make(i)
        if item is None:
            continue
        key, text, row = item
        split = split_of(key)
        if len(out[split]) < need[split] and text not in seen:
            seen.add(text)
            out[split].append(row)
    if all(len(out[s]) >= need[s] for s in SPLITS):
        return {s: tuple(rows) for s, rows in out.items()}
    raise ValueError(
        f"the tiny world ran out of distinct {what} items: asked for {n_train} train and "
        f"{n_test} test, found {len(out['train'])} and {len(out['test'])}; ask for fewer"
    )


# ------------------------------------------------------------------------------------------------
# arithmetic word problems (GSM8K schema)

PEOPLE = (
    ("Anna", "she", "her"),
    ("Ben", "he", "him"),
    ("Cara", "she", "her"),
    ("Dan", "he", "him"),
    ("Eve", "she", "her"),
    ("Finn", "he", "him"),
    ("Gina", "she", "her"),
    ("Hugo", "he", "him"),
    ("Ivy", "she", "her"),
    ("Jack", "he", "him"),
)
THINGS = ("apples", "eggs", "coins", "books", "pens", "shells", "stamps", "cards", "beads", "nuts")
GAINS = (
    "{p} buys {n} more.",
    "{p} finds {n} more.",
    "{f} gives {o} {n} more.",
    "{p} gets {n} more.",
)
LOSSES = ("{p} gives {n} to {f}.", "{p} loses {n}.", "{p} sells {n}.", "{p} uses {n}.")
STARTS = ("{N} has {n} {t}.", "{N} owns {n} {t}.", "There are {n} {t} in {N}'s bag.")
GROUPS = ("{N} has {a} bags with {b} {t} in each.", "{N} buys {a} boxes of {b} {t}.")
ASKS = ("How many {t} does {N} have now?", "How many {t} does {N} have?", "How many {t} are left?")


def arithmetic_row(draw: _Draw, max_number: int = 20, max_steps: int = 3) -> dict[str, str]:
    """One word problem of 1…max_steps calculator steps, as a GSM8K row {question, answer}."""
    name, subj, obj = draw.pick(PEOPLE)
    friend = draw.pick([p[0] for p in PEOPLE if p[0] != name])
    things = draw.pick(THINGS)
    steps = draw.int(1, max_steps)
    fmt = {"N": name, "p": subj.capitalize(), "o": obj, "f": friend, "t": things}
    sentences, lines = [], []

    def calc(x: int, op: str, y: int) -> int:
        result = {"+": x + y, "-": x - y, "*": x * y}[op]
        expr = f"{x}{op}{y}"
        lines.append(f"{expr} = <<{expr}={result}>>{result}")
        return result

    if draw.chance(0.3):  # a product opens the problem and counts as a step
        a, b = draw.int(2, 9), draw.int(2, 9)
        sentences.append(draw.pick(GROUPS).format(a=a, b=b, **fmt))
        total, steps = calc(a, "*", b), steps - 1
    else:
        total = draw.int(2, max_number)
        sentences.append(draw.pick(STARTS).format(n=total, **fmt))
    for _ in range(steps):
        if total > 1 and draw.chance(0.5):
            n = draw.int(1, min(total - 1, max_number))
            sentences.append(draw.pick(LOSSES).format(n=n, **fmt))
            total = calc(total, "-", n)
        else:
            n = draw.int(1, max_number)
            sentences.append(draw.pick(GAINS).format(n=n, **fmt))
            total = calc(total, "+", n)
    sentences.append(draw.pick(ASKS).format(**fmt))
    return {"question": " ".join(sentences), "answer": "\n".join([*lines, f"#### {total}"])}


# ------------------------------------------------------------------------------------------------
# number sense, multiple choice (MMLU schema)


WORDS = (  # the distractors of a number question: everyday words, some of them number words
    "apple", "bread", "chair", "cloud", "dream", "fire", "gold", "green", "happy", "horse",
    "house", "king", "light", "music", "night", "river", "seven", "sheep", "ship", "stone",
    "table", "three", "tree", "water",
)  # fmt: skip


def numbers_row(draw: _Draw) -> tuple[str, dict[str, Any]]:
    """One four-choice question, a two-digit number among three words, as an MMLU row and key."""
    number = str(draw.int(10, 99))
    choices = draw.shuffled([number, *draw.sample(WORDS, 3)])
    question = "Which of these is a number?"
    row = {
        "question": question,
        "subject": "number_sense",
        "choices": choices,
        "answer": choices.index(number),
    }
    return f"{question} {sorted(choices)}", row


# ------------------------------------------------------------------------------------------------
# cloze, multiple choice (ARC schema)

# blanks and distractors: whole lower-case words of 4+ letters (not "wonder" of "wonder'd")
WORD = re.compile(r"(?<![\w'])[a-z]{4,}(?![\w'])")
VERSE = re.compile(r"^\d+\s+")


def cloze_lines(texts: Sequence[str]) -> list[tuple[int, str]]:
    """(document number, line) of every line fit for a cloze: 6–20 words, not a heading."""
    lines = []
    for d, text in enumerate(texts):
        for line in text.splitlines()[1:]:  # the first line is the work's title
            line = VERSE.sub("", line.strip())
            if "[" in line or line.endswith(":") or re.search(r"\b(ACT|SCENE)\b", line):
                continue
            if 6 <= len(line.split()) <= 20 and WORD.search(line):
                lines.append((d, line))
    return lines


def scrambles(draw: _Draw, word: str, real: AbstractSet[str], k: int = 3) -> list[str] | None:
    """k distinct reorderings of word's letters that are no word of the corpus, or None."""
    out: list[str] = []
    for _ in range(30):
        fake = "".join(draw.shuffled(word))
        if fake not in real and fake not in out:
            out.append(fake)
            if len(out) == k:
                return out
    return None


def cloze_row(draw: _Draw, lines: Sequence[tuple[int, str]], real: AbstractSet[str]):
    """One cloze question as an ARC row and its split key (the line), or None if none fits."""
    _, line = draw.pick(lines)
    spots = list(WORD.finditer(line))
    if not spots:
        return None
    spot = draw.pick(spots)
    answer = spot.group(0)
    fakes = scrambles(draw, answer, real)
    if fakes is None:  # a word like "sees" has too few reorderings
        return None
    words = draw.shuffled([answer, *fakes])
    labels = ["A", "B", "C", "D"]
    blanked = f"{line[: spot.start()]}____{line[spot.end() :]}"
    row = {
        "id": f"tiny-cloze-{hashlib.sha256(line.encode()).hexdigest()[:12]}-{spot.start()}",
        "question": f'Which word fills the blank? "{blanked}"',
        "choices": {"text": words, "label": labels},
        "answerKey": labels[words.index(answer)],
    }
    return line, row


def corpus_words(texts: Sequence[str]) -> frozenset[str]:
    """Every lower-case word of 4+ letters of the texts."""
    return frozenset(w for text in texts for w in WORD.findall(text))


def val_texts() -> list[str]:
    """The documents of the tiny corpus's held-out (val) split, read locally with pyarrow."""
    import pyarrow.parquet as pq

    from nanolib.data import shard_paths, verify_shard

    texts = []
    for path in shard_paths("tiny", "val"):
        verify_shard(path)
        texts += pq.read_table(path, columns=["text"]).column("text").to_pylist()
    return texts


# ------------------------------------------------------------------------------------------------
# short conversations (SmolTalk schema)

SYSTEMS = (
    "You are a helpful assistant.",
    "You are {m}, a small and friendly chat model.",
    "Keep your answers short.",
)
EXCHANGES: dict[str, tuple[tuple[str, ...], tuple[str, ...]]] = {  # kind -> (user, assistant)
    "greeting": (
        ("Hello", "Hello!", "Hi", "Hi!", "Hi there.", "Hey", "Good morning!", "Good evening."),
        (
            "Hello! How can I help you today?",
            "Hi! What can I do for you?",
            "Hello! It is nice to meet you.",
            "Good day to you! What would you like to talk about?",
        ),
    ),
    "identity": (
        (
            "Who are you?",
            "What are you?",
            "What is your name?",
            "Are you a person?",
            "Tell me about yourself.",
            "Are you a robot?",
        ),  # fmt: skip
        (
            "I am {m}, a small language model. I am not a person.",
            "My name is {m}. I am a tiny chat model trained from scratch in a book.",
            "I am {m}, a very small computer program that writes text.",
        ),
    ),
    "training": (
        (
            "What were you trained on?",
            "What did you read?",
            "Where does your knowledge come from?",
            "What data did you learn from?",
            "What books do you know?",
        ),  # fmt: skip
        (
            "I was trained on public-domain English: the King James Bible, the plays of "
            "Shakespeare, Alice in Wonderland and Paradise Lost.",
            "I learned from old books: the King James Bible, Shakespeare, Lewis Carroll and "
            "John Milton.",
            "I read about ten megabytes of old English text, mostly the Bible and Shakespeare.",
        ),
    ),
    "ability": (
        ("What can you do?", "How can you help me?", "What are you good at?"),
        (
            "I can answer simple questions, pick an answer from a list, and solve small "
            "arithmetic problems with a calculator.",
            "I can chat a little and do small sums with the help of a calculator.",
        ),
    ),
    "thanks": (
        ("Thank you!", "Thanks.", "Thanks a lot!"),
        ("You are welcome!", "Glad to help.", "Any time!"),
    ),
    "bye": (
        ("Goodbye.", "Bye!", "See you later."),
        ("Goodbye! Have a nice day.", "Farewell!", "Bye! Come back soon."),
    ),
}
OPENERS = ("greeting", "identity", "training", "ability")


def chat_row(draw: _Draw, model_name: str = MODEL_NAME) -> dict[str, Any]:
    """One short conversation (1–3 exchanges) as a SmolTalk row."""
    messages = []
    if draw.chance(0.2):
        messages.append({"role": "system", "content": draw.pick(SYSTEMS).format(m=model_name)})
    kinds = [draw.pick(OPENERS)]
    for _ in range(draw.int(0, 2)):
        kinds.append(draw.pick([k for k in EXCHANGES if k not in kinds]))
    for kind in kinds:
        users, replies = EXCHANGES[kind]
        user, reply = draw.pick(users), draw.pick(replies).format(m=model_name)
        if kind == "greeting" and draw.chance(0.4):
            person = draw.pick(PEOPLE)[0]
            user = f"{user.rstrip('.!')}, I am {person}."
            reply = reply.replace("!", f", {person}!", 1) if "!" in reply else reply
        messages += [{"role": "user", "content": user}, {"role": "assistant", "content": reply}]
    return {"messages": messages, "source": "tiny-world"}


# ------------------------------------------------------------------------------------------------
# the world


@lru_cache(maxsize=8)
def tiny_world_rows(
    name: str, seed: int = 0, n_train: int | None = None, n_test: int | None = None
) -> dict[str, tuple[dict[str, Any], ...]]:
    """Rows of one tiny task, {"train": (...), "test": (...)}, in its data set's schema."""
    if name not in SIZES:
        raise ValueError(f"unknown tiny task {name!r}; valid tasks: {', '.join(SIZES)}")
    n_train = SIZES[name][0] if n_train is None else n_train
    n_test = SIZES[name][1] if n_test is None else n_test
    if name == "tiny_arithmetic":

        def make(i: int) -> Item:
            row = arithmetic_row(_Draw(seed, name, i))
            return row["question"], row["question"], row

    elif name == "tiny_numbers":

        def make(i: int) -> Item:
            key, row = numbers_row(_Draw(seed, name, i))
            return key, f"{row['question']} {row['choices']}", row

    elif name == "tiny_cloze":
        texts = val_texts()
        lines, real = cloze_lines(texts), corpus_words(texts)

        def make(i: int) -> Item:
            made = cloze_row(_Draw(seed, name, i), lines, real)
            if made is None:
                return None
            key, row = made
            return key, f"{row['question']} {row['choices']['text']}", row

    else:

        def make(i: int) -> Item:
            row = chat_row(_Draw(seed, name, i))
            text = repr(row["messages"])
            return text, text, row

    return _fill(make, n_train, n_test, name)


CONVERTERS = {
    "tiny_chat": ("chat", smoltalk_record),
    "tiny_numbers": ("categorical", mmlu_record),
    "tiny_cloze": ("categorical", arc_record),
    "tiny_arithmetic": ("generative", gsm8k_record),
}


def load_tiny(
    name: str, split: str, seed: int = 0, n_train: int | None = None, n_test: int | None = None
) -> Task:
    """One tiny task's split as a Task, read through the converter of the schema it imitates."""
    if split not in SPLITS:
        raise ValueError(f"unknown tiny-world split {split!r}; valid splits: {', '.join(SPLITS)}")
    rows = tiny_world_rows(name, seed, n_train, n_test)[split]
    kind, convert = CONVERTERS[name]
    return Task(name, kind, rows, convert)
