#!/usr/bin/env bash
# Optional: the legacy ITREX engine's own virtualenv (default .venv-itrex, about 2 GB, ~3 minutes).
# Idempotent: reinstalls only when requirements-itrex.txt changes.
set -euo pipefail
cd "$(dirname "$0")/.."
VENV="${ARENA_ITREX_VENV:-.venv-itrex}"
WANT="$(sha256sum requirements-itrex.txt | cut -d' ' -f1)"
if [ "$(cat "$VENV/.installed" 2>/dev/null)" = "$WANT" ]; then
  echo "[install-itrex] $VENV is up to date"
  exit 0
fi
echo "[install-itrex] creating $VENV (ITREX 1.4.2 + neural-speed 1.0, transformers 4.40.2)"
"${PYTHON:-python3}" -m venv "$VENV"
"$VENV/bin/python" -m pip install --disable-pip-version-check -q -r requirements-itrex.txt
echo "$WANT" > "$VENV/.installed"
echo "[install-itrex] done; models with 'engine: itrex' in models.yaml now load in the arena"
