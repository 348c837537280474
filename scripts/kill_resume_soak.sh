#!/usr/bin/env bash
# A longer repeated-SIGKILL soak than the test suite's (tests/replay/kill_resume_test.py):
# one chain of runs on the quadratic, killed KILLS times at seeded random moments, must end with
# the uninterrupted run's params_sha256 and metrics, and every checkpoint it left after a kill
# must match the uninterrupted run's bookkeeping.
#   scripts/kill_resume_soak.sh [KILLS] [LOCAL_STEPS] [SEED]   (defaults: 200 4000 1)
set -euo pipefail
cd "$(dirname "$0")/.."
export HALOS_KILLS="${1:-200}" HALOS_KILL_STEPS="${2:-4000}" HALOS_KILL_SEED="${3:-1}"
export JAX_COMPILATION_CACHE_DIR="${JAX_COMPILATION_CACHE_DIR:-$PWD/.cache/jax}"
exec .venv/bin/python -m pytest -q -s tests/replay/kill_resume_test.py \
  -k repeated_sigkill -p no:cacheprovider
