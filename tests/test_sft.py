"""The SFT stage: best-fit packing, rows and masks, the weighted loss, resume, DDP, errors."""
# ruff: noqa: E402  (the offline switches must be set before datasets is imported)

import os

os.environ["HF_HUB_OFFLINE"] = "1"
os.environ["HF_DATASETS_OFFLINE"] = "1"

import subprocess
from dataclasses import asdict, replace
from pathlib import Path

import pytest
import torch

from nanolib.chat import render_conversation
from nanolib.checkpoint import load_model, read_metrics, save_checkpoint
from nanolib.loop import TrainingError
from nanolib.model import GPT, config_for_depth
from nanolib.optim import build_optimizer
from nanolib.sft import (
    ConversationSource,
    SFTConfig,
    evaluate_loss,
    launch_sft,
    pack_rows,
    plan_sft,
    render_row,
    rows_to_batch,
    train_mixture,
    train_sft,
)
from nanolib.tasks import load_task
from nanolib.tokenizer import Tokenizer

from helpers import EXACT_CPU, assert_same_metrics, metrics_without, run_stage_module

SIZES = {"n_train": 24, "n_test": 6}
MIXTURE = {"tiny_chat": 1.0, "tiny_arithmetic": 2.0}
TOL = 1e-4  # DDP sums gradients in another order; resume is bit-identical
BASE_LRS = {"matrix_lr": 0.01, "embedding_lr": 0.1, "unembedding_lr": 0.004}


pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.fixture(scope="module")
def tok(tokenizer_dir) -> Tokenizer:
    return Tokenizer.load(tokenizer_dir)


@pytest.fixture(scope="module")
def init_dir(tmp_path_factory, tok) -> Path:
    """A random depth-1 GPT saved as a checkpoint with a base run's config: the 'base model'."""
    torch.manual_seed(0)
    config = config_for_depth(1, tok.vocab_size, 128, aspect_ratio=64, head_dim=32)
    model = GPT(config)
    with torch.no_grad():
        for p in model.parameters():
            p.add_(0.02 * torch.randn_like(p))
    d = tmp_path_factory.mktemp("base")
    meta = {"model": asdict(config), "config": {"batch_tokens": 1024, **BASE_LRS}}
    save_checkpoint(d, 7, model, build_optimizer(model), meta)
    return d


def sft_config(out: Path, tokenizer_dir: Path, init_dir: Path, **kw) -> SFTConfig:
    base = dict(
        mixture=MIXTURE,
        task_options={name: SIZES for name in MIXTURE},
        val_per_task=4,
        num_steps=4,
        device_batch_size=4,
        lr_frac=0.5,
        eval_every=2,
        checkpoint_every=2,
        **EXACT_CPU,
    )
    return SFTConfig(str(out), str(tokenizer_dir), str(init_dir), **{**base, **kw})


def run_module(cfg: SFTConfig, **env) -> subprocess.CompletedProcess:
    return run_stage_module("nanolib.sft", cfg, **env)


def comparable(out_dir) -> list[dict]:
    """Metrics lines without the timings."""
    return metrics_without(out_dir, {"wall_s", "step_s", "tokens_per_s"})


# ------------------------------------------------------------------------------------------------
# packing


def test_best_fit_takes_the_longest_that_fits_and_pads_instead_of_cropping():
    packing = pack_rows([6, 3, 5, 2, 4], capacity=10, buffer_size=5)
    # row 0: 6, then the longest that fits in 4 (4), full; row 1: 5, 3, 2 fills it exactly
    assert packing.rows == [[0, 4], [2, 1, 3]]
    assert packing.cropped == 0 and packing.tokens == 20 and packing.fill == 1.0
    # nothing of the buffer fits the 2 left after 8: the row is padded, never split
    padded = pack_rows([8, 5, 5], capacity=10, buffer_size=3)
    assert padded.rows == [[0], [1, 2]] and padded.fill == pytest.approx(18 / 20)


def test_the_buffer_limits_the_choice_and_long_conversations_are_cropped_and_counted():
    assert pack_rows([6, 3, 4], capacity=10, buffer_size=1).rows == [[0, 1], [2]]
    assert pack_rows([6, 3, 4], capacity=10, buffer_size=3).rows == [[0, 2], [1]]
    packing = pack_rows([25, 3, 12, 4], capacity=10, buffer_size=4)
    assert packing.cropped == 2 and packing.tokens == 10 + 3 + 10 + 4
    placed = sorted(i for row in packing.rows for i in row)
    assert placed == [0, 1, 2, 3]  # every conversation exactly once
    for bad in ([3, 0], [1]):
        with pytest.raises(ValueError):
            pack_rows(bad, capacity=1 if bad == [1] else 10)


def test_rows_start_at_bos_hold_whole_conversations_and_mask_the_padding(tok):
    convs = list(load_task("tiny_chat", "train", **SIZES))[:3]
    lengths = [len(render_conversation(tok, c)[0]) for c in convs]
    cap = sum(lengths) + 7
    ids, mask = render_row(tok, convs, cap)
    assert len(ids) == len(mask) == cap and ids[0] == tok.bos_id
    assert ids[-7:] == [tok.bos_id] * 7 and mask[-7:] == [0] * 7
    start = 0
    for conv, n in zip(convs, lengths):  # each conversation sits whole, as rendered alone
        assert (ids[start : start + n], mask[start : start + n]) == render_conversation(tok, conv)
        start += n
    x, y = rows_to_batch([(ids, mask)])
    assert x.shape == y.shape == (1, cap - 1)
    kept = y[0] != -1
    assert kept.tolist() == [bool(m) for m in mask[1:]]
    assert torch.equal(y[0][kept], torch.tensor(ids[1:])[kept])


# ------------------------------------------------------------------------------------------------
# the plan and the batches


def test_plan_inherits_the_base_run_and_checks_the_arithmetic(tokenizer_dir, init_dir, tmp_path):
    cfg = sft_config(tmp_path / "a", tokenizer_dir, init_dir, num_steps=None)
    tok = Tokenizer.load(tokenizer_dir)
    mixture = train_mixture(cfg)
    p = plan_sft(cfg, tok, mixture)
    assert p.seq_len == 128 and p.batch_tokens == 1024 and p.rows_per_step == 8
    assert p.micro_steps == 2 and p.lrs == {k: v * 0.5 for k, v in BASE_LRS.items()}
    assert p.conversations == 24 + 48 and len(mixture) == p.conversations
    assert p.num_steps == -(-len(p.packing.rows) // 8)  # one pass, the last step part padding
    assert plan_sft(replace(cfg, num_steps=9), tok, mixture).num_steps == 9
    with pytest.raises(TrainingError, match="not a multiple"):
        plan_sft(replace(cfg, batch_tokens=1000), tok, mixture)
    with pytest.raises(TrainingError, match="longer than the base model"):
        plan_sft(replace(cfg, seq_len=256), tok, mixture)


def test_weights_make_the_loss_the_mean_over_the_steps_assistant_tokens(
    tokenizer_dir, init_dir, tmp_path
):
    cfg = sft_config(tmp_path / "w", tokenizer_dir, init_dir)
    tok = Tokenizer.load(tokenizer_dir)
    mixture = train_mixture(cfg)
    p = plan_sft(cfg, tok, mixture)
    model, _ = load_model(init_dir)
    source = ConversationSource(tok, mixture, p, cfg.device_batch_size, "cpu", wrap=True)
    micro = list(source.batches(0, model))
    assert len(micro) == p.micro_steps
    weighted = sum((model(x, y, loss_reduction="none") * w).sum() for x, y, w in micro)
    xs, ys = torch.cat([m[0] for m in micro]), torch.cat([m[1] for m in micro])
    assert weighted.item() == pytest.approx(model(xs, ys).item(), rel=1e-5)
    assert (xs[:, 0] == tok.bos_id).all()
    assert source.metrics(1.0, 0.5)["assistant_tokens"] == int((ys != -1).sum())


def test_missing_base_checkpoint_names_the_chapter_that_makes_it(tokenizer_dir, tmp_path):
    cfg = sft_config(tmp_path / "x", tokenizer_dir, tmp_path / "no-base")
    with pytest.raises(TrainingError, match=r"nanobook run 03") as e:
        launch_sft(cfg)
    assert "\n" not in str(e.value)
    assert not (tmp_path / "x").exists()


# ------------------------------------------------------------------------------------------------
# runs


def test_sft_lowers_the_held_out_loss_and_saves_a_loadable_model(tokenizer_dir, init_dir, tmp_path):
    cfg = sft_config(tmp_path / "run", tokenizer_dir, init_dir, num_steps=6, lr_frac=2.0)
    summary = train_sft(cfg, progress=False)
    history = read_metrics(cfg.out_dir)
    vals = [r["val_loss"] for r in history if "val_loss" in r]
    assert [r["step"] for r in history if "val_loss" in r] == [0, 2, 4, 6]
    assert vals[-1] < vals[0]
    assert summary["step"] == 6 and summary["val_loss"] == vals[-1]
    model, meta = load_model(cfg.out_dir)
    assert meta["step"] == 6
    # the peak LRs are in meta.json: RL (nanolib.rl_train.init_lrs) scales them
    assert {k: meta["config"][k] for k in BASE_LRS} == {k: 2.0 * v for k, v in BASE_LRS.items()}
    tok = Tokenizer.load(tokenizer_dir)
    held = list(load_task("tiny_arithmetic", "test", **SIZES))
    assert evaluate_loss(model, tok, held, 128, 4) < evaluate_loss(
        load_model(init_dir)[0], tok, held, 128, 4
    )
    again = train_sft(cfg, progress=False)  # finished: nothing is trained twice
    assert again["resumed_from"] == 6


def test_resume_after_sigkill_gives_the_same_metrics(tokenizer_dir, init_dir, tmp_path):
    whole = sft_config(tmp_path / "whole", tokenizer_dir, init_dir)
    broken = replace(whole, out_dir=str(tmp_path / "broken"))
    assert run_module(whole).returncode == 0
    killed = run_module(broken, NANOBOOK_TEST_DIE="2")
    assert killed.returncode != 0
    assert [r["step"] for r in read_metrics(broken.out_dir)] == [0, 1, 2]
    resumed = run_module(broken)
    assert resumed.returncode == 0, resumed.stderr[-2000:]
    assert "resuming at step 2" in resumed.stdout
    assert_same_metrics(comparable(whole.out_dir), comparable(broken.out_dir), tol=0.0)


def test_torchrun_two_ranks_take_the_steps_one_process_takes(tokenizer_dir, init_dir, tmp_path):
    one = sft_config(tmp_path / "one", tokenizer_dir, init_dir)
    two = replace(one, out_dir=str(tmp_path / "two"))
    assert run_module(one).returncode == 0
    summary = launch_sft(two, nproc=2, progress=False)
    assert summary["world_size"] == 2 and summary["step"] == 4
    assert_same_metrics(comparable(one.out_dir), comparable(two.out_dir), tol=TOL)
