"""A schedule's files: the JSON Lines, the summary JSON and the pictures, all or nothing.

Every output is written to a temporary sibling first and renamed into place only when all of
them succeeded, so bad input or a failure leaves no partial file.
"""
from __future__ import annotations

import json
import os
from pathlib import Path

from halos_jax.schedule import events
from halos_jax.schedule import plots


class UsageError(ValueError):
  """An output that cannot be written (e.g. a folder that does not exist)."""


def write_outputs(schedule, *, out=None, summary_json=None, gantt=None, staleness=None,
                  gantt_until_ms=None) -> dict:
  """Writes the requested files of `schedule`; returns its summary.

  Args:
    schedule: the Schedule.
    out: the canonical JSON Lines (docs/schedule.md).
    summary_json: the summary dict as JSON.
    gantt: a Gantt chart PNG, of [0, gantt_until_ms] if given.
    staleness: a staleness histogram PNG.
    gantt_until_ms: see gantt; > 0.

  Raises:
    UsageError: a target folder does not exist or gantt_until_ms <= 0 (nothing written).
  """
  targets = {k: Path(v) for k, v in (("out", out), ("summary_json", summary_json),
                                     ("gantt", gantt), ("staleness", staleness)) if v}
  for flag, path in targets.items():
    if not path.parent.is_dir():
      raise UsageError(f"--{flag}={path}: folder {str(path.parent)!r} does not exist")
  if gantt_until_ms is not None and not gantt_until_ms > 0:
    raise UsageError(f"--gantt_until_ms must be > 0, got {gantt_until_ms}")
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
