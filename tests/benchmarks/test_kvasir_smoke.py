"""Smoke tests of the benchmark scripts on a few real Kvasir-SEG images (skipped without the data).

They keep benchmarks/kvasir.py, benchmarks/figures.py and benchmarks/bench_train_step.py from rotting: one short
training run, the eval-only path on a saved checkpoint, the Dice-vs-time figure and one child-process step.
"""

from __future__ import annotations

import json

import pytest
import torch

from benchmarks import kvasir


def test_augment_and_metrics():
    gen = torch.Generator().manual_seed(0)
    img = torch.randint(0, 256, (3, 3, 40, 40), dtype=torch.uint8)
    msk = (torch.rand(3, 1, 40, 40) > 0.5).to(torch.uint8)
    x, y = kvasir.augment_batch(img, msk, 32, (0.5, 1.5), gen)
    assert x.shape == (3, 3, 32, 32) and y.shape == (3, 1, 32, 32)
    assert set(y.unique().tolist()) <= {0.0, 1.0}
    a = torch.zeros(4, 4, dtype=torch.bool)
    b = a.clone()
    a[:2] = True
    b[1:3] = True
    assert kvasir.dice_iou(a, b) == pytest.approx((0.5, 1 / 3))
    assert kvasir.dice_iou(a & False, b & False) == (1.0, 1.0)
    assert kvasir.lr_at(0.0, 1.0, 0.1) < 1e-3 and kvasir.lr_at(0.1, 1.0, 0.1) == pytest.approx(0.9**0.9)
    assert kvasir.lr_at(1.0, 1.0, 0.1) == 0.0


def test_train_eval_only_and_figure(mini_kvasir, tmp_path, capsys):
    data = mini_kvasir
    out = tmp_path / "out"
    args = ["--data", str(data), "--models", "patcher_tiny", "--budget-minutes", "0.01", "--input-size", "64",
            "--base-size", "80", "--batch-size", "2", "--evals", "1", "--out", str(out), "--no-cache"]
    assert kvasir.main(args) == 0
    log = json.loads((out / "patcher_tiny" / "log.json").read_text())
    assert log["steps"] >= 1 and log["history"] and 0 <= log["best"]["dice_full"] <= 1
    summary = json.loads((out / "summary.json").read_text())
    assert summary[0]["model"] == "patcher_tiny"
    capsys.readouterr()
    assert kvasir.main(["--eval-only", "--checkpoint", str(out / "patcher_tiny" / "best.pt"),
                        "--images", str(data / "val" / "images"), "--masks", str(data / "val" / "masks")]) == 0
    res = json.loads(capsys.readouterr().out)
    assert res["images"] == 4 and 0 <= res["dice_full"] <= 1 and 0 <= res["iou_full"] <= res["dice_full"] + 1e-9

    from benchmarks import figures

    figures.dice_vs_time(out, tmp_path / "dice.png")
    assert (tmp_path / "dice.png").stat().st_size > 1000


def test_train_step_child(tmp_path):
    from benchmarks import bench_train_step

    assert bench_train_step.main(["--models", "patcher_tiny", "--batch-size", "1", "--size", "32", "--warmup", "0",
                                  "--rounds", "1", "--eval-forward", "--fresh", "--out", str(tmp_path)]) == 0
    summary = json.loads((tmp_path / "summary.json").read_text())
    train, evaluation = summary["rows"]
    assert (train["kind"], evaluation["kind"]) == ("train", "eval")
    assert train["gflop_per_step"] == pytest.approx(3 * evaluation["gflop_per_step"]) and train["gflop_per_step"] > 0
    assert train["cpu_s_per_step"] > 0 and 0 < train["ratio_cpu"] and train["matmul_gflops_cpu"] > 0
    fresh = summary["fresh"][0]
    assert "error" not in fresh, fresh
    assert fresh["cpu_s_per_step"] > 0 and fresh["peak_rss_mib"] >= fresh["rss_after_build_mib"]
