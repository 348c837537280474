"""The paper's comparison: several runs on one environment, a time-to-loss table and two plots.

`run_comparison(config, workdir)` runs every entry of a comparison config (configs/compare.py)
with `halos_jax.train.train_and_evaluate(entry_config, workdir/<entry name>)` -- so a re-run
resumes or reuses each entry -- and writes

  comparison.json        everything below, machine-readable (targets, per-entry numbers, speed-ups)
  comparison.md          the same as markdown tables (`format_table`)
  val_loss_vs_time.png   validation loss vs simulated time, all entries on one chart
  val_loss_vs_tokens.png validation loss vs tokens (local steps for problems without tokens)

An entry is either one algorithm (mode 'algorithms': ddp, diloco, diloco_dynupd, async_local_sgd,
halos, each from its own configs/<algorithm>.py:get_config(config.arg)) or one value of an
ablation of one algorithm (mode 'ablation': K, alpha, beta = the (beta_l, beta_g) pair of HALoS'
hierarchical momentum, or H).

Time to target: `time_to_target` returns the simulated time of the FIRST validation record whose
loss is <= the target, without interpolation. The evaluated model only changes at server updates
and is validated at some of them, so a crossing between two records would be a time at which no
evaluated model had that loss; the reported time is therefore exact at the resolution of
`val_interval` (and never earlier than the true first crossing of the evaluated points).

Speed-up of the reference entry (HALoS) over a baseline at a target: t_baseline / t_reference.
When the baseline never reaches the target within its run but the reference does, the ratio is a
lower bound, simulated_time(baseline) / t_reference, shown as '>= x'.
"""
from halos_jax.compare.entries import (ABLATIONS, entry_configs, load_algorithm_config,
                                      parse_overrides, reference_entry)
from halos_jax.compare.results import (auto_targets, format_table, paper_claim, plot_comparison,
                                      read_run, speedup, summarize, time_to_target,
                                      validation_records)
from halos_jax.compare.run import run_comparison, validate_config

__all__ = [
    "ABLATIONS", "auto_targets", "entry_configs", "format_table", "load_algorithm_config",
    "paper_claim", "parse_overrides", "plot_comparison", "read_run", "reference_entry",
    "run_comparison", "speedup", "summarize", "time_to_target", "validate_config",
    "validation_records",
]
