# The two commands of the README. Each first creates/updates .venv (scripts/env.sh).
PY := .venv/bin/python
# Extra flags for the main run, e.g. make run ARGS="--config.H=4"
ARGS ?=

.PHONY: run test env
env:
	@scripts/env.sh

run: env
	$(PY) -m experiments.train --config=configs/halos.py:runlocal --workdir=runs/halos_geo4 $(ARGS)

# Single-device tests first, then the tests that need a mesh of 8 fake CPU devices in their own
# process (XLA_FLAGS must be set before jax starts, and it slows single-device programs).
test: env
	scripts/test.sh
