#!/usr/bin/env bash
# The runs behind docs/results.md, in the order they ran: two single-thread workers side by side on the 2-core
# machine (each process uses 1 torch thread, so its CPU time is its compute time).
# Then the BraTS bundle run on its own with 2 threads.
# Usage: bash benchmarks/run_results.sh   (logs in benchmarks/results/worker_*.log; about 45 min per worker on an
# idle 2-core machine, then about 20 min for BraTS)
set -euo pipefail
cd "$(dirname "$0")/.."
R=benchmarks/results
mkdir -p "$R" docs/figures
BUDGET=${BUDGET:-10}
(
  python -m benchmarks.kvasir --models patcher_small,segformer_b0 --budget-minutes "$BUDGET" --threads 1
) > "$R/worker_a.log" 2>&1 &
(
  python -m benchmarks.kvasir --models unet,attention_unet,swin_unetr --budget-minutes "$BUDGET" --threads 1
  python -m benchmarks.bench_train_step --threads 1 --batch-size 8 \
      --models patcher_small,patcher_small_s4_gate0,unet,attention_unet,swin_unetr,segformer_b0,segformer_b5
  python -m benchmarks.bench_train_step --threads 1 --batch-size 1 --models patcher_paper --out "$R/train_step_b1"
  python -m benchmarks.kvasir --models patcher_small_s4_gate0 --budget-minutes "$BUDGET" --threads 1  # tuning
) > "$R/worker_b.log" 2>&1 &
wait
# BraTS through the stroke bundle: alone, 2 threads, the tuned CPU variant of the Kvasir tuning section, 200 steps
# (fixed from a 6-step probe of the step time, `--skip-eval`, before any validation case was looked at). About 15 min
# of training and 3 of evaluation on the shared machine. (The first BraTS run, in worker a, was
# `--preset small --iterations 20 --threads 1`: all-foreground in eval mode, see docs/results.md.)
python -m benchmarks.brats_bundle --preset small --network-override 'small_patch=[4,2,2,2]' \
    --network-override 'gate_channels=[]' --iterations 200 --threads 2 --bn-check --figure docs/figures/brats_overlays.png \
    > "$R/brats_bundle.log" 2>&1
python -m benchmarks.kvasir --summary-only
python -m benchmarks.figures --overlay-models patcher_small,patcher_small_s4_gate0,segformer_b0 --gating-model patcher_small
python -m benchmarks.tables
