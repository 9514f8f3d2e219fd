"""Make data/core/tiny_bundle: a small CORE-format eval bundle from the tiny corpus's held-out text.

Every item comes from the validation split of the shipped corpus (`nanolib.data.iter_texts("tiny",
"val")`: whole works the models never train on) and is drawn with a seeded random generator, so
a second run writes byte-identical files. Eight tasks of the three CORE types:

- multiple choice (4 choices, baseline 25%): tiny_next_line (which line follows), tiny_word_order
  (which line is in its true word order), tiny_last_word (which word ends the line; 3-shot);
- schema (2 contexts, baseline 50%): tiny_context_pick (which two lines come before this one),
  tiny_fill_word (which word makes the rest of the line likely);
- language modelling (exact greedy match, baseline 0): tiny_phrase (a nearly fixed phrase's last
  word; 3-shot), tiny_verse_number (the next verse number), tiny_lambada (a passage's last word,
  which appeared earlier in it).

Val and train are different works, but parallel passages (a verse retold in another book of the
Bible) can put an item's text in the training split anyway. The builder drops such items: an
item is contaminated when its answer-bearing span — the answer and the SPAN − 1 words before it —
occurs in the training text, checked through a set of hashed word n-grams of the training split
(`train_ngrams`, `contaminated`).

data/core/README.md describes each task and how its items are drawn.

Usage:

    python data/core/make_tiny_bundle.py            # writes data/core/tiny_bundle/
    python data/core/make_tiny_bundle.py --check    # fails if the shipped bundle differs
"""

from __future__ import annotations

import argparse
import csv
import hashlib
import io
import json
import random
import re
import sys
import tempfile
from collections import Counter, defaultdict
from collections.abc import Iterable, Iterator
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parents[1]))  # run as a script from anywhere in the checkout

from nanolib.core_bundle import write_bundle_manifest  # noqa: E402
from nanolib.data import iter_texts  # noqa: E402
from nanolib.files import replace_dir  # noqa: E402

SEED = 0
ITEMS = 150  # items per task (fewer where the text does not give that many)
VERSE = re.compile(r"^(\d+) (\S.*)$")
SPEAKER = re.compile(r"^[A-Z][A-Z0-9 .,'&-]*:$")
WORD = re.compile(r"^[A-Za-z]+(?:'[A-Za-z]+)?$")
TRAILING_PUNCT = ".,;:!?"
NGRAM = 8  # words per hashed n-gram of the training text
SPAN = 13  # words of an item checked against it: the answer and the words just before it
ANSWER_SHARE = 0.1  # at most this share of a task's items may have the same answer word

# label: (type, shots, delimiter, category, random baseline %, description)
TASKS = {
    "tiny_next_line": (
        "multiple_choice", 0, "\n", "language_understanding", 25,
        "Which line follows? The true next line vs three lines of other documents.",
    ),
    "tiny_word_order": (
        "multiple_choice", 0, "\n", "language_understanding", 25,
        "Which line is in its true word order? Three decoys each swap two words.",
    ),
    "tiny_last_word": (
        "multiple_choice", 3, " ", "language_understanding", 25,
        "Which word ends the line? The true last word vs last words of other lines.",
    ),
    "tiny_context_pick": (
        "schema", 0, "\n", "reading_comprehension", 50,
        "Which two lines come before this one? The true ones vs two lines of another document.",
    ),
    "tiny_fill_word": (
        "schema", 0, " ", "language_understanding", 50,
        "Which word makes the rest of the line likely? The true word vs a random one.",
    ),
    "tiny_phrase": (
        "language_modeling", 3, " ", "world_knowledge", 0,
        "Complete a phrase whose last word is nearly determined by the two before it.",
    ),
    "tiny_verse_number": (
        "language_modeling", 0, "\n", "symbolic_problem_solving", 0,
        "Given two numbered verses of a Bible chapter, write the next verse number.",
    ),
    "tiny_lambada": (
        "language_modeling", 0, " ", "language_understanding", 0,
        "Write the last word of a passage; the word appears earlier in the passage.",
    ),
}  # fmt: skip


def parse(doc: str) -> tuple[str, list[list[str]], list[list[tuple[int, str]]]]:
    """A document's kind ("bible" or "play"), its speeches' lines and its numbered verses."""
    kind = "bible" if doc.startswith("The Holy Bible") else "play"
    speeches, chapters = [], []
    for block in doc.split("\n\n"):
        lines = [ln.strip() for ln in block.split("\n") if ln.strip()]
        if kind == "bible":
            verses = [VERSE.match(ln) for ln in lines]
            if len(lines) >= 2 and all(verses):
                nums = [int(m.group(1)) for m in verses]
                if nums == list(range(nums[0], nums[0] + len(nums))):
                    chapters.append([(int(m.group(1)), m.group(2)) for m in verses])
        elif lines and SPEAKER.match(lines[0]):
            text = [re.sub(r"\s*\[[^\]]*\]\s*", " ", ln).strip() for ln in lines[1:]]
            text = [t for t in text if t and not t.startswith("[")]
            if text:
                speeches.append(text)
    return kind, speeches, chapters


def load_documents() -> list[dict]:
    """Every val document as {kind, passages}: runs of consecutive lines (verse text unnumbered)."""
    docs = []
    for text in iter_texts("tiny", "val"):
        kind, speeches, chapters = parse(text)
        passages = speeches + [[t for _, t in ch] for ch in chapters]
        docs.append({"kind": kind, "passages": passages, "chapters": chapters})
    return docs


def words_of(text: str) -> list[str]:
    """Lower-case words without punctuation or numbers, the unit of the contamination check."""
    return re.findall(r"[a-z]+(?:'[a-z]+)?", text.lower())


def _gram_hash(words: list[str]) -> int:
    return int.from_bytes(hashlib.blake2b(" ".join(words).encode(), digest_size=8).digest(), "big")


def train_ngrams(texts: Iterable[str], n: int = NGRAM) -> set[int]:
    """Hashes of every n-word window of the texts (the training split)."""
    grams: set[int] = set()
    for text in texts:
        w = words_of(text)
        grams.update(_gram_hash(w[i : i + n]) for i in range(len(w) - n + 1))
    return grams


def answer_span(item: dict) -> tuple[str, str]:
    """(the text before the answer, the answer) of an item of any of the three types."""
    if "choices" in item:
        return item["query"], item["choices"][item["gold"]]
    if "context_options" in item:
        return item["context_options"][item["gold"]], item["continuation"]
    return item["context"], item["continuation"]


def contaminated(item: dict, grams: set[int], n: int = NGRAM) -> bool:
    """Whether the answer and the SPAN − 1 words before it occur verbatim in the hashed text.

    Every n-gram of that span must be in `grams`; a span shorter than n words (a short phrase,
    which a model is meant to learn from training text) is never contaminated.
    """
    before, answer = answer_span(item)
    span = words_of(before)[-(SPAN - 1) :] + words_of(answer)
    if len(span) < n:
        return False
    return all(_gram_hash(span[i : i + n]) in grams for i in range(len(span) - n + 1))


def unique(items: Iterator[dict], n: int) -> list[dict]:
    """The first n distinct items a generator yields (it is not run further)."""
    seen, out = set(), []
    for it in items:
        key = json.dumps(it, sort_keys=True)
        if key not in seen:
            seen.add(key)
            out.append(it)
        if len(out) == n:
            break
    return out


def lines_of(docs: list[dict], kind: str | None = None) -> list[tuple[int, str]]:
    """(document index, line) for every line, optionally of one kind."""
    return [
        (d, line)
        for d, doc in enumerate(docs)
        if kind is None or doc["kind"] == kind
        for p in doc["passages"]
        for line in p
    ]


def positions(docs: list[dict], before: int) -> list[tuple[int, list[str], int]]:
    """(document, passage, i) for every line i that has `before` lines before it in its passage."""
    return [
        (d, p, i)
        for d, doc in enumerate(docs)
        for p in doc["passages"]
        for i in range(before, len(p))
    ]


def shuffle_in(rng: random.Random, gold: str, others: list[str]) -> tuple[list[str], int]:
    """The gold answer and the decoys in a random order, and where gold landed."""
    options = [*others]
    at = rng.randrange(len(options) + 1)
    options.insert(at, gold)
    return options, at


def next_line(docs: list[dict], rng: random.Random) -> Iterator[dict]:
    pool = {k: lines_of(docs, k) for k in ("bible", "play")}
    spots = positions(docs, 2)
    rng.shuffle(spots)
    for d, p, i in spots:
        gold = p[i]
        n = len(gold.split())
        if n < 4:
            continue
        fits = [
            ln for dd, ln in pool[docs[d]["kind"]] if dd != d and n / 2 <= len(ln.split()) <= 2 * n
        ]
        decoys = []
        while len(decoys) < 3:
            ln = rng.choice(fits)
            if ln != gold and ln not in decoys:
                decoys.append(ln)
        choices, gold_at = shuffle_in(rng, gold, decoys)
        yield {"query": p[i - 2] + "\n" + p[i - 1], "choices": choices, "gold": gold_at}


def word_order(docs: list[dict], rng: random.Random) -> Iterator[dict]:
    spots = positions(docs, 1)
    rng.shuffle(spots)
    for _, p, i in spots:
        words = p[i].split()
        if not 6 <= len(words) <= 16:
            continue
        decoys: list[str] = []
        for _ in range(50):
            a, b = sorted(rng.sample(range(1, len(words)), 2))
            swapped = [*words]
            swapped[a], swapped[b] = swapped[b], swapped[a]
            line = " ".join(swapped)
            if line != p[i] and line not in decoys:
                decoys.append(line)
            if len(decoys) == 3:
                break
        if len(decoys) < 3:
            continue
        choices, gold_at = shuffle_in(rng, p[i], decoys)
        yield {"query": p[i - 1], "choices": choices, "gold": gold_at}


def split_last_word(line: str) -> tuple[str, str] | None:
    """(line without its last word, last word without punctuation) if the word is plain."""
    words = line.split()
    if len(words) < 5:
        return None
    last = words[-1].rstrip(TRAILING_PUNCT)
    if not WORD.match(last) or len(last) < 3:
        return None
    return " ".join(words[:-1]), last


def last_word(docs: list[dict], rng: random.Random) -> Iterator[dict]:
    endings = {
        k: sorted({s[1] for _, ln in lines_of(docs, k) if (s := split_last_word(ln))})
        for k in ("bible", "play")
    }
    spots = positions(docs, 0)
    rng.shuffle(spots)
    for d, p, i in spots:
        split = split_last_word(p[i])
        if split is None:
            continue
        query, gold = split
        decoys: list[str] = []
        while len(decoys) < 3:
            w = rng.choice(endings[docs[d]["kind"]])
            if w.lower() != gold.lower() and w.lower() not in {x.lower() for x in decoys}:
                decoys.append(w)
        choices, gold_at = shuffle_in(rng, gold, decoys)
        yield {"query": query, "choices": choices, "gold": gold_at}


def context_pick(docs: list[dict], rng: random.Random) -> Iterator[dict]:
    pairs = [(d, p[i - 1] + "\n" + p[i]) for d, p, i in positions(docs, 1)]
    spots = positions(docs, 2)
    rng.shuffle(spots)
    for d, p, i in spots:
        if len(p[i].split()) < 4:
            continue
        while (pick := rng.choice(pairs))[0] == d:
            pass
        options, gold_at = shuffle_in(rng, p[i - 2] + "\n" + p[i - 1], [pick[1]])
        yield {"context_options": options, "continuation": p[i], "gold": gold_at}


def fill_word(docs: list[dict], rng: random.Random) -> Iterator[dict]:
    vocab = {
        k: sorted({w for _, ln in lines_of(docs, k) for w in ln.split() if WORD.match(w)})
        for k in ("bible", "play")
    }
    spots = positions(docs, 0)
    rng.shuffle(spots)
    for d, p, i in spots:
        words = p[i].split()
        if not 8 <= len(words) <= 20:
            continue
        j = rng.randrange(2, len(words) - 3)
        gold = words[j]
        if not WORD.match(gold) or len(gold) < 3:
            continue
        while True:
            w = rng.choice(vocab[docs[d]["kind"]])
            if w.lower() != gold.lower() and w[0].isupper() == gold[0].isupper() and len(w) >= 3:
                break
        head = " ".join(words[:j])
        options, gold_at = shuffle_in(rng, f"{head} {gold}", [f"{head} {w}"])
        yield (
            {"context_options": options, "continuation": " ".join(words[j + 1 :]), "gold": gold_at}
        )


def phrase(docs: list[dict], rng: random.Random) -> Iterator[dict]:
    lines = [ln.split() for _, ln in lines_of(docs)]
    follow: dict[tuple[str, str], Counter] = defaultdict(Counter)
    for words in lines:
        for a, b, c in zip(words, words[1:], words[2:]):
            if WORD.match(a) and WORD.match(b) and WORD.match(c):
                follow[a, b][c] += 1
    sure = {}
    for key, counts in follow.items():
        (word, n), total = counts.most_common(1)[0], sum(counts.values())
        if total >= 8 and n / total >= 0.6:
            sure[key] = word
    spots = [(k, words) for words in lines for k in range(3, len(words))]
    rng.shuffle(spots)
    per_phrase: Counter = Counter()
    per_answer: Counter = Counter()  # so that no word ("the") answers a large share of items
    for k, words in spots:
        key = (words[k - 2], words[k - 1])
        if sure.get(key) != words[k] or len(words[k]) < 3 or per_phrase[(*key, words[k])] >= 3:
            continue
        if per_answer[words[k].lower()] >= ANSWER_SHARE * ITEMS:
            continue
        per_phrase[(*key, words[k])] += 1
        per_answer[words[k].lower()] += 1
        yield {"context": " ".join(words[:k]), "continuation": words[k]}


def verse_number(docs: list[dict], rng: random.Random) -> Iterator[dict]:
    spots = [(ch, i) for doc in docs for ch in doc["chapters"] for i in range(2, len(ch))]
    rng.shuffle(spots)
    for ch, i in spots:
        context = "\n".join(f"{n} {t}" for n, t in ch[i - 2 : i])
        if len(context) <= 400:
            yield {"context": context, "continuation": str(ch[i][0])}


def lambada(docs: list[dict], rng: random.Random) -> Iterator[dict]:
    spots = positions(docs, 3)
    rng.shuffle(spots)
    for _, p, i in spots:
        split = split_last_word(p[i])
        if split is None or len(split[1]) < 4:
            continue
        head, word = split
        earlier = p[max(0, i - 5) : i]
        if not any(word in re.findall(r"[A-Za-z']+", ln) for ln in earlier):
            continue
        context = "\n".join([*earlier, head])
        if len(context) <= 600:
            yield {"context": context, "continuation": word}


MAKERS = {
    "tiny_next_line": next_line,
    "tiny_word_order": word_order,
    "tiny_last_word": last_word,
    "tiny_context_pick": context_pick,
    "tiny_fill_word": fill_word,
    "tiny_phrase": phrase,
    "tiny_verse_number": verse_number,
    "tiny_lambada": lambada,
}


def core_yaml() -> str:
    """core.yaml in the eval bundle's format (icl_tasks), written by hand for stable bytes."""
    out = ["# The tiny CORE-format bundle; written by data/core/make_tiny_bundle.py.", "icl_tasks:"]
    for label, (kind, shots, delim, category, _, _) in TASKS.items():
        out += [
            f"- label: {label}",
            f"  dataset_uri: {category}/{label}.jsonl",
            f"  num_fewshot: [{shots}]",
            f"  icl_task_type: {kind}",
            f"  continuation_delimiter: {json.dumps(delim)}",
        ]
    return "\n".join(out) + "\n"


def meta_csv(counts: dict[str, int]) -> str:
    """eval_meta_data.csv with DCLM's columns; the random baseline is in percent."""
    buf = io.StringIO()
    w = csv.writer(buf, lineterminator="\n")
    w.writerow(
        ["Eval Task", "Task Category", "Task Type", "#shots", "#datapoints", "Random baseline",
         "Centered Metric?", "Description"]
    )  # fmt: skip
    for label, (kind, shots, _, category, baseline, text) in TASKS.items():
        w.writerow([label, category, kind, shots, counts[label], baseline, "Yes", text])
    return buf.getvalue()


def build(out: Path, seed: int = SEED) -> dict[str, int]:
    """Write the bundle into out (atomically) and return the item count per task."""
    docs = load_documents()
    grams = train_ngrams(iter_texts("tiny", "train"))
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(dir=out.parent, prefix=f".{out.name}.tmp-"))
    counts = {}
    for label, make in MAKERS.items():
        drawn = make(docs, random.Random(f"{seed}-{label}"))
        items = unique((it for it in drawn if not contaminated(it, grams)), ITEMS)
        counts[label] = len(items)
        path = tmp / "eval_data" / TASKS[label][3] / f"{label}.jsonl"
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text("".join(json.dumps(it, ensure_ascii=False) + "\n" for it in items))
    (tmp / "core.yaml").write_text(core_yaml())
    (tmp / "eval_meta_data.csv").write_text(meta_csv(counts))
    write_bundle_manifest(tmp)  # load_bundle checks every file against it
    replace_dir(tmp, out)
    return counts


def files_of(folder: Path) -> dict[str, bytes]:
    """Every file under folder by relative path, with its bytes."""
    return {
        str(p.relative_to(folder)): p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file()
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=HERE / "tiny_bundle")
    parser.add_argument("--seed", type=int, default=SEED)
    parser.add_argument("--check", action="store_true", help="rebuild in a temp dir and compare")
    args = parser.parse_args()
    if args.check:
        with tempfile.TemporaryDirectory() as tmp:
            build(Path(tmp) / "bundle", args.seed)
            same = files_of(Path(tmp) / "bundle") == files_of(args.out)
        print("identical" if same else f"{args.out} differs from a fresh build")
        sys.exit(0 if same else 1)
    counts = build(args.out, args.seed)
    for label, n in counts.items():
        print(f"{label:<20} {n:>4} items")


if __name__ == "__main__":
    main()
