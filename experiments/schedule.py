r"""Builds a run's schedule (no training) and shows what it looks like.

This file is intentionally kept short: the work is `halos_jax.schedule` (build) and
`halos_jax.schedule.outputs.write_outputs` (files), importable from a notebook.

  python -m experiments.schedule --config=configs/halos.py --out=schedule.jsonl \
    --summary_json=summary.json --gantt=gantt.png --staleness=staleness.png
  python -m experiments.schedule --config=configs/diloco.py --config.H=16 \
    --config.env=homogeneous4x4

Prints the summary. Bad input (an invalid config value, an unknown environment preset, a
malformed YAML file, a missing output folder) is one line `error: ...` on stderr and exit status
2, and no output file is written.
"""
from absl import app
from absl import flags
from ml_collections import config_flags

from halos_jax import cli
from halos_jax import config_lib
from halos_jax import schedule as schedule_lib
from halos_jax import validation
from halos_jax.schedule import analysis
from halos_jax.schedule import outputs

_CONFIG = config_flags.DEFINE_config_file(
    "config", None, "Run config file (configs/<algorithm>.py[:args]).", lock_config=True)
flags.mark_flags_as_required(["config"])
_OUT = flags.DEFINE_string("out", None, "Write the schedule as JSON Lines here.")
_SUMMARY = flags.DEFINE_string("summary_json", None, "Write the summary JSON here.")
_GANTT = flags.DEFINE_string("gantt", None, "Write a Gantt chart PNG here.")
_STALENESS = flags.DEFINE_string("staleness", None, "Write a staleness histogram PNG here.")
_GANTT_UNTIL = flags.DEFINE_float(
    "gantt_until_ms", None, "Show only [0, this] ms of simulated time in the Gantt chart.")


def main(argv):
  cli.no_arguments(argv)
  try:
    config = _CONFIG.value
    validation.validate_schedule_config(config)  # the same rules as experiments.train
    schedule = schedule_lib.schedule_from_config(config_lib.resolve(config))
    summary = outputs.write_outputs(
        schedule, out=_OUT.value, summary_json=_SUMMARY.value, gantt=_GANTT.value,
        staleness=_STALENESS.value, gantt_until_ms=_GANTT_UNTIL.value)
  except (ValueError, OSError) as e:  # ConfigError, InvalidEnvironment, InvalidSettings, ...
    cli.fail(e)
  print(analysis.format_summary(summary))
  for flag in ("out", "summary_json", "gantt", "staleness"):
    if flags.FLAGS[flag].value:
      print(f"wrote {flags.FLAGS[flag].value}")


if __name__ == "__main__":
  app.run(main, flags_parser=cli.parse_flags)
