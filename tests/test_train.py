"""nanolib.train: horizon and schedule, bits per byte, resume after SIGKILL, DDP, bad input."""
# ruff: noqa: E402  (the offline switches must be set before datasets is imported)

import os

os.environ["HF_HUB_OFFLINE"] = "1"
os.environ["HF_DATASETS_OFFLINE"] = "1"

import json
import math
import shutil
import signal
import subprocess
from dataclasses import replace
from pathlib import Path

import pytest
import torch

from nanolib import device
from nanolib import train as T
from nanolib.checkpoint import load_model, read_metrics
from nanolib.config import book_root
from nanolib.data import CorruptShardError
from nanolib.model import GPT, config_for_depth, estimate_memory
from nanolib.runs import ArtifactMissingError, artifact
from nanolib.tokenizer import Tokenizer

from helpers import run_stage_module, tiny_config

LOSS_TOL = 1e-5  # resume: the same computation in the same order, so in practice bit-identical
DDP_TOL = 1e-4  # DDP: gloo sums gradients in another order than accumulation does (≈1e-7 seen)


def small(out: Path, tokenizer_dir: Path, **kw) -> T.TrainConfig:
    """The shared tiny model, 10 steps with evaluations and a sample."""
    base = dict(
        batch_tokens=2048,
        device_batch_size=8,
        num_steps=10,
        warmup_steps=3,
        eval_every=4,
        num_samples=1,
        sample_tokens=4,
    )
    return tiny_config(tokenizer_dir, out, **{**base, **kw})


def run_module(cfg: T.TrainConfig, **env) -> subprocess.CompletedProcess:
    return run_stage_module("nanolib.train", cfg, timeout=300, progress=True, **env)


def losses(out_dir) -> dict[int, float]:
    return {r["step"]: r["train_loss"] for r in read_metrics(out_dir) if "train_loss" in r}


def snapshot(d: Path) -> dict[str, bytes]:
    return {str(p.relative_to(d)): p.read_bytes() for p in sorted(d.rglob("*")) if p.is_file()}


# ------------------------------------------------------------------------------------------------
# plan, schedule, bits per byte


def test_horizon_precedence_and_accumulation(tokenizer_dir, tmp_path):
    cfg = small(tmp_path, tokenizer_dir, num_steps=None, tokens_per_param=2.0)
    p = T.plan(cfg, 512)
    assert p.num_steps == round(2.0 * p.num_params / cfg.batch_tokens)
    assert p.tokens == p.num_steps * cfg.batch_tokens and p.flops == p.tokens * p.flops_per_token
    assert p.grad_accum == 2048 // (8 * 64)
    assert T.plan(replace(cfg, target_flops=p.flops_per_token * 2048 * 7.0), 512).num_steps == 7
    assert T.plan(replace(cfg, num_steps=3, target_flops=1e20), 512).num_steps == 3
    assert T.plan(cfg, 512, world_size=4).grad_accum == 1
    with pytest.raises(T.TrainingError, match=r"not a multiple of .* 8 × 64 × 3"):
        T.plan(cfg, 512, world_size=3)


def test_lr_schedule_shape():
    n, warmup, ratio, final = 100, 10, 0.4, 0.05
    lrm = [T.lr_multiplier(s, n, warmup, ratio, final) for s in range(n)]
    assert lrm[0] == pytest.approx(0.1) and lrm[9] == pytest.approx(1.0)
    assert all(b > a for a, b in zip(lrm[:10], lrm[1:10]))  # linear warmup
    assert set(lrm[10:60]) == {1.0}  # flat
    assert all(b < a for a, b in zip(lrm[60:], lrm[61:]))  # linear warmdown …
    assert lrm[-1] == pytest.approx(final + (1 - final) / 40)  # … reaching final after the last
    assert T.lr_multiplier(0, 5, 0, 0.0, 0.0) == 1.0


def test_bpb_of_a_uniform_model_is_log2_vocab_over_bytes_per_token(tokenizer_dir, tmp_path):
    tok = Tokenizer.load(tokenizer_dir)
    cfg = small(tmp_path, tokenizer_dir, eval_tokens=8192)
    model = GPT(config_for_depth(1, tok.vocab_size, 64, head_dim=32))
    torch.nn.init.zeros_(model.lm_head.weight)  # every logit 0: a uniform guess
    token_bytes = torch.tensor(tok.token_bytes())
    bpb = T.evaluate_bpb(model, T.val_batches(tok, cfg), token_bytes)
    ys = torch.cat([y for _, y in T.val_batches(tok, cfg)])
    assert ys.numel() == 8192
    counted, n_bytes = (token_bytes[ys] > 0).sum().item(), token_bytes[ys].sum().item()
    assert bpb == pytest.approx(math.log2(tok.vocab_size) / (n_bytes / counted), rel=1e-6)


# ------------------------------------------------------------------------------------------------
# resume and DDP


def test_resume_after_sigkill_gives_the_same_losses(tokenizer_dir, tmp_path):
    whole = small(tmp_path / "whole", tokenizer_dir, checkpoint_every=3)
    assert run_module(whole).returncode == 0
    broken = replace(whole, out_dir=str(tmp_path / "broken"))
    killed = run_module(broken, NANOBOOK_TEST_DIE="7")
    assert killed.returncode == -signal.SIGKILL
    assert json.loads((tmp_path / "broken" / "meta.json").read_text())["step"] == 6
    assert max(losses(broken.out_dir)) == 7  # step 7 was logged, not checkpointed: redone
    resumed = run_module(broken)
    assert resumed.returncode == 0, resumed.stderr
    assert "resuming at step 6" in resumed.stdout + resumed.stderr
    a, b = losses(whole.out_dir), losses(broken.out_dir)
    assert sorted(a) == sorted(b) == list(range(1, 11))
    assert max(abs(a[s] - b[s]) for s in a) <= LOSS_TOL
    val = [[r.get("val_bpb") for r in read_metrics(d)] for d in (whole.out_dir, broken.out_dir)]
    assert val[0] == pytest.approx(val[1], abs=LOSS_TOL)
    summary = json.loads((tmp_path / "broken" / "summary.json").read_text())
    assert summary["resumed_from"] == 6 and summary["step"] == 10
    assert sorted(p.name for p in (tmp_path / "broken").glob("*.pt")) == [
        "model_000010.pt",
        "optim_000010.pt",
    ]


def test_finished_run_is_not_trained_again(tokenizer_dir, tmp_path):
    cfg = small(tmp_path, tokenizer_dir, num_steps=2, eval_every=0)
    first = T.launch(cfg)
    again = T.launch(replace(cfg, eval_tokens=1024))  # reporting options may differ
    assert again["resumed_from"] == 2 and again["val_bpb"] == first["val_bpb"]
    assert len(losses(cfg.out_dir)) == 2
    model, meta = load_model(cfg.out_dir)
    assert meta["step"] == 2 and isinstance(model, GPT)
    with pytest.raises(FileNotFoundError, match=r"no checkpoint of step 1; steps here: \[2\]"):
        load_model(cfg.out_dir, step=1)
    with pytest.raises(FileNotFoundError, match="no checkpoint in"):
        load_model(Path(cfg.out_dir) / "nothing")


def test_torchrun_two_ranks_match_one_process(tokenizer_dir, tmp_path):
    one = small(tmp_path / "one", tokenizer_dir)  # 4 micro-steps of 8 rows in one process …
    assert run_module(one).returncode == 0
    two = replace(one, out_dir=str(tmp_path / "two"))  # … 2 ranks × 2 micro-steps each
    summary = T.launch(two, nproc=2)
    assert summary["world_size"] == 2 and summary["step"] == 10
    a, b = losses(one.out_dir), losses(two.out_dir)
    assert sorted(a) == sorted(b) == list(range(1, 11))
    assert max(abs(a[s] - b[s]) for s in a) <= DDP_TOL
    assert summary["val_bpb"] == pytest.approx(
        read_metrics(one.out_dir)[-1]["val_bpb"], abs=DDP_TOL
    )
    assert not list((tmp_path / "two").glob("torchrun-logs-*")), "logs of a good run are removed"


def test_a_dying_rank_fails_loudly_with_its_error(tokenizer_dir, tmp_path, monkeypatch):
    monkeypatch.setenv("NANOBOOK_TEST_DIE", "2:1:raise")
    monkeypatch.setenv("OMP_NUM_THREADS", "1")
    with pytest.raises(T.TrainingError) as info:
        T.launch(small(tmp_path, tokenizer_dir), nproc=2)
    msg = str(info.value)
    assert "rank 1 failed" in msg and "rank 1 fails after step 2" in msg


# ------------------------------------------------------------------------------------------------
# bad input: a clear error, nothing overwritten


@pytest.fixture(scope="module")
def finished_run(tokenizer_dir, tmp_path_factory):
    """A finished small run whose files the failing runs below must leave alone."""
    out = tmp_path_factory.mktemp("finished") / "run"
    cfg = small(out, tokenizer_dir, num_steps=2, eval_every=0)
    T.train(cfg)
    return cfg, snapshot(out)


def test_missing_tokenizer_names_the_chapter_to_run(finished_run, tmp_path, monkeypatch):
    cfg, before = finished_run
    with pytest.raises(FileNotFoundError, match=r"nanobook run 01"):
        T.launch(replace(cfg, tokenizer_dir=str(tmp_path / "nope")))
    with pytest.raises(FileNotFoundError, match=r"nanobook run 01"):
        T.launch(replace(cfg, tokenizer_dir=str(tmp_path / "nope")), nproc=2)
    assert snapshot(Path(cfg.out_dir)) == before
    monkeypatch.setenv("NANOBOOK_RUNS", str(tmp_path / "runs"))
    with pytest.raises(ArtifactMissingError, match=r"`nanobook run 01 --preset smoke`"):
        artifact("tokenizer", "smoke")


def test_corrupt_shard_is_a_clear_error(finished_run, tmp_path, monkeypatch):
    cfg, before = finished_run
    corpus = tmp_path / "root" / "data" / "corpus"
    shutil.copytree(book_root() / "data" / "corpus", corpus)
    monkeypatch.setenv("NANOBOOK_ROOT", str(tmp_path / "root"))
    shard = corpus / "train-00000.parquet"
    raw = bytearray(shard.read_bytes())
    raw[len(raw) // 2] ^= 0xFF
    shard.write_bytes(bytes(raw))
    with pytest.raises(CorruptShardError, match=r"train-00000.parquet is corrupt: sha256"):
        T.train(replace(cfg, num_steps=4))
    assert snapshot(Path(cfg.out_dir)) == before


def test_preset_too_big_for_memory_suggests_a_smaller_device_batch(finished_run, monkeypatch):
    cfg, before = finished_run
    monkeypatch.setattr(device, "available_memory", lambda device: 8 * 2**30)
    big = replace(
        cfg, depth=12, seq_len=1024, head_dim=64, batch_tokens=2**17, device_batch_size=128
    )
    with pytest.raises(device.InsufficientMemoryError) as info:
        T.train(big)
    msg = str(info.value)
    suggested = int(msg.split("set device_batch_size to ")[1].split()[0])
    model = T.plan(big, 512).model
    assert suggested < 128 and estimate_memory(model, suggested, torch.float32) <= 0.9 * 8 * 2**30
    assert estimate_memory(model, 2 * suggested, torch.float32) > 0.9 * 8 * 2**30
    assert "device_batch_size=128" in msg and "GiB" in msg
    assert snapshot(Path(cfg.out_dir)) == before


def test_config_round_trip_and_unknown_keys(tmp_path, tokenizer_dir):
    cfg = small(tmp_path, tokenizer_dir, target_flops=1e12)
    cfg.save(tmp_path / "c.json")
    assert T.TrainConfig.load(tmp_path / "c.json") == cfg
    (tmp_path / "bad.json").write_text(
        json.dumps({**json.loads(Path(tmp_path / "c.json").read_text()), "lr": 1})
    )
    with pytest.raises(ValueError, match=r"unknown key\(s\) \['lr'\]"):
        T.TrainConfig.load(tmp_path / "bad.json")


@pytest.mark.slow
def test_a_compile_trial_switches_mid_run_and_keeps_training(tokenizer_dir, tmp_path, monkeypatch):
    from nanolib import compiling

    monkeypatch.setenv("NANOBOOK_RUNS", str(tmp_path / "runs"))  # verdicts land here …
    inductor = book_root() / "runs" / ".cache" / "inductor"  # … compiled code where it stays warm
    monkeypatch.setenv("TORCHINDUCTOR_CACHE_DIR", str(inductor))
    monkeypatch.setattr(compiling, "known_compile_s", lambda: 0.0)  # always worth a try
    eager = T.launch(small(tmp_path / "eager", tokenizer_dir, compile=False), progress=False)
    trial = small(tmp_path / "trial", tokenizer_dir, compile=None)  # measure
    summary = T.launch(trial, progress=False)
    [verdict] = (tmp_path / "runs" / ".cache" / "compile").glob("*.json")
    verdict = json.loads(verdict.read_text())
    assert verdict["compile_s"] > 0 and verdict["pays"] == (verdict["speedup"] >= 1.03)
    a, b = losses(tmp_path / "eager"), losses(tmp_path / "trial")
    assert sorted(a) == sorted(b) == list(range(1, 11))
    # steps 1-5 eager in both runs, then compiled (or eager again): the same within float noise
    assert max(abs(a[s] - b[s]) for s in a) <= 1e-3
    assert summary["val_bpb"] == pytest.approx(eager["val_bpb"], abs=1e-3)
    # compile asked for: compiled from the first step (the code is in inductor's cache by now)
    forced = T.launch(small(tmp_path / "forced", tokenizer_dir, compile=True), progress=False)
    assert forced["compiled"] and forced["compile_s"] > 0
    c = losses(tmp_path / "forced")
    assert max(abs(a[s] - c[s]) for s in a) <= 1e-3
