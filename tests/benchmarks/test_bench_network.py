"""Tests of benchmarks/bench_network.py: its FLOP count, its matmul probe and one table row (no timing asserts)."""

from __future__ import annotations

import sys

import pytest
import torch

from monai_patcher.networks import EfficientSelfAttention

from benchmarks import bench_network


class _Attn(torch.nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.attn = EfficientSelfAttention(64, num_heads=2, sr_ratio=2)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.attn(x, 12, 12)


def test_count_flops_adds_the_attention_matmuls_torch_misses_on_cpu():
    b, n, d, heads, r = 3, 144, 64, 2, 2
    nk = n // r**2
    linears = 2 * b * n * d * d * 2 + 2 * b * nk * d * 2 * d  # q and proj on all tokens; kv on the reduced grid
    sr_conv = 2 * b * nk * d * d * r * r
    attention = 2 * (2 * b * heads * n * nk * (d // heads))  # scores and weighted sum
    total, attn = bench_network.count_flops(_Attn().eval(), torch.randn(b, n, d))
    assert attn == attention
    assert total == linears + sr_conv + attention


def test_as_defined_counts_the_work_the_forward_skips():
    """Small preset at 64 x 64: with the decoder on its plain path the count grows by exactly the three upsampled
    experts' full-resolution 3x3 convolutions minus the products of the gate's CPU kernel (its taps and its
    horizontal and vertical interpolation matrices, less than half of the convolution); ``as_defined`` also drops the centre-only last blocks (more
    again), and restores every part's setting afterwards. A model that is not a Patcher is counted as it is."""
    from torch.utils.flop_counter import FlopCounterMode

    from monai_patcher.networks import patcher_preset
    from monai_patcher.networks.cpu_kernels import add_upsampled_conv3x3_

    net = patcher_preset("small", in_channels=2, out_channels=1).eval()
    x = torch.randn(1, 2, 64, 64)
    executed, _ = bench_network.count_flops(net, x)
    net.decoder.fast_paths = False
    full_res_gate, _ = bench_network.count_flops(net, x)
    net.decoder.fast_paths = True
    c, out, h0 = 128, 128, 32  # decoder_dim, gate_channels[0], the gate's resolution (64 / 2)
    saved = 0
    for s in (2, 4, 8):  # each upsampled expert: its full-resolution convolution minus the kernel's products
        with FlopCounterMode(display=False) as kernel:
            add_upsampled_conv3x3_(torch.zeros(1, out, h0, h0), torch.zeros(1, c, h0 // s, h0 // s),
                                   torch.zeros(out, c, 3, 3), s)  # fmt: skip
        assert 0 < kernel.get_total_flops() < 2 * 9 * c * out * h0 * h0 / 2
        saved += 2 * 9 * c * out * h0 * h0 - kernel.get_total_flops()
    assert full_res_gate - executed == saved
    with bench_network.as_defined(net):
        defined, _ = bench_network.count_flops(net, x)
        assert not any(getattr(m, "fast_paths", False) for m in net.modules())
    assert defined > full_res_gate
    assert all(m.fast_paths for m in net.modules() if hasattr(m, "fast_paths"))
    assert bench_network.count_flops(net, x)[0] == executed
    wrapped = torch.nn.Sequential(net)  # a Patcher inside another module (benchmarks/models.py wraps them)
    with bench_network.as_defined(wrapped):
        assert bench_network.count_flops(wrapped, x)[0] == defined
    unet = bench_network.build_model("unet")
    plain = bench_network.count_flops(unet, x)
    with bench_network.as_defined(unet):
        assert bench_network.count_flops(unet, x) == plain


def test_matmul_probe_records_every_sample():
    probe = bench_network.MatmulProbe(n=128)
    rates = [probe.sample() for _ in range(3)]
    assert probe.samples == rates and all(r > 0 for r in rates)
    assert probe.median() == sorted(rates)[1]


def test_measure_row_is_consistent():
    row = bench_network.measure("tiny", size=64, in_channels=2, repeats=3, time_budget=1.0)
    assert row["repeats"] == 3 and row["params_m"] > 0
    assert 0 < row["gflop_attention"] < row["gflop"]
    assert abs(row["ratio"] - row["gflops"] / row["matmul_gflops"]) < 1e-9
    assert row["ratio_without_attention"] < row["ratio"]
    # the architecture as defined does at least the work executed (the tiny preset skips some in its last blocks)
    assert row["gflop_defined_without_attention"] > row["gflop"] - row["gflop_attention"]
    assert abs(row["ratio_defined_without_attention"] - row["gflop_defined_without_attention"] / row["time_s"]
               / row["matmul_gflops"]) < 1e-9  # fmt: skip
    table = bench_network.format_table([row, {"model": "broken", "error": "boom"}], 64, 2)
    lines = table.splitlines()
    assert len({ln.count("|") for ln in lines}) == 1  # every row has the header's columns
    assert "error: boom" in lines[-1]


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="glibc malloc setting (Linux)")
def test_keep_freed_memory_runs_the_child_with_the_allocator_setting(capsys):
    bench_network.main(["--presets", "tiny", "--models", "--size", "64", "--repeats", "2", "--keep-freed-memory"])
    out = capsys.readouterr().out
    assert "glibc malloc keeping freed memory" in out
    row = next(ln for ln in out.splitlines() if ln.startswith("| tiny"))
    assert "error" not in row
