r"""Runs a comparison (five algorithms, or one ablation) and writes its table and plots.

This file is intentionally kept short: the logic is `halos_jax.compare.run_comparison`.

  python -m experiments.compare --config=configs/compare.py:runlocal --workdir=runs/compare_geo4
  python -m experiments.compare --config=configs/compare.py:runlocal,ablate=alpha \
      --workdir=runs/ablate_alpha --config.overrides='total_local_steps=512'
"""
import os

from halos_jax import runtime

if __name__ == "__main__":  # before JAX is imported: huge-page malloc (halos_jax/runtime.py)
  runtime.use_malloc_huge_pages()

# pylint: disable=g-import-not-at-top,wrong-import-position
from absl import app
from absl import flags
from absl import logging
from ml_collections import config_flags

from halos_jax import cli
from halos_jax import compare
from halos_jax.replay.checkpoint import CheckpointError

_CONFIG = config_flags.DEFINE_config_file(
    "config", None, "Comparison config file, e.g. configs/compare.py:runlocal.", lock_config=True)
_WORKDIR = flags.DEFINE_string("workdir", None, "Output directory; entry X runs in WORKDIR/X.")
flags.mark_flags_as_required(["config", "workdir"])


def main(argv):
  cli.no_arguments(argv)
  logging.set_verbosity(logging.WARNING)  # keep orbax's per-save INFO lines out of the way
  runtime.setup_compilation_cache()
  try:
    config = _CONFIG.value  # a config file that failed to load raises here (OSError)
    result = compare.run_comparison(config, _WORKDIR.value)
  except (ValueError, OSError, CheckpointError) as e:
    cli.fail(e)
  print(compare.format_table(result), flush=True)
  print(f"wrote {os.path.join(_WORKDIR.value, 'comparison.md')}", flush=True)


if __name__ == "__main__":
  app.run(main, flags_parser=cli.parse_flags)
