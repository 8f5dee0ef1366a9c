#!/usr/bin/env bash
# Install everything (idempotent) and start the arena on the embedded models.
# Extra arguments go to the app, e.g.: scripts/run.sh --port 8000
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/install.sh
exec "${ARENA_VENV:-.venv}/bin/python" -m arena "$@"
