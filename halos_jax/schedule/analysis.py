"""What a schedule looks like: summary numbers, staleness, utilisation, bytes, and pictures.

Everything here reads a Schedule's columns (vectorised numpy); matplotlib (Agg backend) is
imported only by the two plotting functions.

Definitions:
  staleness (server level)  for a round applied at an async server (PS or LPS): the server
      versions between the worker's start and its arrival, i.e. updates by other rounds applied
      in between = version after applying - 1 - version at the start. Synchronous rounds: 0.
  staleness (GPS, halos)    for a Delta: GPS versions between the global model its LPS last
      merged (0 before the first merge) and the GPS version it is applied to
      = GPS version after applying - 1 - GPS version of that merged model.
  utilisation               per worker, the share of [0, simulated time] spent computing,
      communicating (async/halos: download + upload of the round; ddp/diloco: the all-reduce)
      and idle (the rest: waiting for the slowest worker, or a round cut by the stop).
  link bytes                bytes of the transfers completed by the stop, per directed link
      "i->j" (i = j: inside region i). ddp/diloco: each all-reduce moves 2 (W - 1) / W * B
      bytes over every hop of the ring of workers laid out region by region along the best
      ring of regions.
"""
from __future__ import annotations

import numpy as np

from halos_jax.schedule import events as ev


# ------------------------------------------------------------------------------------------------
# Numbers
# ------------------------------------------------------------------------------------------------


def server_staleness(schedule) -> np.ndarray:
  """Per arrived round, in arrival order: server versions between its start and its arrival."""
  c = schedule.columns
  ar = np.flatnonzero(c["kind"] == ev.ARRIVE)
  if schedule.settings.synchronous:
    return np.zeros(len(ar), dtype=np.int64)
  rounds = schedule.rounds()
  r = c["round"][ar]
  return (c["version"][ar].astype(np.int64) - 1 - rounds["start_version"][r])


def gps_staleness(schedule) -> np.ndarray:
  """halos: per applied Delta, in GPS order: GPS versions between the model its LPS last merged
  and the version it is applied to. Empty for other algorithms."""
  c = schedule.columns
  sel = np.flatnonzero(np.isin(c["kind"], (ev.SEND, ev.GPS_APPLY, ev.MERGE)))
  last_merged = [0] * schedule.num_servers
  gps_version, base, out = {}, {}, []
  for k, l, e, v in zip(c["kind"][sel].tolist(), c["server"][sel].tolist(),
                        c["exchange"][sel].tolist(), c["version"][sel].tolist()):
    if k == ev.SEND:
      base[e] = last_merged[l]
    elif k == ev.GPS_APPLY:
      gps_version[e] = v
      out.append(v - 1 - base[e])
    else:
      last_merged[l] = gps_version[e]
  return np.asarray(out, dtype=np.int64)


def _stats(x: np.ndarray) -> dict:
  if len(x) == 0:
    return {"count": 0}
  counts = np.bincount(x)
  return {
      "count": int(len(x)), "mean": float(x.mean()), "median": float(np.median(x)),
      "p90": float(np.percentile(x, 90)), "max": int(x.max()),
      "histogram": {str(i): int(n) for i, n in enumerate(counts) if n},
  }


def worker_intervals(schedule) -> dict[str, list[tuple[np.ndarray, np.ndarray]]]:
  """Per kind ('compute', 'communication') and worker: (starts, ends) arrays, clipped to the
  simulated time and sorted by start."""
  plan = schedule.plan
  r = schedule.rounds()
  t_end = schedule.summary_basic()["simulated_time_ms"]
  w, t_s = r["worker"], r["t_start"]
  c = plan.compute_ms[w]
  if schedule.settings.synchronous:
    done = ~np.isnan(r["t_arrive"])
    t_a = r["t_arrive"][done]
    pieces = [("compute", w, t_s, t_s + c),
              ("communication", w[done], t_a - plan.allreduce_ms, t_a)]  # the all-reduce
  else:
    x = plan.transfer_ms[w]
    pieces = [("compute", w, t_s + x, t_s + x + c),
              ("communication", w, t_s, t_s + x),  # download of the snapshot
              ("communication", w, t_s + x + c, t_s + 2 * x + c)]  # upload of the result
  out = {}
  for name in ("compute", "communication"):
    own = [p for p in pieces if p[0] == name]
    ws = np.concatenate([p[1] for p in own])
    a = np.minimum(np.concatenate([p[2] for p in own]), t_end)
    b = np.minimum(np.concatenate([p[3] for p in own]), t_end)
    keep = b > a
    ws, a, b = ws[keep], a[keep], b[keep]
    order = np.lexsort((a, ws))
    ws, a, b = ws[order], a[order], b[order]
    bounds = np.searchsorted(ws, np.arange(schedule.env.num_workers + 1))
    out[name] = [(a[bounds[k]:bounds[k + 1]], b[bounds[k]:bounds[k + 1]])
                 for k in range(schedule.env.num_workers)]
  return out


def utilisation(schedule) -> list[dict]:
  """Per worker: shares of the simulated time spent computing, communicating and idle."""
  t_end = schedule.summary_basic()["simulated_time_ms"]
  iv = worker_intervals(schedule)
  env, plan = schedule.env, schedule.plan
  out = []
  for wk in range(env.num_workers):
    busy = {k: float(np.sum(iv[k][wk][1] - iv[k][wk][0])) for k in iv}
    comp = busy["compute"] / t_end if t_end > 0 else 0.0
    comm = busy["communication"] / t_end if t_end > 0 else 0.0
    out.append({"worker": wk, "region": int(env.worker_region[wk]),
                "speed": float(env.worker_speed[wk]), "H": int(plan.worker_H[wk]),
                "compute": comp, "communication": comm, "idle": max(0.0, 1.0 - comp - comm)})
  return out


def link_bytes(schedule) -> np.ndarray:
  """R x R float64: bytes of the transfers completed by the stop, per link (row = from)."""
  env, plan, s = schedule.env, schedule.plan, schedule.settings
  c = schedule.columns
  nb = float(s.message_bytes)
  out = np.zeros((env.num_regions, env.num_regions), dtype=np.float64)
  t_end = schedule.summary_basic()["simulated_time_ms"]
  if s.synchronous:
    w_count = env.num_workers
    if w_count == 1:
      return out
    syncs = int(np.count_nonzero(c["kind"] == ev.SYNC))
    per_hop = 2 * (w_count - 1) / w_count * nb * syncs
    order = plan.ring.order
    for k, reg in enumerate(order):
      n_r = len(env.worker_speeds_raw[reg])
      if len(order) == 1:
        out[reg, reg] += w_count * per_hop  # a ring of W workers inside one region
      else:
        out[reg, reg] += (n_r - 1) * per_hop
        out[reg, order[(k + 1) % len(order)]] += per_hop
    return out
  r = schedule.rounds()
  w = r["worker"]
  srv_reg = np.asarray(plan.server_region)[plan.worker_server[w]]
  wrk_reg = env.worker_region[w]
  down_done = r["t_start"] + plan.transfer_ms[w] <= t_end
  np.add.at(out, (srv_reg[down_done], wrk_reg[down_done]), nb)
  up_done = ~np.isnan(r["t_arrive"])
  np.add.at(out, (wrk_reg[up_done], srv_reg[up_done]), nb)
  if s.algorithm == "halos":
    lps_reg = np.asarray(plan.server_region)
    for kind, frm_to in ((ev.GPS_APPLY, lambda l: (lps_reg[l], 0)),
                         (ev.MERGE, lambda l: (0, lps_reg[l]))):
      l = c["server"][c["kind"] == kind]
      a, b = frm_to(l)
      np.add.at(out, (np.broadcast_to(a, l.shape), np.broadcast_to(b, l.shape)), nb)
  return out


def summarize(schedule) -> dict:
  """The summary dict (JSON-serialisable); see `format_summary` for the printed form."""
  s, env, plan = schedule.settings, schedule.env, schedule.plan
  c = schedule.columns
  basic = schedule.summary_basic()
  r = schedule.rounds()
  arrived = ~np.isnan(r["t_arrive"])
  lb = link_bytes(schedule)
  util = utilisation(schedule)
  staleness = {"server": _stats(server_staleness(schedule))}
  if s.algorithm == "halos":
    staleness["gps"] = _stats(gps_staleness(schedule))
  bound = s.total_local_steps * s.step_time_ms / float(env.worker_speed.sum())
  timing = {"round_ms": plan.round_ms.tolist(), "compute_ms": plan.compute_ms.tolist(),
            "transfer_ms": plan.transfer_ms.tolist()}
  if plan.ring is not None:
    timing.update(allreduce_ms=plan.allreduce_ms, ring_bandwidth_gbps=plan.ring.bandwidth_gbps,
                  ring_order=list(plan.ring.order), ring_exact=plan.ring.exact)
  if s.algorithm == "halos":
    timing.update(lps_to_gps_ms=plan.up_ms.tolist(), gps_to_lps_ms=plan.down_ms.tolist())
  off = ~np.eye(env.num_regions, dtype=bool)
  return {
      "algorithm": s.algorithm,
      "env": env.name,
      "num_regions": env.num_regions,
      "num_workers": env.num_workers,
      "num_servers": plan.num_servers,
      "server_region": list(plan.server_region),
      "worker_H": plan.worker_H.tolist(),
      "simulated_time_ms": basic["simulated_time_ms"],
      "simulated_time_h": basic["simulated_time_ms"] / 3.6e6,
      "server_updates": basic["server_updates"],
      "server_updates_kind": {"halos": "GPS updates", "async_local_sgd": "PS updates"}.get(
          s.algorithm, "rounds"),
      "local_steps": basic["local_steps"],
      "local_steps_computed": int(r["H"][arrived].sum()),
      "rounds_dispatched": int(len(r["worker"])),
      "rounds_arrived": int(arrived.sum()),
      "sequences_dispatched": int(r["data_end"].max()) if len(r["data_end"]) else 0,
      "exchanges": int(np.count_nonzero(c["kind"] == ev.SEND)),
      "events": len(schedule),
      "schedule_sha256": schedule.sha256(),
      "compute_only_bound_ms": bound,
      "compute_only_bound_h": bound / 3.6e6,
      "timing": timing,
      "utilisation": {
          "per_worker": util,
          "mean_compute": float(np.mean([u["compute"] for u in util])),
          "mean_communication": float(np.mean([u["communication"] for u in util])),
          "mean_idle": float(np.mean([u["idle"] for u in util])),
      },
      "staleness": staleness,
      "link_bytes": {f"{i}->{j}": float(lb[i, j]) for i in range(env.num_regions)
                     for j in range(env.num_regions) if lb[i, j] > 0},
      "inter_region_bytes": float(lb[off].sum()),
      "total_bytes": float(lb.sum()),
  }


def _human_bytes(x: float) -> str:
  for unit in ("B", "KB", "MB", "GB", "TB", "PB"):
    if abs(x) < 1000 or unit == "PB":
      return f"{x:.1f} {unit}" if unit != "B" else f"{x:.0f} B"
    x /= 1000
  return str(x)


def format_summary(summary: dict) -> str:
  """A readable multi-line text of `summarize`'s dict."""
  s = summary
  lines = [
      f"algorithm          {s['algorithm']} on {s['env']} ({s['num_regions']} regions, "
      f"{s['num_workers']} workers, {s['num_servers']} server(s))",
      f"simulated time     {s['simulated_time_ms']:,.3f} ms = {s['simulated_time_h']:.4f} h "
      f"(compute-only bound {s['compute_only_bound_h']:.4f} h)",
      f"server updates     {s['server_updates']:,} ({s['server_updates_kind']})",
      f"local steps        {s['local_steps']:,} counted, {s['local_steps_computed']:,} computed; "
      f"{s['rounds_arrived']:,}/{s['rounds_dispatched']:,} rounds arrived; "
      f"{s['sequences_dispatched']:,} sequences dispatched",
      f"events             {s['events']:,}",
      f"schedule sha256    {s['schedule_sha256']}",
  ]
  tm = s["timing"]
  if "ring_bandwidth_gbps" in tm:
    lines.append(f"ring               b* = {tm['ring_bandwidth_gbps']} Gbps, order "
                 f"{tm['ring_order']}, all-reduce {tm['allreduce_ms']:,.3f} ms, round "
                 f"{tm['round_ms'][0]:,.3f} ms")
  u = s["utilisation"]
  lines.append(f"utilisation        mean compute {u['mean_compute']:.1%}, communication "
               f"{u['mean_communication']:.1%}, idle {u['mean_idle']:.1%}")
  for row in u["per_worker"]:
    lines.append(f"  worker {row['worker']:>3} r{row['region']} s={row['speed']:.3f} "
                 f"H={row['H']:>3}  compute {row['compute']:6.1%}  comm "
                 f"{row['communication']:6.1%}  idle {row['idle']:6.1%}")
  for level, st in s["staleness"].items():
    if st["count"]:
      lines.append(f"staleness ({level:>6}) n={st['count']:,} mean {st['mean']:.2f} median "
                   f"{st['median']:.1f} p90 {st['p90']:.1f} max {st['max']}")
  lines.append(f"bytes              total {_human_bytes(s['total_bytes'])}, inter-region "
               f"{_human_bytes(s['inter_region_bytes'])}")
  links = "  ".join(f"{k}: {_human_bytes(v)}" for k, v in s["link_bytes"].items())
  lines.append(f"  per link         {links}")
  return "\n".join(lines)


# ------------------------------------------------------------------------------------------------
# Pictures
# ------------------------------------------------------------------------------------------------


def _pyplot():
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


def _save(fig, path) -> None:
  """savefig to a temporary sibling, then rename (no partial PNG on failure)."""
  import os  # pylint: disable=g-import-not-at-top
  from pathlib import Path  # pylint: disable=g-import-not-at-top
  path = Path(path)
  tmp = ev.temporary_sibling(path)
  try:
    fig.savefig(tmp, format="png", dpi=110)
    os.replace(tmp, path)
  finally:
    if tmp.exists():
      tmp.unlink()


def gantt(schedule, path, t_max_ms: float | None = None) -> None:
  """Gantt chart PNG: per worker compute / communication / idle; per server its exchanges.

  Args:
    schedule: the Schedule.
    path: output PNG (written atomically).
    t_max_ms: show [0, t_max_ms] only (default: the whole run).
  """
  plt = _pyplot()
  s, env, plan = schedule.settings, schedule.env, schedule.plan
  c = schedule.columns
  t_end = schedule.summary_basic()["simulated_time_ms"]
  t_max = min(t_end, t_max_ms) if t_max_ms else t_end
  unit, scale = _time_unit(t_max)
  iv = worker_intervals(schedule)
  w_count = env.num_workers
  server_rows = (["GPS"] + [f"LPS {l} (r{r})" for l, r in enumerate(plan.server_region)]
                 if s.algorithm == "halos" else ["PS (r0)" if not s.synchronous else "all-reduce"])
  labels = [f"w{w} r{env.worker_region[w]} s={env.worker_speed[w]:.2f} H={plan.worker_H[w]}"
            for w in range(w_count)] + server_rows
  n_rows = len(labels)
  fig, ax = plt.subplots(figsize=(13, 0.32 * n_rows + 1.6))
  colors = {"compute": "#2b6cb0", "communication": "#ed8936", "idle": "#d5dbe3",
            "up": "#c53030", "down": "#38a169", "tick": "#1a202c"}

  min_width = t_max / 1500  # about one pixel: server exchanges stay visible when short

  def bars(row, starts, ends, color, height=0.8, visible=False):
    keep = starts < t_max
    ends = np.minimum(ends[keep], t_max)
    starts = starts[keep]
    widths = np.maximum(ends - starts, min_width) if visible else ends - starts
    spans = list(zip((starts / scale).tolist(), (widths / scale).tolist()))
    if spans:
      ax.broken_barh(spans, (row - height / 2, height), facecolors=color, linewidth=0)

  for w in range(w_count):
    row = n_rows - 1 - w
    ax.broken_barh([(0, t_max / scale)], (row - 0.4, 0.8), facecolors=colors["idle"])
    bars(row, *iv["compute"][w], colors["compute"])
    bars(row, *iv["communication"][w], colors["communication"])
  if s.algorithm == "halos":
    gps_row = n_rows - 1 - w_count
    t_apply = c["t"][c["kind"] == ev.GPS_APPLY]
    ax.vlines(t_apply[t_apply <= t_max] / scale, gps_row - 0.4, gps_row + 0.4,
              colors=colors["tick"], linewidth=0.6)
    for l in range(plan.num_servers):
      row = gps_row - 1 - l
      send = c["t"][(c["kind"] == ev.SEND) & (c["server"] == l)]
      applied = c["t"][(c["kind"] == ev.GPS_APPLY) & (c["server"] == l)]
      merge = c["t"][(c["kind"] == ev.MERGE) & (c["server"] == l)]
      bars(row, send[:len(applied)], applied, colors["up"], 0.5, visible=True)
      bars(row, applied[:len(merge)], merge, colors["down"], 0.5, visible=True)
  elif s.synchronous:
    row = 0
    t_sync = c["t"][c["kind"] == ev.SYNC]
    bars(row, t_sync - plan.allreduce_ms, t_sync, colors["communication"], 0.5, visible=True)
  else:
    row = 0
    t_arr = c["t"][c["kind"] == ev.ARRIVE]
    ax.vlines(t_arr[t_arr <= t_max] / scale, row - 0.4, row + 0.4, colors=colors["tick"],
              linewidth=0.3)
  ax.set_yticks(range(n_rows))
  ax.set_yticklabels(labels[::-1], fontsize=7)
  ax.set_xlim(0, t_max / scale)
  ax.set_ylim(-0.7, n_rows - 0.3)
  ax.set_xlabel(f"simulated time ({unit})")
  from matplotlib.patches import Patch  # pylint: disable=g-import-not-at-top
  handles = [Patch(color=colors["compute"], label="compute"),
             Patch(color=colors["communication"], label="communication"),
             Patch(color=colors["idle"], label="idle")]
  if s.algorithm == "halos":
    handles += [Patch(color=colors["up"], label="Delta LPS -> GPS"),
                Patch(color=colors["down"], label="global model GPS -> LPS"),
                Patch(color=colors["tick"], label="GPS update")]
  elif not s.synchronous:
    handles.append(Patch(color=colors["tick"], label="PS update"))
  fig.legend(handles=handles, loc="lower center", ncol=len(handles), fontsize=8, frameon=False)
  basic = schedule.summary_basic()
  ax.set_title(f"{s.algorithm} on {env.name}: {basic['simulated_time_ms'] / 3.6e6:.4f} h, "
               f"{basic['server_updates']:,} server updates"
               + (f" (showing the first {t_max / scale:.3g} {unit})" if t_max < t_end else ""),
               fontsize=10)
  fig.tight_layout(rect=(0, 0.6 / fig.get_figheight(), 1, 1))
  _save(fig, path)
  plt.close(fig)


def staleness_histogram(schedule, path) -> None:
  """Staleness histogram PNG (server level; for halos also the GPS level of the Deltas)."""
  plt = _pyplot()
  s = schedule.settings
  panels = [("server" if s.algorithm != "halos" else "LPS",
             server_staleness(schedule),
             "server versions between a round's start and its arrival")]
  if s.algorithm == "halos":
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
  _save(fig, path)
  plt.close(fig)


# Names used elsewhere in the project (halos_jax/train.py).
plot_gantt = gantt
plot_staleness = staleness_histogram
