"""CompileTrial: eager vs compiled decided from the run's own step times, remembered per shape."""

import os

import pytest

from nanolib.compiling import (
    GUESSED_COMPILE_S,
    TRIAL_STEPS,
    CompileTrial,
    known_compile_s,
    read_verdict,
    use_inductor_cache,
    verdict_key,
)
from nanolib.model import GPTConfig

MODEL = GPTConfig(vocab_size=64, seq_len=16, n_layer=1, d_model=32, n_head=2)


@pytest.fixture(autouse=True)
def runs(tmp_path, monkeypatch):
    monkeypatch.setenv("NANOBOOK_RUNS", str(tmp_path))
    monkeypatch.setenv("TORCHINDUCTOR_CACHE_DIR", "")  # so that monkeypatch restores it after…
    monkeypatch.delenv("TORCHINDUCTOR_CACHE_DIR")  # … use_inductor_cache sets it
    return tmp_path


def _key(rows=4):
    return verdict_key(MODEL, rows, "cpu", bf16=False)


def _run(trial, eager_s, compiled_s, compile_s=20.0, steps=40):
    """Feed a trial step times as a training loop would; return its notes and modes."""
    notes, modes = [], []
    assert trial.start() is None
    for _ in range(steps):
        modes.append(trial.compiled)
        if trial.compiled:
            dt = compile_s if trial.compile_s is None else compiled_s
        else:
            dt = eager_s
        note = trial.record(dt)
        if note:
            notes.append(note)
    return notes, modes


def test_compile_that_pays_is_kept_and_remembered():
    trial = CompileTrial(_key(), remaining_steps=1000)
    notes, modes = _run(trial, eager_s=1.0, compiled_s=0.7)
    # warm-up + TRIAL_STEPS eager, then compiled for good
    assert modes[: TRIAL_STEPS + 1] == [False] * (TRIAL_STEPS + 1)
    assert all(modes[TRIAL_STEPS + 1 :])
    assert "first compiled step took 20.0 s" in notes[1]
    assert "kept" in notes[-1] and "1.43×" in notes[-1]
    stored = read_verdict(_key())
    assert stored["pays"] and stored["compile_s"] == 20.0
    assert known_compile_s() == 20.0
    again = CompileTrial(_key(), remaining_steps=1000)
    assert "on: measured" in again.start() and again.compiled and again.decided


def test_compile_that_does_not_pay_is_dropped_and_remembered():
    trial = CompileTrial(_key(), remaining_steps=1000)
    notes, modes = _run(trial, eager_s=1.0, compiled_s=1.0)
    assert not modes[-1] and "dropped" in notes[-1]
    again = CompileTrial(_key(), remaining_steps=1000)
    assert "off: measured" in again.start() and not again.compiled
    assert read_verdict(_key(rows=8)) is None  # another shape is measured afresh


def test_a_short_run_does_not_try_to_compile():
    trial = CompileTrial(_key(), remaining_steps=30)
    notes, modes = _run(trial, eager_s=0.1, compiled_s=0.01, steps=30)
    # 25 steps left × 0.1 s / 2 is far below a first compile's guessed cost
    assert not any(modes) and notes == [
        f"torch.compile off: {30 - TRIAL_STEPS - 1} steps left are too few to pay"
    ]
    assert read_verdict(_key()) is None and known_compile_s() == GUESSED_COMPILE_S


@pytest.mark.parametrize("wanted", [True, False])
def test_a_forced_mode_is_not_measured(wanted):
    trial = CompileTrial(_key(), remaining_steps=1000, wanted=wanted)
    notes, modes = _run(trial, eager_s=1.0, compiled_s=0.5)
    assert all(m == wanted for m in modes)
    assert notes == (
        ["torch.compile: the first compiled step took 20.0 s (it compiles)"] if wanted else []
    )
    assert read_verdict(_key()) is None


def test_a_damaged_verdict_is_measured_again(runs):
    trial = CompileTrial(_key(), remaining_steps=1000)
    _run(trial, eager_s=1.0, compiled_s=0.5)
    [path] = (runs / ".cache" / "compile").glob("*.json")
    path.write_text("{not json")
    assert read_verdict(_key()) is None
    assert CompileTrial(_key(), remaining_steps=1000).start() is None


def test_inductor_cache_lives_under_runs(runs):
    assert use_inductor_cache() == runs / ".cache" / "inductor"
    assert os.environ["TORCHINDUCTOR_CACHE_DIR"] == str(runs / ".cache" / "inductor")
