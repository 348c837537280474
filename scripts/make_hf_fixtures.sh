#!/usr/bin/env bash
# Regenerates tests/models/fixtures/hf_*.npz with torch + transformers in a Python 3.11 side
# environment (side_env/, git-ignored). See scripts/make_hf_fixtures.py and docs/models.md.
set -euo pipefail
cd "$(dirname "$0")/.."
if [ ! -x side_env/bin/python ]; then
  python3 -m venv side_env   # python3 must be 3.11: the on-disk torch 2.13.0 CPU wheel is cp311
  side_env/bin/pip install torch==2.13.0 transformers==5.23.0
fi
side_env/bin/python scripts/make_hf_fixtures.py
