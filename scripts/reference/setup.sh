#!/usr/bin/env bash
# Creates the reference Python environment (torch + transformers, ONNX Runtime + onnx +
# onnxscript) in scripts/reference/.venv, or in $REFERENCE_VENV, and prints its python.
# About 2 minutes and 5.7 GB.
set -euo pipefail
here="$(cd "$(dirname "$0")" && pwd)"
venv="${REFERENCE_VENV:-$here/.venv}"
if [ ! -x "$venv/bin/python" ]; then
  python3 -m venv "$venv" >&2
fi
if ! "$venv/bin/python" -c "import torch, transformers, safetensors, numpy, fastapi, uvicorn, onnxruntime, onnx, onnxscript" 2>/dev/null; then
  "$venv/bin/pip" install --quiet -r "$here/requirements.txt" >&2
fi
echo "$venv/bin/python"
