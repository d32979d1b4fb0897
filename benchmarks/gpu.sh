#!/usr/bin/env bash
# Paper scale on one GPU, every benchmark in one call of under 10 minutes on an H100/H200:
#   benchmarks/gpu.sh                       -> benchmarks/RESULTS_gpu.md (+ .json): Trainer vs plain loop (GPU, CPU),
#                                              img/s and share of the bf16 peak, bf16 vs fp32, data path vs model,
#                                              8 sweep jobs on one GPU at 1, 2, 4 jobs per GPU
#   benchmarks/gpu.sh --out /tmp/r.md       write elsewhere (never benchmarks/RESULTS.md)
#   benchmarks/gpu.sh --paper               then the paper-scale run (experiment=ferg_scale, 100 epochs) + Table 2
#   benchmarks/gpu.sh --paper --sweep9 4    ... and the 9-point λ grid with 4 jobs per GPU (about an hour)
#   benchmarks/gpu.sh --quick               tiny sizes: checks the script (also without a GPU)
# Any other option goes to benchmarks/gpu.py (--skip SECTION ..., --work DIR, --sweep-per-gpu 1 2 4, --threads N).
# The first call draws the FERG-sized stand-in (55,767 images, ~7 ms an image per CPU core) into PPRL_CACHE_DIR.
set -euo pipefail
cd "$(dirname "$0")/.."
export PYTHONPATH="$PWD/src${PYTHONPATH:+:$PYTHONPATH}" PPRL_CONFIG_DIR="${PPRL_CONFIG_DIR:-$PWD/conf}"
export WANDB_MODE=disabled PYTHONUNBUFFERED=1
command -v nvidia-smi >/dev/null && nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv || true
exec python benchmarks/gpu.py "$@"
