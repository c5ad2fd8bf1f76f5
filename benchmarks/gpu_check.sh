#!/usr/bin/env bash
# The GPU check of docs/architecture.md ("The GPU path"): training step and forward of patcher_small,
# patcher_paper, MONAI UNet and SegFormer-b0 on one CUDA GPU, fp32 and AMP (bf16, fp16), in one process, one table.
# About 2-4 minutes on one H100. Without a GPU it says so and exits 0. Run from anywhere:
#   bash benchmarks/gpu_check.sh [extra arguments of python -m benchmarks.gpu_check]
set -euo pipefail
cd "$(dirname "$0")/.."
export PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}"
exec timeout 900 python -m benchmarks.gpu_check "$@"
