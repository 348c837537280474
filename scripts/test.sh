#!/usr/bin/env bash
# Runs the linter (ruff, configured in pyproject.toml), then the whole test suite: single-device
# tests, then mesh tests on 8 fake CPU devices. Any finding or failing test fails the run.
# Extra arguments go to both pytest runs (e.g. scripts/test.sh -k dn).
set -uo pipefail
cd "$(dirname "$0")/.."
PY=.venv/bin/python
# Persistent XLA compilation cache: tests (and their subprocesses) compile the same tiny
# programs many times; cached executables are the same bits, only sooner.
export JAX_COMPILATION_CACHE_DIR="${JAX_COMPILATION_CACHE_DIR:-$PWD/.cache/jax}"
export JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS="${JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS:-0.5}"
status=0
.venv/bin/ruff check . || status=1
$PY -m pytest -q -m "not mesh" "$@" tests || { s=$?; [ $s -eq 5 ] || status=$s; }
# Exit code 5 = no tests collected (e.g. a -k filter that matches none): not a failure.
XLA_FLAGS="--xla_force_host_platform_device_count=8 ${XLA_FLAGS:-}" \
  $PY -m pytest -q -m mesh "$@" tests; s=$?
[ $s -eq 0 ] || [ $s -eq 5 ] || status=$s
exit $status
