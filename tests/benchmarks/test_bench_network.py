"""Tests of benchmarks/bench_network.py: its matmul probe and one table row (no timing asserts); its FLOP count is
benchmarks/flops.py's (tests/benchmarks/test_flops.py)."""

from __future__ import annotations

import sys

import pytest

from benchmarks import bench_network


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
