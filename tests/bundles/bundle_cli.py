"""Shared helper of the bundle tests: run the real ``python -m monai.bundle`` entry point."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

REPO_ROOT = Path(__file__).resolve().parents[2]
FAST = ["--network_def#name", "tiny", "--spatial_size", "64", "--num_workers", "0"]


def run_bundle(*args: str, cwd: Path, timeout: int = 600) -> subprocess.CompletedProcess:
    """``python -m monai.bundle <args>``; fails the test with the output if the command fails."""
    env = dict(os.environ, PYTHONWARNINGS="ignore", OMP_NUM_THREADS="2")
    proc = subprocess.run(
        [sys.executable, "-m", "monai.bundle", *args], cwd=str(cwd), env=env, capture_output=True,
        encoding="utf-8", errors="replace", timeout=timeout,
    )
    if proc.returncode != 0:
        pytest.fail(f"monai.bundle {' '.join(args[:2])} failed ({proc.returncode}):\n{proc.stdout[-4000:]}\n{proc.stderr[-6000:]}")
    return proc
