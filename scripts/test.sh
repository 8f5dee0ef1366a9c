#!/usr/bin/env bash
# Install everything the tests need (idempotent), then run the whole suite.
# Extra arguments go to pytest, e.g.: scripts/test.sh -k browser
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/install.sh --test
# vLLM's CPU build, for the real-server tests (tests/serving/test_vllm.py): there its absence fails instead of skipping
scripts/install-vllm.sh
export ARENA_REQUIRE_VLLM=1
# The linter first: a shadowed or unused name, a mutable default (pyflakes, bugbear) fails the run.
"${ARENA_VENV:-.venv}/bin/ruff" check .
# The layers of arena/ (pyproject.toml [tool.importlinter]): an import against them fails the run.
"${ARENA_VENV:-.venv}/bin/lint-imports"
exec "${ARENA_VENV:-.venv}/bin/python" -m pytest "$@"
