#!/usr/bin/env bash
# The prepared GPU check (issue 16 §6): at most 8 minutes on one GPU.
#
#   bash benchmarks/gpu_check.sh            # a machine with one CUDA GPU (from the repository root)
#   bash benchmarks/gpu_check.sh --dry-run  # the same steps on the CPU, small (what CI runs)
#
# What it runs and prints: benchmarks/gpu_check.py's docstring. Exit status: that script's,
# or 124 when the 8 minutes ran out.
set -euo pipefail
cd "$(dirname "$0")/.."
PYTHON="${PYTHON:-python}"
if [[ "${1:-}" != "--dry-run" ]] && command -v nvidia-smi >/dev/null; then
  nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader
fi
export OMP_NUM_THREADS="${OMP_NUM_THREADS:-4}"
exec timeout 480 "$PYTHON" benchmarks/gpu_check.py "$@"
