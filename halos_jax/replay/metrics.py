"""Run outputs: metrics.jsonl, summary.json, loss plots. Every file is written atomically."""
from __future__ import annotations

import json
import os
import tempfile
from typing import Iterable


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
