"""Run outputs: metrics.jsonl, summary.json, loss plots. Every file is written atomically."""
from __future__ import annotations

import json
import math
import os
import tempfile
from typing import Iterable


def progress_line(meta, ev, wall: float, total_steps: int, t_stop_ms: float) -> str:
  """One line: simulated-time progress (the schedule's stop time is known), steps, val, ETA."""
  t_stop = t_stop_ms or 1.0
  frac = min(1.0, float(ev.t) / t_stop)
  vals = [m["val_loss"] for m in meta.metrics if m["kind"] == "val"]
  eta = wall / frac - wall if frac > 0 else float("nan")
  return (f"sim {ev.t / 1e3:8.1f}/{t_stop / 1e3:.1f} s ({100 * frac:5.1f}%)  "
          f"local steps {meta.counted_steps}/{total_steps}  val {vals[-1]:.4f}  "
          f"wall {wall:6.1f}s  eta {eta if math.isfinite(eta) else 0:6.1f}s")


def mean_loss(loss_fn, params, sequences, batch: int) -> float:
  """Mean of loss_fn(params, chunk) over `sequences` in chunks of `batch`, weighted by size.

  A ragged last chunk would compile a second program: it is dropped (unless it is the only one).
  """
  total, count = 0.0, 0
  for i in range(0, sequences.shape[0], batch):
    chunk = sequences[i:i + batch]
    if chunk.shape[0] < batch and i > 0:
      break
    total += float(loss_fn(params, chunk)) * chunk.shape[0]
    count += chunk.shape[0]
  return total / count


def write_atomic(path: str, text: str) -> None:
  """Writes `text` to `path` via a temporary file and a rename: never a half-written file."""
  directory = os.path.dirname(os.path.abspath(path))
  fd, tmp = tempfile.mkstemp(dir=directory, prefix=".tmp-", suffix=os.path.basename(path))
  try:
    with os.fdopen(fd, "w") as f:
      f.write(text)
    os.replace(tmp, path)
  except BaseException:
    if os.path.exists(tmp):
      os.unlink(tmp)
    raise


def write_jsonl(path: str, records: Iterable[dict]) -> None:
  write_atomic(path, "".join(json.dumps(r, sort_keys=True) + "\n" for r in records))


def write_json(path: str, obj: dict) -> None:
  write_atomic(path, json.dumps(obj, indent=2, sort_keys=True) + "\n")


def plot_validation(metrics: list[dict], out_prefix: str, title: str) -> list[str]:
  """Validation loss vs simulated time (h) and vs tokens; returns the PNG paths written."""
  from halos_jax.schedule import plots  # pylint: disable=g-import-not-at-top
  plt = plots.pyplot()
  val = [m for m in metrics if m["kind"] == "val"]
  paths = []
  for key, label, scale, name in (("t_ms", "simulated time (h)", 1 / 3.6e6, "time"),
                                  ("tokens", "tokens", 1.0, "tokens")):
    fig, ax = plt.subplots(figsize=(6, 4))
    ax.plot([m[key] * scale for m in val], [m["val_loss"] for m in val], marker="o", ms=3)
    ax.set_xlabel(label)
    ax.set_ylabel("validation loss")
    ax.set_title(title)
    ax.grid(alpha=0.3)
    fig.tight_layout()
    path = f"{out_prefix}_vs_{name}.png"
    plots.save_png(fig, path, dpi=100)
    paths.append(path)
  return paths
