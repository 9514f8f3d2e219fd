"""nanolib.core_bundle and core_eval: bundles, prompts, scoring, CORE arithmetic, downloads, DDP."""

from __future__ import annotations

import importlib.util
import io
import json
import random
import zipfile
from collections import Counter
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from nanolib import core_bundle, core_fit
from nanolib import core_eval as core
from nanolib.config import book_root
from nanolib.data import iter_texts
from nanolib.model import GPT, GPTConfig

# ------------------------------------------------------------------------------------------------
# stubs: a character tokenizer and scorers that know (or ignore) the answers


class CharTokenizer:
    """One token per character; 0 is BOS (no text here contains NUL)."""

    bos_id = 0

    def encode_batch(self, texts):
        return [[ord(c) for c in t] for t in texts]

    def decode(self, ids):
        return "".join(chr(i) for i in ids if i)


class OracleScorer:
    """Loss 0 for a row that ends with a gold answer, 1 otherwise; LM rows always match."""

    def __init__(self, gold_endings):
        self.gold, self.tok = set(gold_endings), CharTokenizer()
        self.rows: list[str] = []

    def continuation_losses(self, rows, spans):
        texts = [self.tok.decode(r) for r in rows]
        self.rows += texts
        return [0.0 if any(t.endswith(g) for g in self.gold) else 1.0 for t in texts]

    def greedy_matches(self, rows, spans):
        self.rows += [self.tok.decode(r) for r in rows]
        return [True] * len(rows)


class UniformScorer:
    """Equal losses everywhere (ties go to the first choice); never an exact continuation."""

    def continuation_losses(self, rows, spans):
        return [1.0] * len(rows)

    def greedy_matches(self, rows, spans):
        return [False] * len(rows)


class RandomScorer(UniformScorer):
    """Random losses: picks a uniformly random choice."""

    def __init__(self, seed=0):
        self.rng = random.Random(seed)

    def continuation_losses(self, rows, spans):
        return [self.rng.random() for _ in rows]


def mc_items(n, choices=4):
    return [
        {
            "query": f"Question {i}: what comes after {i}?",
            "choices": [str(i + 1 + (k - i % choices) % choices) for k in range(choices)],
            "gold": i % choices,
        }
        for i in range(n)
    ]


def schema_items(n):
    return [
        {"context_options": [f"Story {i} ends well", f"Story {i} ends badly"],
         "continuation": f"so they smiled ({i}).", "gold": i % 2}
        for i in range(n)
    ]  # fmt: skip


def lm_items(n):
    return [{"context": f"Count on from {i}:", "continuation": str(i + 1)} for i in range(n)]


def write_bundle(root: Path, tasks: dict) -> Path:
    """A bundle on disk: tasks = {label: (type, shots, delimiter, baseline %, items)}."""
    yaml_lines, meta = ["icl_tasks:"], ["Eval Task,Random baseline"]
    for label, (kind, shots, delim, baseline, items) in tasks.items():
        yaml_lines += [
            f"- label: {label}",
            f"  dataset_uri: test/{label}.jsonl",
            f"  num_fewshot: [{shots}]",
            f"  icl_task_type: {kind}",
            f"  continuation_delimiter: {json.dumps(delim)}",
        ]
        meta.append(f"{label},{baseline}")
        path = root / "eval_data" / "test" / f"{label}.jsonl"
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text("".join(json.dumps(it) + "\n" for it in items))
    (root / "core.yaml").write_text("\n".join(yaml_lines) + "\n")
    (root / "eval_meta_data.csv").write_text("\n".join(meta) + "\n")
    return root


def gold_endings(items, kind, delim):
    if kind == "multiple_choice":
        return [it["query"] + delim + it["choices"][it["gold"]] for it in items]
    return [it["context_options"][it["gold"]] + delim + it["continuation"] for it in items]


@pytest.fixture
def stub_bundle(tmp_path):
    tasks = {
        "mc": ("multiple_choice", 3, "\nAnswer: ", 25, mc_items(40)),
        "schema": ("schema", 0, " ", 50, schema_items(40)),
        "lm": ("language_modeling", 2, " ", 0, lm_items(40)),
    }
    return core_bundle.load_bundle(write_bundle(tmp_path / "bundle", tasks))


# ------------------------------------------------------------------------------------------------
# the task table and CORE arithmetic


def test_task_table_has_the_22_core_tasks():
    tasks = core_bundle.core_tasks()
    assert len(tasks) == 22 == len({t.label for t in tasks})
    kinds = [t.task_type for t in tasks]
    assert (kinds.count("multiple_choice"), kinds.count("schema")) == (11, 2)
    assert kinds.count("language_modeling") == 9
    changed = {
        t.label: (t.baseline_v1, t.baseline_v2) for t in tasks if t.baseline_v1 != t.baseline_v2
    }
    want = {
        "commonsense_qa": (0.20, 0.403),
        "agi_eval_lsat_ar": (0.20, 0.25),
        "bigbench_language_identification": (0.091, 0.25),
    }
    assert changed.keys() == want.keys()
    assert all(changed[k] == pytest.approx(want[k]) for k in want)
    assert {t.delimiter for t in tasks} == {" ", "\nAnswer: "}
    assert set(core_fit.SIX_TASKS) <= {t.label for t in tasks}


def test_centered_accuracy_and_core_arithmetic():
    assert core.centered_accuracy(0.25, 0.25) == 0.0
    assert core.centered_accuracy(1.0, 0.25) == 1.0
    assert core.centered_accuracy(0.4, 0.5) == pytest.approx(-0.2)
    assert core.core_score([0.5, 0.0, -0.2]) == pytest.approx(0.1)
    specs = core_bundle.core_tasks()
    acc = {t.label: 0.30 + 0.02 * i for i, t in enumerate(specs)}
    results = tuple(
        core.TaskResult(t.label, t.task_type, t.num_fewshot, 1000, round(1000 * acc[t.label]),
                        t.baseline_v1, t.baseline_v2, 1.0)
        for t in specs
    )  # fmt: skip
    result = core.CoreResult("x", results, seconds=2.0)
    want_v1 = np.mean([(acc[t.label] - t.baseline_v1) / (1 - t.baseline_v1) for t in specs])
    assert result.core_v1 == pytest.approx(want_v1)
    # v1 and v2 differ only through the three changed tasks
    diff = sum(r.centered_v1 - r.centered_v2 for r in results) / 22
    only3 = sum(r.centered_v1 - r.centered_v2 for r in results if r.baseline_v1 != r.baseline_v2)
    assert result.core_v1 - result.core_v2 == pytest.approx(diff) == pytest.approx(only3 / 22)
    assert result.core_v2 < result.core_v1
    assert result.items == 22_000 and result.items_per_s == 11_000


# ------------------------------------------------------------------------------------------------
# prompts and few-shot examples


def test_fewshot_never_includes_the_item_and_is_deterministic():
    for n, k in [(11, 10), (50, 3), (2, 1)]:
        for i in range(n):
            shots = core.fewshot_indices(n, i, k)
            assert i not in shots and len(set(shots)) == k and all(0 <= j < n for j in shots)
            assert shots == core.fewshot_indices(n, i, k)
    assert core.fewshot_indices(50, 7, 5) != core.fewshot_indices(50, 8, 5)
    assert 3 not in core.fewshot_indices(5, 0, 3, exclude=[3])
    with pytest.raises(ValueError, match="fewer than k=10"):
        core.fewshot_indices(10, 0, 10)


def test_prompts_leave_the_item_out_of_its_own_few_shot_block(stub_bundle):
    task = stub_bundle.task("lm")
    oracle = OracleScorer([])
    core.evaluate_task(task, CharTokenizer(), oracle)
    assert len(oracle.rows) == 40
    for row in oracle.rows:
        *shots, prompt = row.split("\n\n")
        assert len(shots) == 2
        assert prompt.split(":")[0] not in [s.split(":")[0] for s in shots]
    # duplicates of the item (same content, other line) are left out too
    dup = core_bundle.Task(task.spec, (task.items[0],) * 3 + task.items[1:5], task.path)
    oracle = OracleScorer([])
    core.evaluate_task(dup, CharTokenizer(), oracle)
    for row in oracle.rows:
        *shots, prompt = row.split("\n\n")
        assert prompt.split(":")[0] not in [s.split(":")[0] for s in shots]


def test_render_rows_per_type():
    mc = {"query": "Q", "choices": ["a", "b"], "gold": 1}
    shot = {"query": "S", "choices": ["x", "y"], "gold": 0}
    assert core.render_rows("multiple_choice", mc, [shot], " ") == [
        ("S x\n\nQ ", "a"),
        ("S x\n\nQ ", "b"),
    ]
    sc = {"context_options": ["A", "B"], "continuation": "c", "gold": 0}
    assert core.render_rows("schema", sc, [], "\n") == [("A\n", "c"), ("B\n", "c")]
    lm = {"context": "  the start  ", "continuation": "end"}
    assert core.render_rows("language_modeling", lm, [], " ") == [("the start ", "end")]


def test_encode_rows_spans_cover_the_continuation():
    rows, spans = core.encode_rows(CharTokenizer(), [("ab ", "cd"), ("x", "y")])
    assert rows == [[0, 97, 98, 32, 99, 100], [0, 120, 121]]
    assert spans == [(4, 6), (2, 3)]


# ------------------------------------------------------------------------------------------------
# each task type with stub scorers


@pytest.mark.parametrize("label", ["mc", "schema", "lm"])
def test_gold_preferring_scorer_gets_everything_right(stub_bundle, label):
    task = stub_bundle.task(label)
    golds = (
        [] if label == "lm" else gold_endings(task.items, task.spec.task_type, task.spec.delimiter)
    )
    result = core.evaluate_task(task, CharTokenizer(), OracleScorer(golds))
    assert (result.items, result.correct, result.centered_v1) == (40, 40, 1.0)


def test_uniform_scorer_scores_the_baseline(stub_bundle):
    # gold cycles through the choices, so "ties go to the first choice" is right 1/4 (1/2) of
    # the time
    result = core.evaluate_core(
        None, CharTokenizer(), stub_bundle, scorer=UniformScorer(), progress=False
    )
    acc = {t.label: t.accuracy for t in result.tasks}
    assert acc == {"mc": 0.25, "schema": 0.5, "lm": 0.0}
    assert result.core_v1 == result.core_v2 == 0.0


def test_random_scorer_averages_to_the_baseline(tmp_path):
    items = mc_items(2000)
    random.Random(1).shuffle(items)
    bundle = core_bundle.load_bundle(
        write_bundle(tmp_path, {"mc": ("multiple_choice", 0, " ", 25, items)})
    )
    result = core.evaluate_task(bundle.tasks[0], CharTokenizer(), RandomScorer())
    assert result.accuracy == pytest.approx(0.25, abs=0.03)  # 3 standard errors
    assert abs(result.centered_v1) < 0.04


def test_sharding_over_ranks_adds_up(stub_bundle):
    task = stub_bundle.task("mc")
    scorer = RandomScorer(seed=3)
    whole = core.evaluate_task(task, CharTokenizer(), scorer, max_items=31)
    parts = [
        core.evaluate_task(task, CharTokenizer(), RandomScorer(seed=3), max_items=31, rank=r,
                           world_size=3)
        for r in range(3)
    ]  # fmt: skip
    assert [p.items for p in parts] == [11, 10, 10]
    assert sum(p.items for p in parts) == whole.items == 31
    oracle = OracleScorer(gold_endings(task.items, task.spec.task_type, task.spec.delimiter))
    shards = [
        core.evaluate_task(task, CharTokenizer(), oracle, rank=r, world_size=2).correct
        for r in range(2)
    ]
    assert sum(shards) == 40


# ------------------------------------------------------------------------------------------------
# bundles: loading and validation


def test_tiny_bundle_loads_and_is_reproducible(tmp_path):
    bundle = core_bundle.load_bundle(core_bundle.tiny_bundle_dir())
    kinds = [t.spec.task_type for t in bundle.tasks]
    assert all(kinds.count(k) >= 2 for k in core_bundle.TASK_TYPES)
    assert all(50 <= len(t.items) <= 200 for t in bundle.tasks)
    for t in bundle.tasks:
        want = {"multiple_choice": 0.25, "schema": 0.5, "language_modeling": 0.0}[t.spec.task_type]
        assert t.spec.baseline_v1 == t.spec.baseline_v2 == want
        keys = [json.dumps(it, sort_keys=True) for it in t.items]
        assert len(set(keys)) == len(keys), f"{t.label} has duplicate items"
    spec = importlib.util.spec_from_file_location(
        "make_tiny_bundle", book_root() / "data" / "core" / "make_tiny_bundle.py"
    )
    maker = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(maker)
    maker.build(tmp_path / "again")
    assert maker.files_of(tmp_path / "again") == maker.files_of(core_bundle.tiny_bundle_dir())


def _bundle_maker():
    spec = importlib.util.spec_from_file_location(
        "make_tiny_bundle", book_root() / "data" / "core" / "make_tiny_bundle.py"
    )
    maker = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(maker)
    return maker


def test_bundle_contamination_check_finds_verbatim_spans():
    maker = _bundle_maker()
    train = "In the beginning God created the heaven and the earth. And the earth was without form."
    grams = maker.train_ngrams([train], n=4)
    seen = {"context": "In the beginning God created the heaven and the", "continuation": "earth"}
    fresh = {"context": "In the beginning God created the heaven and the", "continuation": "sea"}
    short = {"context": "the", "continuation": "earth"}  # under n words: never contaminated
    mc = {"query": "And", "choices": ["the earth was without form", "x y z w v"], "gold": 0}
    schema = {"context_options": ["the earth was", "God created"], "continuation": "without form",
              "gold": 1}  # fmt: skip
    assert maker.contaminated(seen, grams, n=4) and maker.contaminated(mc, grams, n=4)
    assert not maker.contaminated(fresh, grams, n=4) and not maker.contaminated(short, grams, n=4)
    assert not maker.contaminated(schema, grams, n=4)  # the gold context is not the seen one
    assert maker.contaminated({**schema, "gold": 0}, grams, n=4)


def test_tiny_bundle_is_clean_and_balanced():
    maker, bundle = _bundle_maker(), core_bundle.load_bundle(core_bundle.tiny_bundle_dir())
    grams = maker.train_ngrams(iter_texts("tiny", "train"))
    for t in bundle.tasks:
        assert not [it for it in t.items if maker.contaminated(it, grams)], t.label
    (phrase,) = [t for t in bundle.tasks if t.label == "tiny_phrase"]
    top = Counter(it["continuation"].lower() for it in phrase.items).most_common(1)[0][1]
    assert top <= maker.ANSWER_SHARE * maker.ITEMS


@pytest.mark.parametrize(
    "line, problem",
    [
        ('{"query": "q", "choices": ["a", "b"], "gold": 0', "not valid JSON"),
        ('{"query": "q", "gold": 0}', "missing field 'choices'"),
        ('{"query": "q", "choices": ["a", "b"], "gold": 2}', "gold=2 is not an index"),
        ('{"query": "q", "choices": ["a"], "gold": 0}', "at least two"),
        ('{"query": "q", "choices": ["a", "b"], "gold": "0"}', "'gold' should be int"),
        ('["q", "a"]', "expected a JSON object"),
    ],
)
def test_a_malformed_line_names_the_file_and_the_line(tmp_path, line, problem):
    write_bundle(tmp_path, {"mc": ("multiple_choice", 0, " ", 25, mc_items(5))})
    path = tmp_path / "eval_data" / "test" / "mc.jsonl"
    lines = path.read_text().splitlines()
    lines[2] = line
    path.write_text("\n".join(lines) + "\n")
    with pytest.raises(core_bundle.BundleFormatError) as err:
        core_bundle.load_bundle(tmp_path)
    assert f"{path}:3: " in str(err.value) and problem in str(err.value)


def test_bundle_level_errors(tmp_path):
    with pytest.raises(core_bundle.BundleFormatError, match="core.yaml not found"):
        core_bundle.load_bundle(tmp_path)
    write_bundle(tmp_path, {"mc": ("multiple_choice", 5, " ", 25, mc_items(5))})
    with pytest.raises(core_bundle.BundleFormatError, match="5 items cannot give 5-shot"):
        core_bundle.load_bundle(tmp_path)
    (tmp_path / "eval_meta_data.csv").write_text("Eval Task,Random baseline\nother,25\n")
    with pytest.raises(core_bundle.BundleFormatError, match="no random baseline"):
        core_bundle.load_bundle(tmp_path)
    (tmp_path / "core.yaml").write_text("icl_tasks:\n- label: mc\n  icl_task_type: mcq\n")
    with pytest.raises(core_bundle.BundleFormatError, match="missing"):
        core_bundle.load_bundle(tmp_path)


def test_core_task_labels_get_both_published_baselines(tmp_path):
    items = [dict(it, choices=it["choices"][:2], gold=it["gold"] % 2) for it in mc_items(12)]
    write_bundle(tmp_path, {"commonsense_qa": ("multiple_choice", 10, " ", 99, items)})
    spec = core_bundle.load_bundle(tmp_path).tasks[0].spec
    assert (spec.baseline_v1, spec.baseline_v2) == pytest.approx(
        (0.20, 0.403)
    )  # the table, not the bundle's 99


# ------------------------------------------------------------------------------------------------
# the downloader, against a local HTTP server


@pytest.fixture
def bundle_zip(tmp_path_factory, range_server):
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w", zipfile.ZIP_DEFLATED) as z:
        for p in sorted(core_bundle.tiny_bundle_dir().rglob("*")):
            if p.is_file():
                z.write(p, Path("eval_bundle") / p.relative_to(core_bundle.tiny_bundle_dir()))
    data = buf.getvalue()
    remote = tmp_path_factory.mktemp("remote")  # outside the test's download folder
    (remote / "eval_bundle.zip").write_bytes(data)
    (remote / "broken.zip").write_bytes(data[:-100])
    return range_server(remote), data


def test_download_bundle_fetches_checks_and_unzips(bundle_zip, tmp_path):
    server, data = bundle_zip
    sha = __import__("hashlib").sha256(data).hexdigest()
    dest = tmp_path / "eval_bundle"
    got = core_bundle.download_bundle(
        dest, url=f"{server.url}/eval_bundle.zip", sha256=sha, backoff=0
    )
    assert got == dest and len(core_bundle.load_bundle(dest).tasks) == 8
    assert sorted(p.name for p in tmp_path.iterdir()) == ["eval_bundle"]  # no part or temp left
    core_bundle.download_bundle(dest, url=f"{server.url}/eval_bundle.zip")
    assert len(server.log) == 1  # already there: nothing fetched


def test_download_bundle_resumes(bundle_zip, tmp_path):
    server, data = bundle_zip
    dest = tmp_path / "eval_bundle"
    (tmp_path / "eval_bundle.zip.part").write_bytes(data[:1000])
    core_bundle.download_bundle(dest, url=f"{server.url}/eval_bundle.zip", backoff=0)
    assert server.ranges == ["bytes=1000-"]
    server.log.clear()
    server.cut_next = 1  # the connection drops halfway: the next attempt continues from there
    core_bundle.download_bundle(tmp_path / "again", url=f"{server.url}/eval_bundle.zip", backoff=0)
    assert server.ranges[:2] == [None, f"bytes={len(data) // 2}-"]
    assert len(core_bundle.load_bundle(tmp_path / "again").tasks) == 8


def test_download_bundle_rejects_bad_checksums_and_zips(bundle_zip, tmp_path):
    server, _ = bundle_zip
    dest = tmp_path / "eval_bundle"
    with pytest.raises(core_bundle.DownloadError, match="sha256 .* differs"):
        core_bundle.download_bundle(dest, url=f"{server.url}/eval_bundle.zip", sha256="0" * 64,
                             attempts=2, backoff=0)  # fmt: skip
    assert len(server.log) == 2 and not dest.exists()
    with pytest.raises(core_bundle.DownloadError, match="zip"):
        core_bundle.download_bundle(dest, url=f"{server.url}/broken.zip", attempts=1, backoff=0)
    with pytest.raises(core_bundle.DownloadError, match="404"):
        core_bundle.download_bundle(dest, url=f"{server.url}/missing.zip", attempts=3, backoff=0)
    assert not dest.exists()


# ------------------------------------------------------------------------------------------------
# the real scorer and an end-to-end run


def tiny_gpt(vocab_size, seq_len=64):
    torch.manual_seed(0)
    model = GPT(GPTConfig(vocab_size=vocab_size, seq_len=seq_len, n_layer=2, d_model=32, n_head=2))
    with torch.no_grad():  # zero c_proj makes every block the identity: give them weights
        for p in model.parameters():
            if p.ndim == 2 and not p.abs().sum():
                p.normal_(0, 0.05)
        model.lm_head.weight.normal_(0, 0.5)
    return model.eval()


def test_model_scorer_matches_one_row_at_a_time():
    model = tiny_gpt(50, seq_len=16)
    rng = random.Random(0)
    rows = [[rng.randrange(50) for _ in range(n)] for n in (5, 16, 9, 23, 3)]
    spans = [(2, 5), (10, 16), (1, 9), (12, 23), (2, 3)]
    scorer = core.ModelScorer(model, batch_tokens=40)  # several batches, padded, truncated
    losses = scorer.continuation_losses(rows, spans)
    matches = scorer.greedy_matches(rows, spans)
    for row, (start, end), loss, match in zip(rows, spans, losses, matches):
        cut = max(0, len(row) - 16)
        row, start, end = row[cut:], max(1, start - cut), end - cut
        with torch.no_grad():
            logits = model(torch.tensor([row]))[0]
        want = F.cross_entropy(logits[start - 1 : end - 1], torch.tensor(row[start:end]))
        assert loss == pytest.approx(want.item(), rel=1e-4)
        assert match == (logits[start - 1 : end - 1].argmax(-1).tolist() == row[start:end])
    # a continuation the model predicts greedily is a match
    prompt = [1, 2, 3]
    for _ in range(4):
        prompt.append(model(torch.tensor([prompt]))[0, -1].argmax().item())
    assert scorer.greedy_matches([prompt], [(3, 7)]) == [True]


def test_evaluate_core_end_to_end_writes_results(tmp_path):
    from nanolib.data import iter_texts
    from nanolib.tokenizer import Tokenizer

    tokenizer = Tokenizer.train(iter_texts("tiny", "val", max_chars=100_000), vocab_size=400)
    model = tiny_gpt(tokenizer.vocab_size, seq_len=64)  # short: long rows get left-truncated
    result = core.evaluate_core(model, tokenizer, core_bundle.tiny_bundle_dir(), max_per_task=6,
                                progress=False)  # fmt: skip
    assert [t.items for t in result.tasks] == [6] * 8
    assert all(0 <= t.accuracy <= 1 for t in result.tasks)
    assert -1.5 < result.core_v1 < 1 and result.core_v1 == result.core_v2
    assert result.items_per_s > 0
    paths = core.write_results(result, tmp_path / "run")
    table = __import__("pandas").read_csv(paths["csv"])
    assert list(table.label) == [t.label for t in result.tasks]
    assert {"accuracy", "centered_v1", "centered_v2", "baseline_v1"} <= set(table.columns)
    saved = json.loads(paths["json"].read_text())
    assert saved["core_v1"] == pytest.approx(result.core_v1) and saved["items"] == 48
    assert sorted(p.name for p in (tmp_path / "run").iterdir()) == ["core.csv", "core.json"]


DDP_SCRIPT = """
import json, sys
import torch.distributed as dist
from nanolib import core_bundle
from nanolib import core_eval as core

dist.init_process_group("gloo")
bundle = core_bundle.load_bundle(core_bundle.tiny_bundle_dir())


class Oracle:
    def __init__(self):
        self.gold = set()
        for t in bundle.tasks:
            s = t.spec
            for it in t.items:
                if s.task_type == "multiple_choice":
                    self.gold.add(it["query"] + s.delimiter + it["choices"][it["gold"]])
                elif s.task_type == "schema":
                    option = it["context_options"][it["gold"]]
                    self.gold.add(option + s.delimiter + it["continuation"])

    def continuation_losses(self, rows, spans):
        texts = ["".join(chr(i) for i in r[1:]) for r in rows]
        return [0.0 if any(t.endswith(g) for g in self.gold) else 1.0 for t in texts]

    def greedy_matches(self, rows, spans):
        return [True] * len(rows)


class Chars:
    bos_id = 0

    def encode_batch(self, texts):
        return [[ord(c) for c in t] for t in texts]


result = core.evaluate_core(None, Chars(), bundle, max_per_task=21, scorer=Oracle(), progress=False)
out = {"rank": dist.get_rank(), "items": [t.items for t in result.tasks],
       "correct": [t.correct for t in result.tasks], "world_size": result.world_size}
open(f"{sys.argv[1]}/rank{dist.get_rank()}.json", "w").write(json.dumps(out))
dist.destroy_process_group()
"""


def test_evaluate_core_under_torchrun_all_reduces_counts(tmp_path):
    import subprocess
    import sys

    script = tmp_path / "ddp_core.py"
    script.write_text(DDP_SCRIPT)
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2",
           str(script), str(tmp_path)]  # fmt: skip
    proc = subprocess.run(cmd, cwd=book_root(), capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr[-3000:]
    ranks = [json.loads((tmp_path / f"rank{r}.json").read_text()) for r in range(2)]
    for r in ranks:  # both ranks hold the summed counts: 11 + 10 items per task
        assert r["items"] == [21] * 8 and r["correct"] == [21] * 8 and r["world_size"] == 2
