"""RL rollouts and stage: seeded rollouts, tool masks, sharding, resume after a kill, DDP."""
# ruff: noqa: E402  (the offline switches must be set before datasets is imported)

import os

os.environ["HF_HUB_OFFLINE"] = "1"
os.environ["HF_DATASETS_OFFLINE"] = "1"

import subprocess
from dataclasses import asdict, replace
from pathlib import Path

import pytest
import torch
import torch.nn as nn

from nanolib.checkpoint import load_model, read_metrics, save_checkpoint
from nanolib.engine import Engine
from nanolib.loop import TrainingError
from nanolib.model import GPT, GPTConfig, config_for_depth
from nanolib.optim import build_optimizer
from nanolib.rl import policy_gradient_weights, training_rows
from nanolib.rl_train import RLConfig, launch_rl, plan_rl, train_rl
from nanolib.rollouts import problems_for_step, sample_group, sample_groups
from nanolib.tasks import load_task
from nanolib.tokenizer import Tokenizer

from helpers import EXACT_CPU, assert_same_metrics, metrics_without, run_stage_module, stage_env

TASK = {"n_train": 24, "n_test": 6}
TOL = 1e-4  # DDP sums gradients in another order (≈1e-7 seen); resume is bit-identical


pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.fixture(scope="module")
def init_dir(tmp_path_factory, tokenizer_dir) -> Path:
    """A random depth-1 GPT saved as a checkpoint: the 'SFT model' RL starts from."""
    tok = Tokenizer.load(tokenizer_dir)
    torch.manual_seed(0)
    config = config_for_depth(1, tok.vocab_size, 160, aspect_ratio=64, head_dim=32)
    model = GPT(config)
    with torch.no_grad():
        for p in model.parameters():
            p.add_(0.02 * torch.randn_like(p))
    d = tmp_path_factory.mktemp("sft")
    optimizer = build_optimizer(model)
    save_checkpoint(d, 5, model, optimizer, {"model": asdict(config), "config": {}})
    return d


def rl_config(out: Path, tokenizer_dir: Path, init_dir: Path, **kw) -> RLConfig:
    base = dict(
        task_options=TASK,
        num_steps=4,
        problems_per_step=2,
        num_samples=4,
        max_new_tokens=12,
        device_batch_size=4,
        lr_frac=1.0,
        reward="helpers:parity_reward",
        eval_every=2,
        eval_problems=4,
        eval_samples=2,
        checkpoint_every=2,
        warn_patience=2,
        warn_window=1,
        **EXACT_CPU,
    )
    return RLConfig(str(out), str(tokenizer_dir), str(init_dir), **{**base, **kw})


def run_module(cfg: RLConfig, **env) -> subprocess.CompletedProcess:
    return run_stage_module("nanolib.rl_train", cfg, **env)


def comparable(out_dir) -> list[dict]:
    """Metrics lines without the timings."""
    return metrics_without(out_dir, {"wall_s", "step_s", "sample_s"})


# ------------------------------------------------------------------------------------------------
# rollouts


def test_problems_are_dealt_to_ranks_and_cycle_through_epochs():
    one = [problems_for_step(s, 4, 10, seed=3) for s in range(5)]
    for s in range(5):
        ranks = [problems_for_step(s, 4, 10, seed=3, rank=r, world=2) for r in range(2)]
        assert sorted(ranks[0] + ranks[1]) == sorted(one[s])
    first_epoch = [i for step in one[:2] for i in step] + one[2][:2]
    assert sorted(first_epoch) == list(range(10))  # every problem once per epoch
    assert one == [problems_for_step(s, 4, 10, seed=3) for s in range(5)]
    assert one != [problems_for_step(s, 4, 10, seed=4) for s in range(5)]
    with pytest.raises(ValueError, match="multiple of nproc"):
        problems_for_step(0, 3, 10, world=2)


def test_rollouts_are_seeded_by_step_problem_and_sample(tokenizer_dir, init_dir):
    tok = Tokenizer.load(tokenizer_dir)
    model, _ = load_model(init_dir)
    engine = Engine(model, tok)
    record = load_task("tiny_arithmetic", "train", **TASK)[0]

    def tokens(step, problem, n=3):
        group = sample_group(engine, record, problem, n, 10, 1.0, None, seed=0, step=step)
        return [r.tokens for r in group]

    first = tokens(1, 7)
    assert first == tokens(1, 7)
    assert first != tokens(2, 7) and first != tokens(1, 8)
    assert tokens(1, 7, n=2) == first[:2]  # sample i's draws do not depend on the group's size
    group = sample_group(engine, record, 7, 3, 10, seed=0, step=1)
    assert all(r.prompt == group[0].prompt and r.prompt[-1] == tok.special_id(
        "<|assistant_start|>") for r in group)  # fmt: skip


class CalculatorScript(nn.Module):
    """A stand-in model that always answers `<|python_start|>1+2<|python_end|>` then stops."""

    def __init__(self, tok: Tokenizer) -> None:
        super().__init__()
        self.config = GPTConfig(vocab_size=tok.vocab_size, seq_len=256, n_layer=1, d_model=8)
        self.anchor = nn.Parameter(torch.zeros(()))
        s = tok.special_id
        one, plus, two = (tok.encode(c)[0] for c in "1+2")
        self.next = {
            s("<|assistant_start|>"): s("<|python_start|>"),
            s("<|python_start|>"): one,
            one: plus,
            plus: two,
            two: s("<|python_end|>"),
            s("<|output_end|>"): s("<|assistant_end|>"),
        }
        self.stop = s("<|assistant_end|>")

    def forward(self, idx, targets=None, loss_reduction="mean", kv_cache=None):
        if kv_cache is not None:
            kv_cache.advance(idx.size(1))
        logits = torch.zeros(*idx.shape, self.config.vocab_size)
        for b in range(idx.size(0)):
            for t in range(idx.size(1)):
                logits[b, t, self.next.get(int(idx[b, t]), self.stop)] = 30.0
        return logits


def test_forced_tool_output_is_masked_and_never_weighted(tokenizer_dir):
    tok = Tokenizer.load(tokenizer_dir)
    record = load_task("tiny_arithmetic", "train", **TASK)[0]
    engine = Engine(CalculatorScript(tok), tok)
    group = sample_group(engine, record, 0, 2, 20, seed=0, reward=lambda rec, text: 1.0)
    r = group[0]
    s = tok.special_id
    start, end = r.tokens.index(s("<|output_start|>")), r.tokens.index(s("<|output_end|>"))
    assert tok.decode(r.tokens[start + 1 : end]) == "3"
    assert r.mask[start : end + 1] == [0] * (end + 1 - start)
    assert sum(r.mask) == len(r.tokens) - (end + 1 - start)
    assert r.tool_calls == 1 and r.stopped and r.answer is None
    weights = policy_gradient_weights([r.mask], [0.5], r.sampled_tokens)
    _, targets, w = training_rows([r], weights, tok.bos_id)
    p = len(r.prompt) - 1
    assert (w[0, p + start : p + end + 1] == 0).all()
    assert (targets[0, p + start : p + end + 1] == -1).all()
    assert (w[0, :p] == 0).all() and w[0].sum() == pytest.approx(0.5)


# ------------------------------------------------------------------------------------------------
# the stage


def test_plan_checks_the_batch_arithmetic(tokenizer_dir, init_dir, tmp_path):
    cfg = rl_config(tmp_path, tokenizer_dir, init_dir)
    p = plan_rl(cfg, 24, 6)
    assert (p.num_steps, p.rollouts_per_rank, p.micro_steps) == (4, 8, 2)
    assert p.lrs == {"matrix_lr": 0.02, "embedding_lr": 0.3, "unembedding_lr": 0.008}
    by_epochs = plan_rl(replace(cfg, num_steps=None, num_epochs=2.0), 24, 6)
    assert by_epochs.num_steps == 24
    with pytest.raises(TrainingError, match="not a multiple of device_batch_size=3"):
        plan_rl(replace(cfg, device_batch_size=3), 24, 6)
    with pytest.raises(TrainingError, match="multiple of nproc=4"):
        plan_rl(cfg, 24, 6, world=4)


def test_missing_sft_checkpoint_and_bad_reward_are_clear_errors(tokenizer_dir, init_dir, tmp_path):
    with pytest.raises(FileNotFoundError, match="no checkpoint"):
        train_rl(rl_config(tmp_path / "a", tokenizer_dir, tmp_path / "nowhere"))
    with pytest.raises(TrainingError, match="module:function"):
        train_rl(rl_config(tmp_path / "b", tokenizer_dir, init_dir, reward="nanolib.rl:nothing"))
    assert not (tmp_path / "a").exists() and not (tmp_path / "b").exists()


def test_rl_run_logs_diagnostics_and_evaluations(tokenizer_dir, init_dir, tmp_path):
    cfg = rl_config(tmp_path / "run", tokenizer_dir, init_dir, kl_coef=0.1)
    summary = train_rl(cfg, progress=False)
    rows = read_metrics(cfg.out_dir)
    assert [r["step"] for r in rows] == [0, 1, 2, 3, 4]
    steps = [r for r in rows if r["step"] > 0]
    for key in ("reward_mean", "groups_all_equal", "entropy", "completion_len", "kl"):
        assert all(key in r for r in steps), key
    assert steps[0]["kl"] == pytest.approx(0.0, abs=1e-6)  # the policy starts at the reference
    assert steps[-1]["kl"] > 0  # and leaves it
    evals = [r["step"] for r in rows if "eval_problems" in r]
    assert evals == [0, 2, 4]
    assert {"greedy_pass1", "pass@1", "pass@2", "pass@2_high"} <= set(rows[0])
    assert summary["before"]["step"] == 0 and summary["after"]["step"] == 4
    model, meta = load_model(cfg.out_dir)  # the RL model is a checkpoint like any other
    start, _ = load_model(init_dir)
    assert meta["step"] == 4
    assert any(not torch.equal(a, b) for a, b in zip(model.parameters(), start.parameters()))


def test_resume_after_sigkill_gives_the_same_metrics(tokenizer_dir, init_dir, tmp_path):
    whole = rl_config(tmp_path / "whole", tokenizer_dir, init_dir)
    broken = replace(whole, out_dir=str(tmp_path / "broken"))
    assert run_module(whole).returncode == 0
    killed = run_module(broken, NANOBOOK_TEST_DIE="2")
    assert killed.returncode != 0
    assert [r["step"] for r in read_metrics(broken.out_dir)] == [0, 1, 2]
    resumed = run_module(broken)
    assert resumed.returncode == 0, resumed.stderr[-2000:]
    assert "resuming at step 2" in resumed.stdout
    assert_same_metrics(comparable(whole.out_dir), comparable(broken.out_dir), tol=0.0)


def test_torchrun_two_ranks_take_the_steps_one_process_takes(
    tokenizer_dir, init_dir, tmp_path, monkeypatch
):
    one = rl_config(tmp_path / "one", tokenizer_dir, init_dir)
    two = replace(one, out_dir=str(tmp_path / "two"))
    assert run_module(one).returncode == 0
    monkeypatch.setenv("PYTHONPATH", stage_env()["PYTHONPATH"])  # the ranks import the test reward
    summary = launch_rl(two, nproc=2, progress=False)
    assert summary["world_size"] == 2 and summary["step"] == 4
    assert_same_metrics(comparable(one.out_dir), comparable(two.out_dir), tol=TOL)


def test_a_batch_of_problems_draws_each_group_as_it_would_alone(tokenizer_dir, init_dir):
    tok = Tokenizer.load(tokenizer_dir)
    model, _ = load_model(init_dir)
    engine = Engine(model, tok)
    task = load_task("tiny_arithmetic", "train", **TASK)
    problems = [3, 0, 7]
    together = sample_groups(engine, [task[i] for i in problems], problems, 3, 10, step=5)
    assert [(r.problem, r.sample) for r in together] == [(p, i) for p in problems for i in range(3)]
    for k, p in enumerate(problems):
        alone = sample_group(engine, task[p], p, 3, 10, step=5)
        assert [r.tokens for r in together[3 * k : 3 * k + 3]] == [r.tokens for r in alone]
