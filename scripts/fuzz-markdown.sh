#!/usr/bin/env bash
# The long run of the safe-Markdown property tests: texts drawn from the hostile-Markdown grammar
# (tests/markdown_grammar.py) through safe_markdown, read back by markdown-it (whole and streamed) and by the
# page's own components in Chromium. CI runs a few thousand with a fixed seed; this draws fresh ones.
#   scripts/fuzz-markdown.sh [examples] [browser examples]      (default 50000 and 20000)
set -euo pipefail
cd "$(dirname "$0")/.."
export ARENA_FUZZ_EXAMPLES="${1:-50000}" ARENA_FUZZ_BROWSER_EXAMPLES="${2:-20000}" ARENA_FUZZ_SEED=random
exec "${ARENA_VENV:-.venv}/bin/python" -m pytest -p no:cacheprovider -q -o addopts="" --timeout 0 \
  -W ignore::hypothesis.errors.HypothesisWarning \
  tests/web/test_safe_markdown.py tests/web/test_browser_security.py -k grammar
