r"""The paper-shaped study (issue 17): tuning, 3 seeds, ablations, and the results page.

This file is intentionally kept short: the runs are `halos_jax.compare.sweep`, the page
`halos_jax.compare.report`; what is run is configs/paper_shape.py.

  python -m experiments.paper_shape --workdir=runs/paper_shape              # all, then the page
  python -m experiments.paper_shape --workdir=runs/paper_shape --stage=tune # one stage
  python -m experiments.paper_shape --workdir=runs/paper_shape --stage=report

Re-running reuses finished runs and resumes interrupted ones, so the study can be spread over
several sittings; a second process on the same workdir shares the work. `report` rewrites the
paper-shaped section of docs/results.md, docs/results/paper_shape.json and the plots from the
stored runs only (it fails, naming them, if a run is missing).
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
from halos_jax.compare import report
from halos_jax.compare import sweep
from halos_jax.replay.checkpoint import CheckpointError

_ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
_CONFIG = config_flags.DEFINE_config_file(
    "config", os.path.join(_ROOT, "configs", "paper_shape.py"), "The study's config.",
    lock_config=True)
_WORKDIR = flags.DEFINE_string("workdir", None, "Where the runs live (WORKDIR/<algorithm>/...).")
_STAGE = flags.DEFINE_enum("stage", "all", ["all", "tune", "seeds", "ablations", "report"],
                           "What to do: run the stage's missing runs (all: every stage, then "
                           "the report), or only write the report from stored runs.")
_DOCS = flags.DEFINE_string("docs", os.path.join(_ROOT, "docs"),
                            "Where results.md and results/ are (report).")
flags.mark_flags_as_required(["workdir"])


def main(argv):
  cli.no_arguments(argv)
  logging.set_verbosity(logging.WARNING)  # keep orbax's per-save INFO lines out of the way
  runtime.setup_compilation_cache()
  from halos_jax import train  # imports JAX
  config, workdir, stage = _CONFIG.value, _WORKDIR.value, _STAGE.value
  machine = f"{runtime.cpu_line()}, {os.cpu_count()} cores"
  try:
    def go(specs):
      sweep.run_all(config, workdir, specs, machine=machine, train_fn=train.train_and_evaluate)

    if stage in ("all", "tune"):
      go(sweep.tuning_runs(config))
    if stage in ("all", "seeds", "ablations"):
      chosen = sweep.choose(config, workdir)
      print(f"[paper_shape] chosen: {chosen}", flush=True)
      if stage in ("all", "seeds"):
        go(sweep.seed_runs(config, chosen))
      if stage in ("all", "ablations"):
        go([s for runs in sweep.ablation_runs(config, chosen).values() for _, s in runs])
    if stage in ("all", "report"):
      paths = report.write_report(config, workdir, _DOCS.value)
      for p in paths:
        print(f"wrote {p}", flush=True)
  except (ValueError, OSError, CheckpointError) as e:
    cli.fail(e)


if __name__ == "__main__":
  app.run(main, flags_parser=cli.parse_flags)
