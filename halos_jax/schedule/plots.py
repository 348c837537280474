"""What a schedule looks like, in pictures: the Gantt chart and the staleness histogram.

The numbers behind them are in analysis.py; matplotlib (Agg backend) is imported on the first
call, and PNGs are written atomically (temporary sibling, then rename).
"""
from __future__ import annotations

import os
from pathlib import Path

import numpy as np

from halos_jax.schedule import events as ev
from halos_jax.schedule.analysis import gps_staleness, server_staleness, worker_intervals


def pyplot():
  """matplotlib.pyplot with the Agg backend (no display needed), imported on first use."""
  import matplotlib  # pylint: disable=g-import-not-at-top
  matplotlib.use("Agg")
  import matplotlib.pyplot as plt  # pylint: disable=g-import-not-at-top
  return plt


def _time_unit(t_ms: float) -> tuple[str, float]:
  if t_ms < 120e3:
    return "s", 1e3
  if t_ms < 3 * 3.6e6:
    return "min", 60e3
  return "h", 3.6e6


def save_png(fig, path, dpi: int = 110) -> None:
  """savefig to a temporary sibling, then rename (no partial PNG on failure); closes fig."""
  path = Path(path)
  tmp = ev.temporary_sibling(path)
  try:
    fig.savefig(tmp, format="png", dpi=dpi)
    os.replace(tmp, path)
  finally:
    pyplot().close(fig)
    if tmp.exists():
      tmp.unlink()


_COLORS = {"compute": "#2b6cb0", "communication": "#ed8936", "idle": "#d5dbe3",
           "up": "#c53030", "down": "#38a169", "tick": "#1a202c", "crash": "#e53e3e",
           "cut": "#805ad5", "shared": "#7b341e"}


def gantt(schedule, path, t_max_ms: float | None = None) -> None:
  """Gantt chart PNG: per worker compute / communication / idle; per server its exchanges.

  Args:
    schedule: the Schedule.
    path: output PNG (written atomically).
    t_max_ms: show [0, t_max_ms] only (default: the whole run).
  """
  plt = pyplot()
  env = schedule.env
  t_end = schedule.summary_basic()["simulated_time_ms"]
  t_max = min(t_end, t_max_ms) if t_max_ms else t_end
  unit, scale = _time_unit(t_max)
  iv = worker_intervals(schedule)
  labels = _row_labels(schedule)
  n_rows = len(labels)
  fig, ax = plt.subplots(figsize=(13, 0.32 * n_rows + 1.6))
  min_width = t_max / 1500  # about one pixel: server exchanges stay visible when short

  def bars(row, starts, ends, color, height=0.8, visible=False):
    keep = starts < t_max
    ends = np.minimum(ends[keep], t_max)
    starts = starts[keep]
    widths = np.maximum(ends - starts, min_width) if visible else ends - starts
    spans = list(zip((starts / scale).tolist(), (widths / scale).tolist()))
    if spans:
      ax.broken_barh(spans, (row - height / 2, height), facecolors=color, linewidth=0)

  def ticks(row, times, linewidth):
    ax.vlines(times[times <= t_max] / scale, row - 0.4, row + 0.4, colors=_COLORS["tick"],
              linewidth=linewidth)

  for w in range(env.num_workers):
    row = n_rows - 1 - w
    ax.broken_barh([(0, t_max / scale)], (row - 0.4, 0.8), facecolors=_COLORS["idle"])
    bars(row, *iv["compute"][w], _COLORS["compute"])
    bars(row, *iv["communication"][w], _COLORS["communication"])
    if "shared_wait" in iv:  # link_sharing fair: what transfers lost to others on their links
      a, b = iv["shared_wait"][w]
      keep = a < t_max
      spans = list(zip((a[keep] / scale).tolist(),
                       ((np.minimum(b[keep], t_max) - a[keep]) / scale).tolist()))
      if spans:
        ax.broken_barh(spans, (row - 0.4, 0.8), facecolors=_COLORS["communication"],
                       edgecolors=_COLORS["shared"], hatch="////", linewidth=0)
  _failure_marks(schedule, ax, n_rows, t_max, scale)
  _server_rows(schedule, n_rows - 1 - env.num_workers, bars, ticks)
  ax.set_yticks(range(n_rows))
  ax.set_yticklabels(labels[::-1], fontsize=7)
  ax.set_xlim(0, t_max / scale)
  ax.set_ylim(-0.7, n_rows - 0.3)
  ax.set_xlabel(f"simulated time ({unit})")
  handles = _legend(schedule)
  fig.legend(handles=handles, loc="lower center", ncol=len(handles), fontsize=8, frameon=False)
  basic = schedule.summary_basic()
  ax.set_title(f"{schedule.settings.algorithm} on {env.name}: "
               f"{basic['simulated_time_ms'] / 3.6e6:.4f} h, "
               f"{basic['server_updates']:,} server updates"
               + (f" (showing the first {t_max / scale:.3g} {unit})" if t_max < t_end else ""),
               fontsize=10)
  fig.tight_layout(rect=(0, 0.6 / fig.get_figheight(), 1, 1))
  save_png(fig, path)


def _failure_marks(schedule, ax, n_rows: int, t_max: float, scale: float) -> None:
  """Environments with failures: each worker's time down (red, hatched) and, over the rows of
  a region's workers, the time the region is cut off (partition or outage; purple band)."""
  tl = schedule.env.failure_timeline()
  if tl is None:
    return
  env = schedule.env

  def spans(intervals):
    return [(a / scale, (min(b, t_max) - a) / scale) for a, b in intervals.pairs() if a < t_max]

  for w in range(env.num_workers):
    got = spans(tl.worker_down[w])
    if got:
      ax.broken_barh(got, (n_rows - 1 - w - 0.4, 0.8), facecolors="none",
                     edgecolors=_COLORS["crash"], hatch="xxx", linewidth=0.8)
  for region, cut in enumerate(tl.region_cut):
    rows = [n_rows - 1 - w for w in env.region_workers(region)]
    got = spans(cut)
    if got:
      ax.broken_barh(got, (min(rows) - 0.5, len(rows)), facecolors=_COLORS["cut"], alpha=0.18,
                     linewidth=0)


def _row_labels(schedule) -> list[str]:
  """One label per worker, then the servers' rows (GPS and LPS, the PS, or the all-reduce)."""
  s, env, plan = schedule.settings, schedule.env, schedule.plan
  server = s.algorithm_module.LABELS["server"]
  if plan.hierarchical:
    server_rows = ["GPS"] + [f"{server} {l} (r{r})" for l, r in enumerate(plan.server_region)]
  else:
    server_rows = ["all-reduce" if s.synchronous else f"{server} (r{plan.server_region[0]})"]
  return [f"w{w} r{env.worker_region[w]} s={env.worker_speed[w]:.2f} H={plan.worker_H[w]}"
          for w in range(env.num_workers)] + server_rows


def _server_rows(schedule, first_row: int, bars, ticks) -> None:
  """GPS updates and each LPS's exchanges; the all-reduces; or the PS updates."""
  plan, c = schedule.plan, schedule.columns
  if plan.hierarchical:
    ticks(first_row, c["t"][c["kind"] == ev.GPS_APPLY], 0.6)
    for l in range(plan.num_servers):
      row = first_row - 1 - l
      send = c["t"][(c["kind"] == ev.SEND) & (c["server"] == l)]
      applied = c["t"][(c["kind"] == ev.GPS_APPLY) & (c["server"] == l)]
      merge = c["t"][(c["kind"] == ev.MERGE) & (c["server"] == l)]
      bars(row, send[:len(applied)], applied, _COLORS["up"], 0.5, visible=True)
      bars(row, applied[:len(merge)], merge, _COLORS["down"], 0.5, visible=True)
  elif schedule.settings.synchronous:
    fragments = getattr(schedule.settings.algorithm_module, "communication", None)
    if fragments is not None:  # streaming: each fragment's all-reduce
      a, b = fragments(schedule)
    else:
      b = c["t"][c["kind"] == ev.SYNC]
      a = b - plan.allreduce_ms
    bars(0, a, b, _COLORS["communication"], 0.5, visible=True)
  else:
    ticks(0, c["t"][c["kind"] == ev.ARRIVE], 0.3)


def _legend(schedule) -> list:
  from matplotlib.patches import Patch  # pylint: disable=g-import-not-at-top
  server = schedule.settings.algorithm_module.LABELS["server"]
  handles = [Patch(color=_COLORS["compute"], label="compute"),
             Patch(color=_COLORS["communication"], label="communication"),
             Patch(color=_COLORS["idle"], label="idle")]
  if schedule.plan.hierarchical:
    handles += [Patch(color=_COLORS["up"], label=f"Delta {server} -> GPS"),
                Patch(color=_COLORS["down"], label=f"global model GPS -> {server}"),
                Patch(color=_COLORS["tick"], label="GPS update")]
  elif not schedule.settings.synchronous:
    handles.append(Patch(color=_COLORS["tick"], label=f"{server} update"))
  if getattr(schedule.env, "link_sharing", "none") == "fair" and not schedule.settings.synchronous:
    handles.append(Patch(facecolor=_COLORS["communication"], edgecolor=_COLORS["shared"],
                         hatch="////", label="waiting on shared links"))
  tl = schedule.env.failure_timeline()
  if tl is not None:  # legend entries only for what happened
    if any(tl.worker_down):
      handles.append(Patch(facecolor="none", edgecolor=_COLORS["crash"], hatch="xxx",
                           label="worker down"))
    if any(tl.region_cut):
      handles.append(Patch(color=_COLORS["cut"], alpha=0.3, label="region cut off"))
  return handles


def staleness_histogram(schedule, path) -> None:
  """Staleness histogram PNG (server level; for halos also the GPS level of the Deltas)."""
  plt = pyplot()
  s = schedule.settings
  panels = [(s.algorithm_module.LABELS["server"] if schedule.plan.hierarchical else "server",
             server_staleness(schedule),
             "server versions between a round's start and its arrival")]
  if schedule.plan.hierarchical:
    panels.append(("GPS", gps_staleness(schedule),
                   "GPS versions between the LPS's last merged model and the Delta's apply"))
  fig, axes = plt.subplots(1, len(panels), figsize=(6.2 * len(panels), 3.8), squeeze=False)
  for ax, (name, x, xlabel) in zip(axes[0], panels):
    if len(x):
      counts = np.bincount(x)
      ax.bar(np.arange(len(counts)), counts, width=0.85, color="#2b6cb0")
      ax.axvline(float(x.mean()), color="#c53030", linestyle="--", linewidth=1,
                 label=f"mean {x.mean():.2f}")
      ax.legend(fontsize=8)
    ax.set_title(f"{name} staleness ({len(x):,} updates)", fontsize=10)
    ax.set_xlabel(xlabel, fontsize=8)
    ax.set_ylabel("updates")
  fig.suptitle(f"{s.algorithm} on {schedule.env.name}", fontsize=10)
  fig.tight_layout()
  save_png(fig, path)
