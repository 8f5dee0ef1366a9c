#!/usr/bin/env bash
# Install everything (idempotent) and start the arena on the embedded models.
# Extra arguments go to the app, e.g.: scripts/run.sh --port 8000
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/install.sh
# The batch grader that decides English open answers (README, Grading): 1.1 GB once, skipped when installed.
if [ "${ARENA_WITHOUT_GRADER:-0}" != 1 ]; then
  scripts/install-qwen-1.5b.sh
fi
exec "${ARENA_VENV:-.venv}/bin/python" -m arena "$@"
