#!/usr/bin/env bash
# The one GPU check (<= 8 min on one H100/H200): prints one JSON, exit 0 when every step passed,
# 1 when one failed, 2 at once when no CUDA GPU is visible. See scripts/gpu_check.py.
set -euo pipefail
cd "$(dirname "$0")/.."
exec "${PYTHON:-python}" scripts/gpu_check.py "$@"
