"""Shared helper of the bundle tests: run the real ``python -m monai.bundle`` entry point."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

REPO_ROOT = Path(__file__).resolve().parents[2]
FAST = ["--network_def#name", "tiny", "--spatial_size", "64", "--num_workers", "0"]


def bundle_copy(bundle: str, dst: Path) -> Path:
    """``dst`` with a copy of the bundle's ``configs/``, to be its ``bundle_root`` (the bundles check that
    ``bundle_root`` holds their ``configs/metadata.json``): runs write into ``dst``, never into this repository."""
    import shutil

    shutil.copytree(REPO_ROOT / "bundles" / bundle / "configs", dst / "configs")
    return dst


def run_bundle(*args: str, cwd: Path, timeout: int = 600, check: bool = True) -> subprocess.CompletedProcess:
    """``python -m monai.bundle <args>``; fails the test with the output if the command fails (unless not ``check``)."""
    env = dict(os.environ, PYTHONWARNINGS="ignore", OMP_NUM_THREADS="2")
    proc = subprocess.run(
        [sys.executable, "-m", "monai.bundle", *args], cwd=str(cwd), env=env, capture_output=True,
        encoding="utf-8", errors="replace", timeout=timeout,
    )
    if check and proc.returncode != 0:
        pytest.fail(f"monai.bundle {' '.join(args[:2])} failed ({proc.returncode}):\n{proc.stdout[-4000:]}\n{proc.stderr[-6000:]}")
    return proc


def bundle_error(*args: str, cwd: Path, timeout: int = 600) -> str:
    """``python -m monai.bundle <args>``, which must fail; returns the last line of its output (stripped), where
    ``report_errors_plainly`` puts the clear error."""
    env = dict(os.environ, PYTHONWARNINGS="ignore", OMP_NUM_THREADS="2")
    proc = subprocess.run(
        [sys.executable, "-m", "monai.bundle", *args], cwd=str(cwd), env=env, capture_output=True,
        encoding="utf-8", errors="replace", timeout=timeout,
    )
    assert proc.returncode != 0, f"monai.bundle {' '.join(args[:2])} should have failed:\n{proc.stderr[-3000:]}"
    lines = [ln.strip() for ln in proc.stderr.splitlines() if ln.strip()]
    return lines[-1] if lines else ""


def resume_keeps_best_model(train_config: str, trained_ckpt: Path, workdir: Path, *args: str) -> str:
    """Resume a bundle from a copy of ``trained_ckpt`` (epoch 1, validated) whose stored best Dice no validation can
    beat: the best model (``model.pt``) and the best metric must survive the resumed run's epoch-2 validation.

    Shared by both bundles' tests; ``args`` are the run's other overrides (dataset, FAST, ...). Returns the log.
    """
    import hashlib
    import shutil

    import torch

    ckpt = workdir / "models"
    shutil.copytree(trained_ckpt, ckpt)
    for p in ckpt.glob("checkpoint_epoch=*.pt"):
        if p.name != "checkpoint_epoch=1.pt":
            p.unlink()
    first = ckpt / "checkpoint_epoch=1.pt"
    state = torch.load(first, map_location="cpu", weights_only=True)
    best = state["best_metric"]  # written by train.json's BestMetricState
    assert best["best_metric_epoch"] == 1 and 0.0 <= best["best_metric"] <= 1.0, best
    (saved,) = best["savers"]  # the model.pt saver's (score, file) list
    assert len(saved) == 1 and abs(saved[0][0] - best["best_metric"]) < 1e-9, saved
    # an earlier best no Dice can beat (> 1): the epoch-2 validation after resume is worse, whatever it scores
    best["best_metric"], best["savers"] = 2.0, [[(2.0, saved[0][1])]]
    torch.save(state, first)
    model_sha = hashlib.sha256((ckpt / "model.pt").read_bytes()).hexdigest()

    proc = run_bundle(
        "run", "training", "--config_file", train_config, "--max_epochs", "2", "--val_interval", "1",
        "--ckpt_dir", str(ckpt), "--output_dir", str(workdir / "eval"), "--resume", "true", *args, cwd=workdir,
    )
    log = proc.stdout + proc.stderr
    assert "Restored all variables from" in log and "checkpoint_epoch=1.pt" in log
    assert "val_mean_dice" in log, "no validation ran after resume"
    assert hashlib.sha256((ckpt / "model.pt").read_bytes()).hexdigest() == model_sha, (
        "model.pt (best so far) was overwritten by the worse first validation after resume"
    )
    assert "Got new best metric of val_mean_dice" not in log
    second = torch.load(ckpt / "checkpoint_epoch=2.pt", map_location="cpu", weights_only=True)["best_metric"]
    assert (second["best_metric"], second["best_metric_epoch"]) == (2.0, 1), second
    return log


def evaluate_in_process(config_files: list[str], overrides: dict, network=None):
    """Build ``validate#evaluator`` from ``config_files`` (``train.json`` + ``evaluate.json``) with ``overrides``
    and run it in this process; returns the evaluator and the ``pred`` / ``label`` of every item it scored.

    With ``network``, that module replaces the bundle's network and no checkpoint is loaded (no handlers).
    """
    from ignite.engine import Events
    from monai.bundle import ConfigParser

    parser = ConfigParser()
    parser.read_config(config_files)
    for k, v in overrides.items():
        parser[k] = v
    if network is not None:
        parser["network"] = network
        parser["validate#handlers"] = []
    evaluator = parser.get_parsed_content("validate#evaluator")
    items: list[dict] = []
    evaluator.add_event_handler(
        Events.ITERATION_COMPLETED, lambda e: items.extend({k: d[k] for k in ("pred", "label")} for d in e.state.output)
    )
    evaluator.run()
    return evaluator, items


def dice(p, y) -> float:
    """Dice of two boolean numpy arrays (both empty: 1)."""
    total = p.sum() + y.sum()
    return float(2 * (p & y).sum() / total) if total else 1.0
