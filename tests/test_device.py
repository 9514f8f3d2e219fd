"""nanolib.device: the device a preset asks for, memory checks, and cost at an assumed MFU."""

from __future__ import annotations

from dataclasses import replace

import pytest
import torch

from nanolib import device


def test_pick_device():
    assert device.pick_device("cpu") == "cpu"
    assert device.pick_device("auto") == ("cuda" if torch.cuda.is_available() else "cpu")
    if not torch.cuda.is_available():
        with pytest.raises(RuntimeError, match="needs a CUDA GPU"):
            device.pick_device("cuda")


def test_gpu_cost_is_flops_over_the_achieved_rate():
    assumed = device.assumed_cost("cuda")  # book.yml's cost block
    assert assumed.peak_flops == device.peak_flops(assumed.name)  # the datasheet, not a guess
    assert assumed.flops_per_s == pytest.approx(assumed.peak_flops * assumed.mfu)
    h100 = replace(assumed, flops_per_s=989e12 * 0.5, dollars_per_hour=2.0)
    cost = device.gpu_cost(8 * 989e12 * 0.5 * 3600, gpus=8, cost=h100)
    assert cost["hours"] == pytest.approx(1.0)
    assert cost["gpu_hours"] == pytest.approx(8.0) and cost["dollars"] == pytest.approx(16.0)
    default = device.gpu_cost(assumed.flops_per_s * 3600)
    assert default["hours"] == pytest.approx(1.0)
    assert default["dollars"] == pytest.approx(assumed.dollars_per_hour)


def test_check_memory_names_a_batch_that_fits(monkeypatch):
    monkeypatch.setattr(device, "available_memory", lambda d: 1000)
    need = lambda rows: 100 * rows  # noqa: E731
    assert device.check_memory(need, 8, "cpu") == 800
    with pytest.raises(device.InsufficientMemoryError, match="set device_batch_size to 8"):
        device.check_memory(need, 32, "cpu", what="a test model")
    with pytest.raises(device.InsufficientMemoryError, match="even device_batch_size=1"):
        device.check_memory(lambda rows: 10_000, 4, "cpu")


def test_training_bf16_follows_the_cpu_flags(monkeypatch):
    """Training autocasts to bf16 on CUDA and on native-bf16 CPUs, never on other CPUs."""
    from nanolib import device

    monkeypatch.setattr(device, "cpu_has_native_bf16", lambda: False)
    assert device.training_bf16("cpu") is False
    assert device.training_bf16("cuda") is True
    monkeypatch.setattr(device, "cpu_has_native_bf16", lambda: True)
    assert device.training_bf16("cpu") is True
    assert device.training_bf16("meta") is False
