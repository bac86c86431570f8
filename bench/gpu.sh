#!/usr/bin/env bash
# The GPU measurements of bench/gpu.py in one run (a few minutes): ONNX CUDA vs CPU for the CLIP
# towers (fp32, fp16), the worker in images/s, the encoder service if installed.  Runs on a
# machine without a GPU too (CUDA cells are skipped, with the reason).  Results: $OUT/gpu.json
# (default .bench-cache/gpu/).  Extra arguments go to bench/gpu.py, e.g. bench/gpu.sh --vit-b32
set -euo pipefail
cd "$(dirname "$0")/.."
export PYTHONUNBUFFERED=1
PY=${PYTHON:-.venv/bin/python}
[ -x "$PY" ] || PY=python3
if command -v nvidia-smi >/dev/null 2>&1; then
  nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv,noheader || true
else
  echo "nvidia-smi not found: no NVIDIA driver on this machine; CUDA will be skipped"
fi
exec "$PY" bench/gpu.py "$@"
