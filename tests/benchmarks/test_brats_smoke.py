"""Smoke test of benchmarks/brats.py (slice-wise BraTS training without the bundle) on the real BraTS examples."""

from __future__ import annotations

import json

from benchmarks import brats


def test_brats_smoke_run_writes_log_summary_and_figure(shared_path_fn, tmp_path):
    data = shared_path_fn("BraTS2015-DeepMedic-examples")
    out, fig = tmp_path / "out", tmp_path / "overlay.png"
    brats.main(["--data", str(data), "--smoke", "--out", str(out), "--figure", str(fig)])
    summary = json.loads((out / "summary.json").read_text())
    assert summary["model"] == "patcher_tiny" and summary["steps"] >= 1
    assert set(summary["per_volume"]) == {"brats_2013_pat0003_1", "brats_2013_pat0004_1"}  # the validation cases
    assert 0.0 <= summary["volume_dice_mean"] <= 1.0 and summary["n_lesion_slices"] > 0
    log = json.loads((out / "log.json").read_text())
    assert log["history"] and log["best"]["step"] == summary["best_step"]
    assert (out / "best.pt").stat().st_size > 0 and fig.stat().st_size > 0
