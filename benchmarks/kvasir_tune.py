"""Kvasir-SEG recipe search: the same short-run tuning budget for every model, on val/ only.

Each model gets the same grid, run with ``python -m benchmarks.kvasir`` at ``--budget-minutes`` of process CPU time:

- stage 1: learning rate 1e-4, 3e-4 and 1e-3 with the harness's warm-up (5 % of the budget);
- stage 2: the model's best stage-1 learning rate (best val Dice) with a longer warm-up (20 % of the budget).

The recipe a model keeps for its long runs is its best of the four. Several workers share one plan (run this
command once per worker, each with 1 torch thread): a worker claims the next job whose inputs are ready by
creating its folder (atomic), so two workers never run the same job and a stopped worker's finished jobs are
kept::

    python -m benchmarks.kvasir_tune --out /work/runs/kvasir_tuning --budget-minutes 12 &
    python -m benchmarks.kvasir_tune --out /work/runs/kvasir_tuning --budget-minutes 12 &
    python -m benchmarks.kvasir_tune --out /work/runs/kvasir_tuning --report   # the table, any time

A job's folder holds ``<model>/log.json`` (the harness's log), ``job.json`` and ``stdout.log``; ``done`` marks a
finished job. A failed job stops its worker and keeps its folder (delete the folder to run the job again).

The long runs use each model's recipe from a finished search: ``--final`` runs every model of ``--models`` at its
best tuned learning rate and warm-up for ``--budget-minutes`` into ``OUT/<model>__<budget>min`` (workers share the
jobs the same way and wait for a model's search to finish; a job is run with the harness's ``--resume``, so after an interruption the same command, with
the interrupted job's folder deleted from ``OUT/claims``, continues it instead of starting again)::

    python -m benchmarks.kvasir_tune --out /work/runs/kvasir_final --final /work/runs/kvasir_tuning \
        --models unet,segformer_b0,swin_unetr --budget-minutes 60 &
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from pathlib import Path

from . import child_env, module_command

HERE = Path(__file__).resolve().parent
MODELS = ("patcher_small", "patcher_small_s4_gate0", "unet", "segformer_b0", "swin_unetr")
LRS = (1e-4, 3e-4, 1e-3)
BASE_WARMUP = 0.05
LONG_WARMUP = 0.2


def job_name(model: str, lr: float, warmup: float) -> str:
    return f"{model}__lr{lr:g}__wu{warmup:g}"


def best_of(out: Path, model: str, names: list[str]) -> tuple[str, float] | None:
    """The best finished job among ``names`` by val Dice (full resolution), or None if one is not finished."""
    best = None
    for n in names:
        d = out / n
        if not (d / "done").exists():
            return None
        log = json.loads((d / model / "log.json").read_text())
        dice = log.get("best", {}).get("dice_full", float("nan"))
        if best is None or dice > best[1]:
            best = (n, dice)
    return best


def plan(out: Path) -> list[dict]:
    """Jobs in order; a stage-2 job has a learning rate only once its model's stage 1 is finished."""
    jobs = []
    for lr in LRS:  # stage 1, interleaved over models so that two workers share the load evenly
        for m in MODELS:
            jobs.append({"model": m, "lr": lr, "warmup": BASE_WARMUP, "name": job_name(m, lr, BASE_WARMUP)})
    for m in MODELS:
        stage1 = [job_name(m, lr, BASE_WARMUP) for lr in LRS]
        best = best_of(out, m, stage1)
        lr = float(best[0].split("__lr")[1].split("__")[0]) if best else None
        jobs.append({"model": m, "lr": lr, "warmup": LONG_WARMUP, "name": job_name(m, lr, LONG_WARMUP) if best else None,
                     "after": stage1})
    return jobs


def claim(out: Path) -> dict | None | str:
    """Claim the next ready job (its folder created atomically); "wait" if only unready jobs remain."""
    waiting = False
    for job in plan(out):
        if job["name"] is None:
            waiting = True
            continue
        try:
            (out / job["name"]).mkdir(parents=True)
        except FileExistsError:
            continue
        return job
    return "wait" if waiting else None


def recipe(tuning: Path, model: str) -> dict | None:
    """The model's best finished search job (val Dice): ``{"lr", "warmup", "from", "dice_full"}``; None while its
    search (the three stage-1 jobs and the stage-2 job) is not finished."""
    names = [p.name for p in tuning.iterdir() if p.name.startswith(f"{model}__lr")]
    if len(names) < len(LRS) + 1 or not all((tuning / n / "done").exists() for n in names):
        return None
    name, dice = best_of(tuning, model, names)
    job = json.loads((tuning / name / "job.json").read_text())
    return {"lr": job["lr"], "warmup": job["warmup"], "from": name, "dice_full": dice}


def claim_final(args) -> dict | None | str:
    """Claim the next long run of ``--models`` whose search is finished (a claim folder in ``OUT/claims``, created
    atomically); "wait" if only runs whose search is still going remain."""
    waiting = False
    for m in args.models.split(","):
        name = f"{m}__{args.budget_minutes:g}min"
        if (args.out / "claims" / name).exists():
            continue
        rec = recipe(args.final, m)
        if rec is None:  # checked before claiming, so an unfinished search leaves no claim behind
            waiting = True
            continue
        try:
            (args.out / "claims" / name).mkdir(parents=True)
        except FileExistsError:
            continue
        return {"model": m, "name": name, **rec}
    return "wait" if waiting else None


def run_job(job: dict, args) -> int:
    d = args.out / job["name"]
    d.mkdir(parents=True, exist_ok=True)
    cmd = module_command("kvasir", "--models", job["model"], "--lr", str(job["lr"]), "--warmup", str(job["warmup"]),
                         "--budget-minutes", str(args.budget_minutes), "--evals", str(args.evals), "--threads", "1",
                         "--out", str(d), "--data", str(args.data), "--cache-dir", str(args.cache.resolve()),
                         "--precision", args.precision, "--resume")
    (d / "job.json").write_text(json.dumps({**job, "command": " ".join(cmd), "pid": os.getpid()}, indent=1))
    print(f"[{time.strftime('%H:%M:%S')}] start {job['name']}", flush=True)
    with open(d / "stdout.log", "w") as f:
        rc = subprocess.call(cmd, stdout=f, stderr=subprocess.STDOUT, env=child_env())
    if rc == 0:
        (d / "done").write_text("")
    print(f"[{time.strftime('%H:%M:%S')}] end {job['name']} rc {rc}", flush=True)
    return rc


def report(out: Path) -> str:
    rows = ["| model | lr | warm-up | val Dice (full) | best step | steps | state |", "|---|---|---|---|---|---|---|"]
    for d in sorted(p for p in out.iterdir() if p.is_dir() and "__" in p.name):
        job = json.loads((d / "job.json").read_text()) if (d / "job.json").exists() else {}
        log_path = d / job.get("model", "?") / "log.json"
        log = json.loads(log_path.read_text()) if log_path.exists() else {}
        best = log.get("best", {})
        state = "done" if (d / "done").exists() else "running"
        rows.append(f"| {job.get('model')} | {job.get('lr'):g} | {job.get('warmup'):g} | "
                    f"{100 * best.get('dice_full', float('nan')):.2f} | {best.get('step')} | {log.get('steps')} | {state} |")
    return "\n".join(rows)


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--out", type=Path, required=True)
    p.add_argument("--budget-minutes", type=float, default=12.0)
    p.add_argument("--evals", type=int, default=4)
    p.add_argument("--cache", type=Path, default=HERE / "results" / "kvasir" / "cache",
                   help="decoded-data cache shared by the jobs (made by the first job)")
    p.add_argument("--data", type=Path, default=HERE.parent.parent / "shared" / "data" / "Kvasir-SEG")
    p.add_argument("--report", action="store_true")
    p.add_argument("--final", type=Path, default=None, help="a finished search folder: run the long runs")
    p.add_argument("--models", default=",".join(MODELS), help="--final: the models, in order")
    p.add_argument("--precision", default="fp32", choices=("fp32", "bf16"))
    args = p.parse_args(argv)
    args.out.mkdir(parents=True, exist_ok=True)
    if args.report:
        print(report(args.out))
        return 0
    while True:
        job = claim_final(args) if args.final else claim(args.out)
        if job is None:
            return 0
        if job == "wait":
            time.sleep(30)
            continue
        rc = run_job(job, args)
        if rc != 0:  # stop this worker; the failed job's folder stays for inspection (delete it to rerun)
            return rc


if __name__ == "__main__":
    sys.exit(main())
