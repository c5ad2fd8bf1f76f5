"""Tests of benchmarks/bench_network.py: its FLOP count, its matmul probe and one table row (no timing asserts)."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest
import torch

BENCH = Path(__file__).resolve().parents[2] / "benchmarks"
sys.path.insert(0, str(BENCH))

import bench_network  # noqa: E402

from monai_patcher.networks import EfficientSelfAttention  # noqa: E402


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
