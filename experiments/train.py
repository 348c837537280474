r"""Runs one simulated training run (any of the five algorithms); re-running resumes it.

This file is intentionally kept short: the logic is `halos_jax.train.train_and_evaluate`.

  python -m experiments.train --config=configs/halos.py:runlocal --workdir=runs/halos_geo4
  python -m experiments.train --config=configs/diloco.py:runlocal --workdir=runs/diloco \
      --config.H=16 --config.replay.parallel=False

Several processes (one per host, JAX's multi-controller runtime; docs/scale.md): start the same
command in every process with --distributed (Cloud TPU, SLURM, Open MPI: nothing else needed),
or with --coordinator_address=HOST:PORT --num_processes=N --process_id=I.
"""
import sys

from halos_jax import runtime

if __name__ == "__main__":  # before JAX is imported: huge-page malloc (halos_jax/runtime.py)
  runtime.use_malloc_huge_pages()

# pylint: disable=g-import-not-at-top,wrong-import-position
from absl import app
from absl import flags
from absl import logging
from ml_collections import config_flags

from halos_jax import cli
from halos_jax import distributed
from halos_jax import train
from halos_jax.replay.checkpoint import CheckpointError
from halos_jax.replay.interrupts import Interrupted
from halos_jax.replay.nonfinite import NonFiniteError

_CONFIG = config_flags.DEFINE_config_file(
    "config", None, "Algorithm config file, e.g. configs/halos.py:runlocal.", lock_config=True)
_WORKDIR = flags.DEFINE_string("workdir", None, "Output directory (resumed if it has checkpoints).")
flags.mark_flags_as_required(["config", "workdir"])
_DISTRIBUTED = flags.DEFINE_bool(
    "distributed", False, "Run as one of several processes (jax.distributed.initialize); on "
    "Cloud TPU, SLURM and Open MPI the processes find each other without the flags below.")
_COORDINATOR = flags.DEFINE_string(
    "coordinator_address", None, "HOST:PORT of process 0, reachable by all (implies "
    "--distributed).")
_NUM_PROCESSES = flags.DEFINE_integer("num_processes", None, "Number of processes.")
_PROCESS_ID = flags.DEFINE_integer("process_id", None, "This process's index, 0 .. N-1.")


def main(argv):
  cli.no_arguments(argv)
  logging.set_verbosity(logging.WARNING)  # keep orbax's per-save INFO lines out of the way
  if _DISTRIBUTED.value or _COORDINATOR.value or _NUM_PROCESSES.value or _PROCESS_ID.value:
    try:  # before any JAX computation
      distributed.initialize(_COORDINATOR.value, _NUM_PROCESSES.value, _PROCESS_ID.value)
    except Exception as e:  # pylint: disable=broad-except
      cli.fail(f"--distributed: jax.distributed.initialize failed: {e}")
  runtime.setup_compilation_cache()
  try:
    summary = train.train_and_evaluate(_CONFIG.value, _WORKDIR.value)
  except Interrupted as e:  # SIGINT/SIGTERM: checkpoint saved; exit status 128 + signal
    print(f"interrupted: {e}", file=sys.stderr, flush=True)
    sys.exit(128 + e.signum)
  except (ValueError, FileNotFoundError, CheckpointError, NonFiniteError, OSError) as e:
    cli.fail(e)  # one line `error: ...`, exit status 2
  if distributed.is_primary():
    print(train.format_summary(summary), flush=True)


if __name__ == "__main__":
  # Flag errors (unknown flag, bad --config.KEY, missing config file) are one `error:` line too.
  app.run(main, flags_parser=cli.parse_flags)
