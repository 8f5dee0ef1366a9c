#!/usr/bin/env bash
# Optional: the legacy ITREX engine's own virtualenv (default .venv-itrex, about 2 GB, ~3 minutes).
# Idempotent: reinstalls only when requirements-itrex.txt changes.
set -euo pipefail
cd "$(dirname "$0")/.."
source scripts/engine-venv.sh
VENV="${ARENA_ITREX_VENV:-.venv-itrex}"
if new_engine_venv install-itrex "$VENV" requirements-itrex.txt "ITREX 1.4.2 + neural-speed 1.0, transformers 4.40.2"; then
  engine_venv_done "$VENV" requirements-itrex.txt
  echo "[install-itrex] done; models with 'engine: itrex' in models.yaml now load in the arena"
fi
