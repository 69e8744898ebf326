#!/usr/bin/env bash
# The CUDA checks end to end on a GPU machine (under ten minutes): see benchmarks/gpu_check.py.
set -euo pipefail
cd "$(dirname "$0")/.."
exec "${PYTHON:-python}" -m benchmarks.gpu_check "$@"
