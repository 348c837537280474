r"""Builds a run's schedule (no training) and shows what it looks like.

  python -m experiments.schedule --config=configs/halos.py --out=schedule.jsonl \
    --summary_json=summary.json --gantt=gantt.png --staleness=staleness.png
  python -m experiments.schedule --config=configs/diloco.py --config.H=16 \
    --config.env=homogeneous4x4

Writes the schedule as JSON Lines (docs/schedule.md), a summary JSON and the pictures, and
prints the summary. Bad input (unknown environment preset, malformed YAML, an invalid setting)
gives one line `error: ...` on stderr and exit status 2, and no output file is written: all
outputs are written to temporary files first and renamed into place only when all succeeded.

This main is intentionally short: the work is `run(config, ...)`, importable from a notebook.
"""
from __future__ import annotations

import json
import os
import sys
from pathlib import Path

from absl import app
from absl import flags
from ml_collections import config_flags

from halos_jax import schedule as schedule_lib
from halos_jax import validation
from halos_jax.schedule import analysis
from halos_jax.schedule import events
from halos_jax.schedule import plots

# Pythia-70M in fp32 (docs/algorithms.md 3), when the model code cannot be imported.
FALLBACK_MESSAGE_BYTES = 281_706_496

_CONFIG = config_flags.DEFINE_config_file(
    "config", None, "Run config file (configs/<algorithm>.py[:args]).", lock_config=True)
_OUT = flags.DEFINE_string("out", None, "Write the schedule as JSON Lines here.")
_SUMMARY = flags.DEFINE_string("summary_json", None, "Write the summary JSON here.")
_GANTT = flags.DEFINE_string("gantt", None, "Write a Gantt chart PNG here.")
_STALENESS = flags.DEFINE_string("staleness", None, "Write a staleness histogram PNG here.")
_GANTT_UNTIL = flags.DEFINE_float(
    "gantt_until_ms", None, "Show only [0, this] ms of simulated time in the Gantt chart.")


class UsageError(ValueError):
  """Bad command-line input (e.g. an output folder that does not exist)."""


def default_message_bytes(config) -> int | None:
  """The fp32 size of config.model's parameters, when config.message_bytes is None."""
  if config.get("message_bytes") is not None:
    return None
  try:
    from halos_jax import models  # pylint: disable=g-import-not-at-top
  except ImportError as e:
    print(f"note: halos_jax.models cannot be imported ({e}); message_bytes = "
          f"{FALLBACK_MESSAGE_BYTES:,} (Pythia-70M fp32)", file=sys.stderr)
    return FALLBACK_MESSAGE_BYTES
  name = config.model.name
  return models.param_bytes(models.get_model_config(name))


def run(config, *, out=None, summary_json=None, gantt=None, staleness=None,
        gantt_until_ms=None) -> dict:
  """Builds the schedule of `config`, writes the requested outputs, returns the summary.

  Raises:
    ConfigError, InvalidEnvironment, InvalidSettings, UsageError: bad input; nothing has been
      written.
  """
  targets = {k: Path(v) for k, v in (("out", out), ("summary_json", summary_json),
                                     ("gantt", gantt), ("staleness", staleness)) if v}
  for flag, path in targets.items():
    if not path.parent.is_dir():
      raise UsageError(f"--{flag}={path}: folder {str(path.parent)!r} does not exist")
  if gantt_until_ms is not None and not gantt_until_ms > 0:
    raise UsageError(f"--gantt_until_ms must be > 0, got {gantt_until_ms}")
  validation.validate_schedule_config(config)  # ConfigError: one line naming the field
  schedule = schedule_lib.schedule_from_config(
      config, default_message_bytes=default_message_bytes(config))
  summary = schedule.summary()
  writers = {
      "out": schedule.write_jsonl,
      "summary_json": lambda p: Path(p).write_text(json.dumps(summary, indent=1) + "\n"),
      "gantt": lambda p: plots.gantt(schedule, p, t_max_ms=gantt_until_ms),
      "staleness": lambda p: plots.staleness_histogram(schedule, p),
  }
  written = []
  try:
    for flag, path in targets.items():
      tmp = events.temporary_sibling(path)
      written.append((tmp, path))
      writers[flag](tmp)
    for tmp, path in written:
      os.replace(tmp, path)
  finally:
    for tmp, _ in written:
      if tmp.exists():
        tmp.unlink()
  return summary


def _one_line(message) -> str:
  """One line of an error message; of an embedded traceback only its final line."""
  text = str(message)
  if "Traceback (most recent call last)" in text:
    head, _, tb = text.partition("Traceback (most recent call last)")
    last = [line for line in tb.splitlines() if line.strip() and not line.startswith(" ")]
    text = head + (last[-1] if last else "")
  return " ".join(text.split())


def _fail(message) -> None:
  print("error: " + _one_line(message), file=sys.stderr)
  sys.exit(2)


def _parse_flags(argv):
  """absl's flag parsing, with any failure (bad config file, unknown or ill-typed
  --config.KEY) reported as one `error:` line and exit status 2."""
  for arg in argv[1:]:
    if arg.startswith("--config="):
      path = arg[len("--config="):].split(":")[0]
      if not Path(path).is_file():
        _fail(f"--config: config file {path!r} does not exist")
  try:
    return flags.FLAGS(argv)
  except Exception as e:  # pylint: disable=broad-except
    if isinstance(e, AttributeError) and "config" in str(argv):
      e = f"unknown config key {e} in {[a for a in argv[1:] if a.startswith('--config.')]}"
    _fail(e)


def main(argv):
  if len(argv) > 1:
    _fail(f"unexpected arguments {argv[1:]}")
  try:
    config = _CONFIG.value
  except Exception as e:  # pylint: disable=broad-except
    _fail(f"--config: {e}")
  if config is None:
    _fail("--config is required (e.g. --config=configs/halos.py)")
  try:
    summary = run(config, out=_OUT.value, summary_json=_SUMMARY.value,
                  gantt=_GANTT.value, staleness=_STALENESS.value,
                  gantt_until_ms=_GANTT_UNTIL.value)
  except (schedule_lib.InvalidEnvironment, schedule_lib.InvalidSettings, UsageError,
          ValueError) as e:
    _fail(e)
  print(analysis.format_summary(summary))
  for flag in ("out", "summary_json", "gantt", "staleness"):
    value = flags.FLAGS[flag].value
    if value:
      print(f"wrote {value}")


if __name__ == "__main__":
  app.run(main, flags_parser=_parse_flags)
