# Sourced by scripts/install-itrex.sh and scripts/install-vllm.sh: an engine's own virtualenv made from its
# requirements file, again only when that file changes (its hash is kept in VENV/.installed).

# new_engine_venv TAG VENV REQUIREMENTS WHAT: succeeds after creating VENV and installing REQUIREMENTS into it;
# fails (returns 1), saying so, when VENV is already up to date.
new_engine_venv() {
  local tag="$1" venv="$2" reqs="$3" what="$4"
  if [ "$(cat "$venv/.installed" 2>/dev/null)" = "$(sha256sum "$reqs" | cut -d' ' -f1)" ]; then
    echo "[$tag] $venv is up to date"
    return 1
  fi
  echo "[$tag] creating $venv ($what)"
  # called as an if-condition, where set -e does not hold: a failure here must end the script itself
  "${PYTHON:-python3}" -m venv "$venv" || { echo "[$tag] creating $venv failed" >&2; exit 1; }
  "$venv/bin/python" -m pip install --disable-pip-version-check -q -r "$reqs" ||
    { echo "[$tag] installing $reqs into $venv failed; run this script again" >&2; exit 1; }
}

# engine_venv_done VENV REQUIREMENTS: mark VENV as made from this REQUIREMENTS file.
engine_venv_done() {
  sha256sum "$2" | cut -d' ' -f1 > "$1/.installed"
}
