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


def test_default_amp_on_cuda_opt_in_on_cpu_advice_logged_once(monkeypatch, caplog):
    monkeypatch.setattr(amp, "_logged", set())
    assert amp.default_amp("cuda") is True
    assert amp.default_amp("meta") is False
    monkeypatch.setattr(amp, "cpu_bf16_support", lambda: "amx_bf16")
    with caplog.at_level(logging.INFO, logger="monai_patcher.utils.amp"):
        assert amp.default_amp(torch.device("cpu")) is False  # opt-in on CPU, even where bf16 is native
        assert amp.default_amp("cpu") is False
    assert [r.getMessage() for r in caplog.records].count(
        "AMP on CPU is opt-in (amp=True): bf16 autocast, native bf16 matrix support: amx_bf16."
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


class _Recorder(torch.nn.Module):
    """A linear layer that records the dtype its matrix product ran in and returns a tuple and a dict too."""

    def __init__(self) -> None:
        super().__init__()
        self.lin = torch.nn.Linear(4, 3)
        self.dtypes: list[torch.dtype] = []

    def forward(self, x: torch.Tensor) -> dict:
        y = self.lin(x)
        self.dtypes.append(y.dtype)
        return {"logits": y, "pair": (y, x.long())}


def test_autocast_inferer_runs_bf16_on_cpu_and_returns_float32(monkeypatch):
    from monai.inferers import SimpleInferer

    monkeypatch.setattr(amp, "cpu_bf16_support", lambda: "amx_bf16")
    net, x = _Recorder(), torch.randn(2, 4)
    out = amp.AutocastInferer(SimpleInferer())(x, net)
    assert net.dtypes == [torch.bfloat16]  # the product ran in bf16 ...
    assert out["logits"].dtype == torch.float32 and out["pair"][0].dtype == torch.float32  # ... the outputs are fp32
    assert out["pair"][1].dtype == torch.int64  # integer outputs untouched
    reference = net.lin(x)
    assert (out["logits"] - reference).abs().max() < 0.05 and not torch.equal(out["logits"], reference)
    off = amp.AutocastInferer(SimpleInferer(), enabled=False)(x, net)
    assert net.dtypes[-1] == torch.float32 and torch.equal(off["logits"], reference)


def test_autocast_inferer_warns_once_without_native_bf16(monkeypatch, caplog):
    from monai.inferers import SimpleInferer

    monkeypatch.setattr(amp, "_logged", set())
    monkeypatch.setattr(amp, "cpu_bf16_support", lambda: None)
    with caplog.at_level(logging.WARNING, logger="monai_patcher.utils.amp"):
        amp.AutocastInferer(SimpleInferer())
        amp.AutocastInferer(SimpleInferer())
        amp.AutocastInferer(SimpleInferer(), enabled=False)
    assert caplog.text.count("bf16 is emulated") == 1
    with pytest.raises(ValueError, match="MONAI Inferer"):
        amp.AutocastInferer("simple")
