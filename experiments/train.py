r"""Runs one simulated training run (any of the five algorithms); re-running resumes it.

This file is intentionally kept short: the logic is `halos_jax.train.train_and_evaluate`.

  python -m experiments.train --config=configs/halos.py:runlocal --workdir=runs/halos_geo4
  python -m experiments.train --config=configs/diloco.py:runlocal --workdir=runs/diloco \
      --config.H=16 --config.replay.parallel=False
"""
import os
import sys

from absl import app
from absl import flags
from absl import logging
from ml_collections import config_flags

from halos_jax import train
from halos_jax.replay.checkpoint import CheckpointError

_CONFIG = config_flags.DEFINE_config_file(
    "config", None, "Algorithm config file, e.g. configs/halos.py:runlocal.", lock_config=True)
_WORKDIR = flags.DEFINE_string("workdir", None, "Output directory (resumed if it has checkpoints).")
flags.mark_flags_as_required(["config", "workdir"])


def main(argv):
  if len(argv) > 1:
    raise app.UsageError(f"unexpected arguments: {argv[1:]}")
  logging.set_verbosity(logging.WARNING)  # keep orbax's per-save INFO lines out of the way
  # Reuse compiled programs across runs (same executables, same bits): JAX_COMPILATION_CACHE_DIR
  # overrides the location, an empty value turns the cache off.
  cache = os.environ.get("JAX_COMPILATION_CACHE_DIR",
                         os.path.expanduser("~/.cache/halos_jax/jax"))
  if cache:
    import jax  # pylint: disable=g-import-not-at-top
    jax.config.update("jax_compilation_cache_dir", cache)
    jax.config.update("jax_persistent_cache_min_compile_time_secs", 0.5)
  try:
    summary = train.train_and_evaluate(_CONFIG.value, _WORKDIR.value)
  except (ValueError, FileNotFoundError, CheckpointError) as e:
    print(f"error: {e}", file=sys.stderr)
    sys.exit(2)
  print(train.format_summary(summary), flush=True)


if __name__ == "__main__":
  app.run(main)
