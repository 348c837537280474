"""Running a comparison: every entry's run (resumed or reused), then the table and plots."""
from __future__ import annotations

import math
import os

import ml_collections

from halos_jax.compare.entries import ABLATIONS, entry_configs, reference_entry
from halos_jax.compare.results import format_table, plot_comparison, read_run, summarize
from halos_jax.replay import metrics as metrics_lib


def validate_config(config: ml_collections.ConfigDict) -> None:
  """Checks the comparison-level fields (entry-level ones are checked by each run)."""
  for t in config.targets:
    if isinstance(t, bool) or not isinstance(t, (int, float)) or not math.isfinite(t):
      raise ValueError(f"targets: {t!r} is not a finite number")
  if int(config.num_auto_targets) < 1:
    raise ValueError(f"num_auto_targets={config.num_auto_targets}: must be >= 1")


def run_comparison(config: ml_collections.ConfigDict, workdir: str) -> dict:
  """Runs (or resumes) every entry, then writes comparison.{md,json} and two plots in workdir.

  Args:
    config: a comparison config (configs/compare.py:get_config).
    workdir: output directory; entry `name` runs in workdir/name.

  Returns:
    The dict written to comparison.json.
  """
  from halos_jax import config_lib  # pylint: disable=g-import-not-at-top
  from halos_jax import schedule as schedule_lib  # pylint: disable=g-import-not-at-top
  from halos_jax import train  # pylint: disable=g-import-not-at-top

  validate_config(config)
  entries = entry_configs(config)
  names = list(entries)
  reference = reference_entry(config, names)
  for n, c in entries.items():  # every entry's environment and schedule, before any run
    try:
      schedule_lib.schedule_from_config(config_lib.resolve(c))
    except (ValueError, FileNotFoundError) as e:
      raise type(e)(f"entry {n!r}: {e}") from None
  os.makedirs(workdir, exist_ok=True)
  runs = {}
  for n, c in entries.items():
    run_dir = os.path.join(workdir, n)
    print(f"[compare] {n}: {run_dir}", flush=True)
    train.train_and_evaluate(c, run_dir)
    runs[n] = read_run(run_dir)
  mode = "ablation" if config.ablation else "algorithms"
  ablation = None
  if config.ablation:
    ablation = {"name": config.ablation, "algorithm": config.ablation_algorithm,
                "fields": list(ABLATIONS[config.ablation]),
                "values": [list(v) if isinstance(v, (tuple, list)) else v
                           for v in config.ablation_values]}
  result = summarize(runs, reference, list(config.targets), int(config.num_auto_targets),
                     mode=mode, ablation=ablation)
  env = next(iter(entries.values())).env
  result["config"] = config.to_dict()
  result["env"] = env
  files = {"json": "comparison.json", "markdown": "comparison.md"}
  if config.plots:
    env_name = schedule_lib.load_environment(env).name  # a preset's name, or the file's stem
    title = (f"ablation {config.ablation} ({config.ablation_algorithm}, {env_name})"
             if config.ablation else f"{config.arg}, {env_name}")
    paths = plot_comparison(runs, result["targets"], os.path.join(workdir, "val_loss"), title)
    files["plots"] = [os.path.basename(p) for p in paths]
  result["files"] = files
  metrics_lib.write_json(os.path.join(workdir, "comparison.json"), result)
  metrics_lib.write_atomic(os.path.join(workdir, "comparison.md"), format_table(result))
  return result
