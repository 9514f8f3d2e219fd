"""nanolib.chat_eval's generative side: greedy replies with tools, HumanEval in the sandbox,
and every task of a list scored with intervals for ChatCORE."""

from pathlib import Path

import pytest
import torch
import torch.nn as nn

from nanolib.chat import render_for_completion
from nanolib.chat_eval import (
    answer_is_correct,
    chatcore,
    evaluate_generative_task,
    evaluate_tasks,
    extract_code,
    greedy_completions,
    humaneval_passes,
)
from nanolib.engine import Engine
from nanolib.model import GPT, GPTConfig
from nanolib.tasks import load_task
from nanolib.tokenizer import Tokenizer

TEXT = "".join(p.read_text() for p in sorted(Path(__file__).parent.parent.glob("nanolib/*.py")))


@pytest.fixture(scope="module")
def tok():
    return Tokenizer.train([TEXT], 400)


class ScriptedModel(nn.Module):
    """Greedy decoding of this 'model' writes `script` after any prompt, one token per step."""

    def __init__(self, script: list[int], vocab_size: int, seq_len: int = 256) -> None:
        super().__init__()
        self.config = GPTConfig(vocab_size=vocab_size, seq_len=seq_len, n_layer=1, d_model=8)
        self.dummy = nn.Parameter(torch.zeros(1))
        self.script = script
        self.fed: list[torch.Tensor] = []  # the columns the engine passed in while decoding

    def forward(self, idx, targets=None, loss_reduction="mean", kv_cache=None):
        b, t = idx.shape
        step = 0 if t > 1 or kv_cache.pos == 0 else len(self.fed) + 1
        if step:
            self.fed.append(idx[:, -1].clone())
        else:
            self.fed = []
        kv_cache.advance(t)
        logits = torch.zeros(b, t, self.config.vocab_size)
        logits[:, -1, self.script[min(step, len(self.script) - 1)]] = 1.0
        return logits


def test_greedy_replies_call_the_calculator_and_are_graded_by_their_answer(tok):
    special = tok.special_id
    call = [special("<|python_start|>"), *tok.encode("5+7"), special("<|python_end|>")]
    forced = [special("<|output_start|>"), *tok.encode("12"), special("<|output_end|>")]
    # while the tool's output is forced in, whatever the model proposes is ignored
    script = call + [0] * len(forced) + tok.encode(" so #### 12") + [special("<|assistant_end|>")]
    model = ScriptedModel(script, tok.vocab_size)
    engine = Engine(model, tok)
    records = list(load_task("tiny_arithmetic", "test", n_train=1, n_test=3))
    records = [{**r, "answer": "12"} for r in records]
    replies = greedy_completions(engine, records, max_new_tokens=40, batch_size=2)
    assert len(replies) == 3 and len(set(replies)) == 1
    reply = replies[0]
    assert "5+7" in reply and "12<|output_end|>" in reply and reply.endswith("#### 12")
    assert "<|assistant_end|>" not in reply
    assert torch.equal(model.fed[len(call)], torch.full((1,), forced[0]))  # the tool's tokens
    result, texts = evaluate_generative_task(engine, records, 40, name="scripted")
    assert (result.items, result.correct, result.kind) == (3, 3, "generative")
    assert result.interval[0] > 0.3 and texts == replies
    short = greedy_completions(engine, records[:1], max_new_tokens=3)[0]
    assert not answer_is_correct(records[0], short)  # cut at max_new_tokens: no answer yet


def test_a_prompt_that_fills_the_context_gets_an_empty_reply(tok):
    records = list(load_task("tiny_arithmetic", "test", n_train=1, n_test=2))
    longest = max(len(render_for_completion(tok, r)) for r in records)
    model = ScriptedModel([tok.special_id("<|assistant_end|>")], tok.vocab_size, seq_len=longest)
    replies = greedy_completions(Engine(model, tok), records, max_new_tokens=8)
    assert "" in replies
    with pytest.raises(ValueError):
        greedy_completions(Engine(model, tok), records, max_new_tokens=0)


@pytest.fixture(scope="module")
def humaneval():
    return list(load_task("humaneval", "test"))[:2]


def test_humaneval_runs_the_completion_against_the_tests_in_the_sandbox(humaneval):
    record = humaneval[0]
    solution = record["messages"][1]["content"]  # the prompt, completed by the canonical body
    body = solution[len(record["prompt"]) :]
    assert humaneval_passes(record, solution)  # the whole function, written again
    assert humaneval_passes(record, body)  # or just the body that continues the prompt
    assert humaneval_passes(record, f"Here it is:\n```python\n{solution}```\nDone.")
    assert not humaneval_passes(record, "    return None\n")
    assert not humaneval_passes(record, "    while True: pass\n", timeout_s=1.0)
    assert extract_code("no fence") == "no fence"
    with pytest.raises(ValueError, match="entry_point"):
        humaneval_passes({"prompt": "", "test": ""}, "")


def test_evaluate_tasks_scores_each_kind_with_intervals(tok):
    torch.manual_seed(0)
    model = GPT(GPTConfig(vocab_size=tok.vocab_size, seq_len=256, n_layer=1, d_model=64, n_head=2))
    tasks = [
        load_task("tiny_numbers", "test", n_train=1, n_test=12),
        load_task("tiny_arithmetic", "test", n_train=1, n_test=5),
    ]
    results = evaluate_tasks(model.eval(), tok, tasks, max_items=4, max_new_tokens=6)
    assert [(r.task, r.kind, r.items) for r in results] == [
        ("tiny_numbers", "categorical", 4),
        ("tiny_arithmetic", "generative", 4),
    ]
    assert results[0].baseline == 0.25 and results[1].baseline == 0.0
    for r in results:
        low, high = r.interval
        assert 0 <= low <= r.accuracy <= high <= 1
    assert chatcore(results) == pytest.approx((results[0].centered + results[1].centered) / 2)
    with pytest.raises(ValueError, match="conversations"):
        evaluate_tasks(model, tok, [load_task("tiny_chat", "test", n_train=1, n_test=2)])
