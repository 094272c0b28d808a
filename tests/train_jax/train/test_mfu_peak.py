"""The peak MFU is measured against: published per-device figures on TPUs and GPUs (as MFU is
conventionally reported), a configured figure when given, a measured matmul elsewhere."""

from __future__ import annotations

import logging

import jax
import pytest

from train_jax.train import flops
from train_jax.train.flops import published_peak_flops


@pytest.mark.parametrize(("kind", "tflops"), [
    ("TPU v4", 275), ("TPU v5", 459), ("TPU v5 lite", 197), ("TPU v6 lite", 918),
    ("NVIDIA H100 80GB HBM3", 989), ("NVIDIA H100 PCIe", 756), ("NVIDIA A100-SXM4-40GB", 312),
    ("NVIDIA L40S", 362), ("NVIDIA L4", 121),
])
def test_published_peaks_by_device_kind(kind, tflops):
    assert published_peak_flops(kind) == tflops * 1e12


def test_unknown_devices_have_no_published_peak():
    assert published_peak_flops("cpu") is None
    assert published_peak_flops("Tesla T4") is None


class _Device:
    def __init__(self, kind: str):
        self.device_kind = kind


def test_a_known_accelerator_uses_its_published_peak_and_never_measures(monkeypatch, caplog):
    monkeypatch.setattr(jax, "devices", lambda *a: [_Device("TPU v5 lite")] * 4)
    monkeypatch.setattr(jax, "device_count", lambda *a: 4)
    monkeypatch.setattr(flops, "measure_matmul_peak", lambda *a, **k: pytest.fail("measured"))
    with caplog.at_level(logging.INFO, logger="train_jax.train.flops"):
        assert flops.peak_flops("float32", None) == 4 * 197e12
    assert "TPU v5 lite, published dense bf16 peak 197 TFLOP/s" in caplog.text
    assert flops.peak_flops("bfloat16", 100.0) == 4 * 100e12  # a configured figure wins


def test_the_cpu_measures_one_matmul_for_the_whole_host(monkeypatch, caplog):
    monkeypatch.setattr(flops, "measure_matmul_peak", lambda *a, **k: 3e11)
    with caplog.at_level(logging.INFO, logger="train_jax.train.flops"):
        assert flops.peak_flops("bfloat16", None) == 3e11 * jax.process_count()
    assert "measured bfloat16 matmul 0.30 TFLOP/s" in caplog.text
