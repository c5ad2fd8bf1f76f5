"""Tests of benchmarks/gpu_check.sh and benchmarks/gpu_check.py where there is no GPU (the CPU CI)."""

from __future__ import annotations

import subprocess
from pathlib import Path

import pytest
import torch

from benchmarks import ROOT, child_env


@pytest.mark.skipif(torch.cuda.is_available(), reason="this machine has a GPU: run benchmarks/gpu_check.sh itself")
def test_gpu_check_without_a_gpu_says_so_and_exits_0(tmp_path):
    script = Path(ROOT) / "benchmarks" / "gpu_check.sh"
    proc = subprocess.run(["bash", str(script), "--models", "unet"], cwd=tmp_path, capture_output=True, text=True,
                          env=child_env(CUDA_VISIBLE_DEVICES=""), timeout=300)  # fmt: skip
    assert proc.returncode == 0, proc.stderr
    assert "no CUDA GPU available" in proc.stdout and "| model |" not in proc.stdout


def test_gpu_check_rejects_unknown_options():
    from benchmarks import gpu_check

    with pytest.raises(SystemExit) as err:
        gpu_check.main(["--no-such-option"])
    assert err.value.code == 2
