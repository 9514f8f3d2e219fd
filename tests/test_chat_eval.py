"""nanolib.chat_eval: categorical eval, answer checks, Wilson intervals and ChatCORE."""

from pathlib import Path
from types import SimpleNamespace

import pytest
import torch
import torch.nn as nn
import torch.nn.functional as F

from nanolib.chat import render_for_completion
from nanolib.chat_eval import (
    EvalResult,
    answer_is_correct,
    categorical_predictions,
    centered_accuracy,
    chatcore,
    evaluate_categorical,
    evaluate_generative,
    letter_ids,
    reference_answer,
    wilson_interval,
)
from nanolib.model import GPT, GPTConfig
from nanolib.tasks import load_task, mmlu_record
from nanolib.tokenizer import Tokenizer

TEXT = "".join(p.read_text() for p in sorted(Path(__file__).parent.parent.glob("nanolib/*.py")))


@pytest.fixture(scope="module")
def tok():
    return Tokenizer.train([TEXT], 400)


@pytest.fixture(scope="module")
def mc_records():
    return list(load_task("tiny_numbers", "test", n_train=10, n_test=40))


def random_model(seq_len=64, seed=0):
    torch.manual_seed(seed)
    model = GPT(GPTConfig(vocab_size=400, seq_len=seq_len, n_layer=1, d_model=64, n_head=2))
    with torch.no_grad():  # the default init zeroes the blocks' outputs: give them a say
        for p in model.parameters():
            p.normal_(0, 0.5)
    return model.eval()


# ------------------------------------------------------------------------------------------------
# intervals and ChatCORE


@pytest.mark.parametrize(
    "correct, items, low, high",
    [(0, 10, 0.0, 0.2775), (5, 10, 0.2366, 0.7634), (10, 10, 0.7225, 1.0)],
)
def test_wilson_interval_known_values(correct, items, low, high):
    got = wilson_interval(correct, items)
    assert got == pytest.approx((low, high), abs=1e-4)


def test_wilson_interval_behaviour():
    low, high = wilson_interval(30, 100)
    assert low < 0.3 < high
    assert wilson_interval(300, 1000)[1] - wilson_interval(300, 1000)[0] < high - low
    assert wilson_interval(30, 100, confidence=0.99)[0] < low
    for bad in [(1, 0), (-1, 10), (11, 10), (1.5, 10)]:
        with pytest.raises(ValueError):
            wilson_interval(*bad)
    with pytest.raises(ValueError, match="confidence"):
        wilson_interval(1, 10, confidence=1.0)


def test_centered_accuracy_and_chatcore():
    assert centered_accuracy(0.25, 0.25) == 0
    assert centered_accuracy(1.0, 0.25) == 1
    assert centered_accuracy(0.5, 0.25) == pytest.approx(1 / 3)
    categorical = EvalResult("mc", "categorical", items=200, correct=100, baseline=0.25)
    generative = EvalResult("math", "generative", items=400, correct=40, baseline=0.0)
    assert categorical.centered == pytest.approx(1 / 3)
    assert generative.centered == pytest.approx(0.1)
    assert chatcore([categorical, generative]) == pytest.approx((1 / 3 + 0.1) / 2)
    below = EvalResult("mc", "categorical", items=100, correct=10, baseline=0.25)
    assert below.centered == pytest.approx(-0.2)  # worse than guessing counts against
    row = categorical.to_dict()
    assert row["accuracy"] == 0.5 and row["items"] == 200
    assert (row["ci_low"], row["ci_high"]) == categorical.interval
    with pytest.raises(ValueError, match="at least one"):
        chatcore([])
    with pytest.raises(ValueError, match="baseline"):
        centered_accuracy(0.5, 1.0)


# ------------------------------------------------------------------------------------------------
# categorical


def test_categorical_on_a_random_model_shape_and_determinism(tok, mc_records):
    model = random_model()
    first = categorical_predictions(model, tok, mc_records, batch_size=7)
    assert len(first) == len(mc_records)
    assert all(p in r["letters"] for p, r in zip(first, mc_records))
    assert categorical_predictions(model, tok, mc_records, batch_size=7) == first
    # batching and right padding change nothing: one record at a time gives the same letters
    assert categorical_predictions(model, tok, mc_records, batch_size=1) == first
    assert len(set(first)) > 1  # the prompt matters
    result = evaluate_categorical(model, tok, mc_records)
    assert (result.task, result.kind, result.items) == ("tiny_numbers", "categorical", 40)
    assert result.correct == sum(p == r["answer"] for p, r in zip(first, mc_records))
    assert result.baseline == pytest.approx(0.25)


class CountingModel(nn.Module):
    """Logits at t = how often each token occurred up to t: it answers the most repeated letter."""

    def __init__(self, vocab_size, seq_len=512):
        super().__init__()
        self.config = SimpleNamespace(seq_len=seq_len)
        self.vocab_size = vocab_size
        self.unused = nn.Parameter(torch.zeros(()))

    def forward(self, idx):
        return F.one_hot(idx, self.vocab_size).float().cumsum(1) + self.unused


def test_categorical_on_a_hand_built_case(tok):
    # the question repeats one letter; the model picks it; the key says which is right
    cases = [("B", 1), ("B", 2), ("C", 2), ("A", 0), ("D", 0)]  # (repeated letter, answer index)
    records = [
        {
            **mmlu_record(
                {
                    "question": "Pick" + f"\n{letter}" * 3,
                    "choices": ["w", "x", "y", "z"],
                    "answer": answer,
                }
            ),
            "task": "hand",
        }  # fmt: skip
        for letter, answer in cases
    ]
    model = CountingModel(tok.vocab_size)
    # restricted to the letters: the most frequent token overall is not a letter
    assert categorical_predictions(model, tok, records) == ["B", "B", "C", "A", "D"]
    result = evaluate_categorical(model, tok, records, batch_size=2)
    assert (result.correct, result.items, result.accuracy) == (3, 5, 0.6)
    # a prompt longer than seq_len keeps its end: what falls before the window does not count
    tail = len(render_for_completion(tok, records[0])) - 2  # from "Pick" on: no bos, user_start
    question = records[0]["messages"][0]["content"]
    long = {**records[0], "messages": [{"role": "user", "content": "C\n" * 30 + question},
                                       records[0]["messages"][1]]}  # fmt: skip
    assert categorical_predictions(CountingModel(tok.vocab_size, seq_len=tail), tok, [long]) == [
        "B"
    ]
    assert categorical_predictions(CountingModel(tok.vocab_size), tok, [long]) == ["C"]


def test_categorical_errors(tok, mc_records):
    model = random_model()
    with pytest.raises(ValueError, match="not one"):
        letter_ids(tok, ["A", "a long label"])
    with pytest.raises(ValueError, match="no `letters`"):
        evaluate_categorical(
            model, tok, list(load_task("tiny_arithmetic", "test", n_train=1, n_test=2))
        )
    bad = {**mc_records[0], "answer": "Z"}
    with pytest.raises(ValueError, match="not one of the letters"):
        evaluate_categorical(model, tok, [bad])
    with pytest.raises(ValueError, match="no records"):
        evaluate_categorical(model, tok, [])


# ------------------------------------------------------------------------------------------------
# generative


def test_generative_answer_checks():
    records = list(load_task("tiny_arithmetic", "test", n_train=1, n_test=6))
    record = records[0]
    solution = "".join(p["text"] for p in record["messages"][1]["content"])
    assert reference_answer(record) == record["answer"]
    assert reference_answer({"messages": record["messages"]}) == record["answer"]
    assert answer_is_correct(record, solution)
    assert answer_is_correct(record, f"blah\n#### {int(record['answer']):,}")
    assert not answer_is_correct(record, f"{record['answer']}")  # no #### marker
    assert not answer_is_correct(record, f"#### {int(record['answer']) + 1}")

    def complete(r):  # right on every other record
        return f"#### {r['answer']}" if records.index(r) % 2 == 0 else "#### -1"

    result = evaluate_generative(records, complete)
    assert (result.task, result.kind, result.items, result.correct) == (
        "tiny_arithmetic",
        "generative",
        6,
        3,
    )
    assert result.baseline == 0 and result.centered == 0.5
    custom = evaluate_generative(records, lambda r: "", check=lambda r, c: True, name="all")
    assert (custom.task, custom.correct) == ("all", 6)
