#!/usr/bin/env bash
# Create .venv and install tessera with its test extras. PyTorch: the CPU build (torch==2.13.0),
# unless a CUDA build is already installed in the venv; override with TORCH_SPEC="torch==X".
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-python3}
[ -x .venv/bin/python ] || "$PY" -m venv .venv
if .venv/bin/python -c "import torch, sys; sys.exit(0 if torch.version.cuda else 1)" 2>/dev/null; then
  echo "install: keeping the installed GPU build of torch"
elif ! .venv/bin/python -c "import torch" 2>/dev/null; then
  .venv/bin/pip install -q "${TORCH_SPEC:-torch==2.13.0}"
fi
.venv/bin/pip install -q -e ".[test,all]"
