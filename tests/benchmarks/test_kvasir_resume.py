"""benchmarks/kvasir.py: resuming an interrupted run, the forward precision and the shared data cache.

Runs use the smoke settings (``patcher_tiny``, 64 x 64, batch 2) on 4 real Kvasir-SEG images with a budget in
steps (``--budget-steps``), so that the schedule, unlike a CPU-time one, is the same in every run.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from benchmarks import kvasir

TIMING = ("train_cpu_s", "train_wall_s", "eval_cpu_s_total")


class _Killed(Exception):
    """Stands for the process being killed: raised out of the training loop, nothing saved on the way out."""


def _run(data: Path, out: Path, *extra: str) -> int:
    return kvasir.main(["--data", str(data), "--smoke", "--models", "patcher_tiny", "--budget-steps", "8",
                        "--out", str(out), *extra])


def _without_timing(history: list[dict]) -> list[dict]:
    return [{k: v for k, v in rec.items() if k not in TIMING} for rec in history]


def _assert_same_tensors(a: dict, b: dict) -> None:
    assert a.keys() == b.keys()
    for k in a:
        assert torch.equal(a[k], b[k]), k


@pytest.mark.parametrize(("save_every", "resumed_at"), [("0", 4), ("1e-9", 6)])
def test_interrupted_and_resumed_run_equals_an_uninterrupted_one(mini_kvasir, tmp_path, monkeypatch, capsys,
                                                                 save_every, resumed_at):
    """8 steps, evaluations after steps 4 and 8; the run is killed while fetching the batch of step 7. With state
    saved at evaluations only it resumes from step 4, with a save after every step (a tiny ``--save-every-minutes``)
    from step 6; either way its weights, optimiser state, best checkpoint and history equal the uninterrupted run's."""
    whole, cut = tmp_path / "whole", tmp_path / "cut"
    assert _run(mini_kvasir, whole, "--save-every-minutes", save_every) == 0

    calls, augment = [0], kvasir.augment_batch

    def dies_at_the_7th_batch(*args, **kwargs):
        calls[0] += 1
        if calls[0] == 7:
            raise _Killed
        return augment(*args, **kwargs)

    monkeypatch.setattr(kvasir, "augment_batch", dies_at_the_7th_batch)
    with pytest.raises(_Killed):
        _run(mini_kvasir, cut, "--save-every-minutes", save_every)
    monkeypatch.setattr(kvasir, "augment_batch", augment)
    state = torch.load(cut / "patcher_tiny" / kvasir.RESUME_FILE, weights_only=True)
    assert not state["finished"] and state["loop"]["progress"]["step"] == resumed_at

    with pytest.raises(SystemExit, match="unfinished run of patcher_tiny.*--resume"):
        _run(mini_kvasir, cut)  # the interrupted run's state is never overwritten by a fresh start
    with pytest.raises(SystemExit, match="'lr': \\(0.0001, 0.001\\)"):
        _run(mini_kvasir, cut, "--resume", "--lr", "1e-3")  # nor continued with another recipe
    capsys.readouterr()
    assert _run(mini_kvasir, cut, "--resume", "--save-every-minutes", save_every) == 0
    assert f"resuming from step {resumed_at}" in capsys.readouterr().out

    a = torch.load(whole / "patcher_tiny" / kvasir.RESUME_FILE, weights_only=True)
    b = torch.load(cut / "patcher_tiny" / kvasir.RESUME_FILE, weights_only=True)
    assert a["finished"] and b["finished"] and a["loop"]["progress"]["step"] == b["loop"]["progress"]["step"] == 8
    _assert_same_tensors(a["model"], b["model"])  # the final weights (BatchNorm statistics included)
    for sa, sb in zip(a["loop"]["optimizer"]["state"].values(), b["loop"]["optimizer"]["state"].values()):
        _assert_same_tensors(sa, sb)
    best_a, best_b = (torch.load(d / "patcher_tiny" / "best.pt", weights_only=True) for d in (whole, cut))
    assert best_a["step"] == best_b["step"]
    _assert_same_tensors(best_a["state_dict"], best_b["state_dict"])
    log_a, log_b = (json.loads((d / "patcher_tiny" / "log.json").read_text()) for d in (whole, cut))
    assert [r["step"] for r in log_a["history"]] == [4, 8]
    assert _without_timing(log_a["history"]) == _without_timing(log_b["history"])  # losses, lr, Dice, IoU
    assert log_b["steps"] == 8 and log_b["resumed"][0]["step"] == resumed_at and "resumed" not in log_a
    assert log_b["train_cpu_s"] > state["loop"]["progress"]["train_cpu_s"]  # CPU time before the stop counted

    capsys.readouterr()  # a finished run is left as it is
    assert _run(mini_kvasir, cut, "--resume") == 0
    assert "finished already" in capsys.readouterr().out


def test_bf16_precision_is_recorded_and_used_by_eval_only(mini_kvasir, tmp_path, capsys):
    out = tmp_path / "out"
    assert _run(mini_kvasir, out, "--precision", "bf16", "--budget-steps", "2") == 0
    log = json.loads((out / "patcher_tiny" / "log.json").read_text())
    assert log["config"]["precision"] == "bf16" and log["steps"] == 2
    ckpt = torch.load(out / "patcher_tiny" / "best.pt", weights_only=True)
    assert (ckpt["model"], ckpt["input_size"], ckpt["precision"]) == ("patcher_tiny", 64, "bf16")
    capsys.readouterr()
    assert kvasir.main(["--eval-only", "--checkpoint", str(out / "patcher_tiny" / "best.pt"), "--images",
                        str(mini_kvasir / "val" / "images"), "--masks", str(mini_kvasir / "val" / "masks")]) == 0
    res = json.loads(capsys.readouterr().out)
    assert res["precision"] == "bf16" and res["input_size"] == 64
    assert res["dice_full"] == round(log["best"]["dice_full"], 4)  # the training run's own evaluation

    model = kvasir.build_model("patcher_tiny")
    images = torch.randint(0, 256, (2, 3, 64, 64), dtype=torch.uint8)
    fp32, bf16 = (kvasir.predict_logits(model, images, precision=p) for p in ("fp32", "bf16"))
    assert bf16.dtype == torch.float32 and not torch.equal(fp32, bf16)
    assert torch.allclose(fp32, bf16, atol=0.1 * float(fp32.abs().max()))
    with pytest.raises(ValueError, match="precision"):
        kvasir.autocast("fp16")


def test_cache_dir_is_shared_and_never_holds_a_cut_down_split(mini_kvasir, tmp_path):
    cache, out = tmp_path / "cache", tmp_path / "out"
    common = ["--data", str(mini_kvasir), "--models", "patcher_tiny", "--budget-steps", "1", "--evals", "1",
              "--input-size", "64", "--base-size", "80", "--batch-size", "2", "--cache-dir", str(cache)]
    assert kvasir.main([*common, "--limit-train", "2", "--out", str(out / "a")]) == 0
    assert [p.name for p in cache.iterdir()] == ["val_64.pt"]  # the cut-down train split is not cached
    assert kvasir.main([*common, "--out", str(out / "b")]) == 0
    assert sorted(p.name for p in cache.iterdir()) == ["train_80.pt", "val_64.pt"]
    assert not (out / "b" / "cache").exists()
    assert kvasir.main([*common, "--limit-train", "2", "--out", str(out / "c")]) == 0  # the whole split, cut
    logs = [json.loads((out / d / "patcher_tiny" / "log.json").read_text()) for d in "ac"]
    assert _without_timing(logs[0]["history"]) == _without_timing(logs[1]["history"])
