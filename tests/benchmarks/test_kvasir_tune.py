"""The Kvasir recipe search's job bookkeeping: recipe choice and claims of the long runs (no training)."""

import json
from argparse import Namespace

from benchmarks import kvasir_tune


def _search_job(tuning, model, lr, warmup, dice, done=True):
    d = tuning / kvasir_tune.job_name(model, lr, warmup)
    (d / model).mkdir(parents=True)
    (d / "job.json").write_text(json.dumps({"model": model, "lr": lr, "warmup": warmup}))
    (d / model / "log.json").write_text(json.dumps({"best": {"dice_full": dice}}))
    if done:
        (d / "done").write_text("")


def _args(tmp_path, models):
    return Namespace(models=models, budget_minutes=60.0, out=tmp_path / "final", final=tmp_path / "tuning")


def test_recipe_is_the_best_finished_job_and_waits_for_an_unfinished_search(tmp_path):
    tuning = tmp_path / "tuning"
    for lr, dice in zip(kvasir_tune.LRS, (0.40, 0.52, 0.47)):
        _search_job(tuning, "unet", lr, kvasir_tune.BASE_WARMUP, dice)
    assert kvasir_tune.recipe(tuning, "unet") is None  # stage 2 not started
    _search_job(tuning, "unet", 3e-4, kvasir_tune.LONG_WARMUP, 0.50, done=False)
    assert kvasir_tune.recipe(tuning, "unet") is None  # stage 2 running
    (tuning / kvasir_tune.job_name("unet", 3e-4, kvasir_tune.LONG_WARMUP) / "done").write_text("")
    assert kvasir_tune.recipe(tuning, "unet") == {"lr": 3e-4, "warmup": kvasir_tune.BASE_WARMUP,
                                                  "from": "unet__lr0.0003__wu0.05", "dice_full": 0.52}


def test_long_runs_are_claimed_once_and_an_unfinished_search_leaves_no_claim(tmp_path):
    tuning = tmp_path / "tuning"
    for lr in kvasir_tune.LRS:
        _search_job(tuning, "unet", lr, kvasir_tune.BASE_WARMUP, lr)
        _search_job(tuning, "segformer_b0", lr, kvasir_tune.BASE_WARMUP, lr)
    _search_job(tuning, "unet", 1e-3, kvasir_tune.LONG_WARMUP, 0.9)
    args = _args(tmp_path, "segformer_b0,unet")
    job = kvasir_tune.claim_final(args)
    assert (job["name"], job["lr"], job["warmup"]) == ("unet__60min", 1e-3, kvasir_tune.LONG_WARMUP)
    assert sorted(p.name for p in (args.out / "claims").iterdir()) == ["unet__60min"]
    assert kvasir_tune.claim_final(args) == "wait"  # segformer's stage 2 is missing
    _search_job(tuning, "segformer_b0", 1e-3, kvasir_tune.LONG_WARMUP, 0.1)
    assert kvasir_tune.claim_final(args)["name"] == "segformer_b0__60min"
    assert kvasir_tune.claim_final(args) is None
