#!/usr/bin/env bash
# pprl's CUDA paths, once each, in at most 10 minutes on one GPU (benchmarks/gpu_smoke.py lists the steps):
#   bash benchmarks/gpu_smoke.sh                 -> $OUT/gpu_smoke.md + .json (without $OUT: outputs/gpu_smoke/), and
#                                                   benchmarks/gpu.sh's report beside them (gpu_bench.md + .json)
#   bash benchmarks/gpu_smoke.sh --cpu           the same steps at tiny sizes on the CPU (under 5 minutes on 2 cores)
#   bash benchmarks/gpu_smoke.sh --out F --budget 600 --work DIR --skip sweep gpu_bench
# Every step is timed; a step that fails is recorded with its error and the next one runs; the exit status is
# non-zero when a step failed.
set -euo pipefail
cd "$(dirname "$0")/.."
export PYTHONPATH="$PWD/src${PYTHONPATH:+:$PYTHONPATH}" PPRL_CONFIG_DIR="${PPRL_CONFIG_DIR:-$PWD/conf}"
export WANDB_MODE=disabled PYTHONUNBUFFERED=1
command -v nvidia-smi >/dev/null && nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv || true
exec python benchmarks/gpu_smoke.py "$@"
