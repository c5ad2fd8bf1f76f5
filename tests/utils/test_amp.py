"""Tests of monai_patcher/utils/amp.py."""

from __future__ import annotations

import logging

import pytest
import torch

from monai_patcher.utils import amp


@pytest.mark.parametrize(
    "flags,expected",
    [({"fpu", "avx512f", "avx512_bf16", "amx_bf16"}, "amx_bf16"), ({"avx2", "avx512_bf16"}, "avx512_bf16"),
     ({"avx2", "fma"}, None)],
)  # fmt: skip
def test_cpu_bf16_support_reads_the_cpu_flags(monkeypatch, flags, expected):
    monkeypatch.setattr(amp, "_cpuinfo_flags", lambda: set(flags))
    assert amp.cpu_bf16_support() == expected


def test_cpu_bf16_support_without_cpuinfo_asks_pytorch(monkeypatch):
    monkeypatch.setattr(amp, "_cpuinfo_flags", set)
    monkeypatch.setattr(torch.cpu, "_is_amx_tile_supported", lambda: False, raising=False)
    monkeypatch.setattr(torch.cpu, "_is_avx512_bf16_supported", lambda: True, raising=False)
    assert amp.cpu_bf16_support() == "avx512_bf16"
    monkeypatch.setattr(torch.cpu, "_is_avx512_bf16_supported", lambda: False, raising=False)
    assert amp.cpu_bf16_support() is None


def test_cpuinfo_flags_of_this_machine_are_a_set():
    flags = amp._cpuinfo_flags()
    assert isinstance(flags, set)
    if flags:  # Linux
        assert all(" " not in f and f for f in flags)


def test_default_amp_per_device_and_logged_once(monkeypatch, caplog):
    monkeypatch.setattr(amp, "_logged", set())
    assert amp.default_amp("cuda") is True
    assert amp.default_amp("meta") is False
    monkeypatch.setattr(amp, "cpu_bf16_support", lambda: "amx_bf16")
    with caplog.at_level(logging.INFO, logger="monai_patcher.utils.amp"):
        assert amp.default_amp(torch.device("cpu")) is True
        assert amp.default_amp("cpu") is True
    assert [r.getMessage() for r in caplog.records].count(
        "AMP on CPU: bfloat16 autocast (native bf16 matrix support: amx_bf16)."
    ) == 1
    monkeypatch.setattr(amp, "_logged", set())
    monkeypatch.setattr(amp, "cpu_bf16_support", lambda: None)
    caplog.clear()
    with caplog.at_level(logging.INFO, logger="monai_patcher.utils.amp"):
        assert amp.default_amp("cpu") is False
    assert "no native bf16" in caplog.text


def test_autocast_uses_the_devices_amp_dtype():
    assert amp.amp_dtype("cpu") == torch.bfloat16 and amp.amp_dtype("cuda:0") == torch.float16
    a, b = torch.randn(4, 4), torch.randn(4, 4)
    with amp.autocast("cpu"):
        assert torch.mm(a, b).dtype == torch.bfloat16
    with amp.autocast("cpu", enabled=False):
        assert torch.mm(a, b).dtype == torch.float32
