"""What a schedule looks like, in numbers: summary, staleness, utilisation, bytes per link.

Everything here reads a Schedule's columns (vectorised numpy); the pictures of the same things
are in plots.py.

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
  link busy time            link_sharing fair, async/halos: per directed link, the time it carried
      at least one message (flows in the timing convention: both legs of a round on the
      server -> worker link); shared-link wait: the time messages lost to other messages on
      their links (duration - duration alone, summed over the messages through by the stop).
  failures                  environments with failures (docs/schedule.md, "Failures"): a lost
      round is one without an arrival whose worker went down after its start and before the
      stop; its compute and communication are drawn and counted up to the crash. `failures` in
      the summary: lost rounds and their local steps, per worker the time down and the time
      idle while up, per region the time cut off (partition or outage) and down (outage), and
      for synchronous algorithms the time rounds took beyond their failure-free length.
"""
from __future__ import annotations

import numpy as np

from halos_jax import network
from halos_jax.network import jitter as jitter_lib
from halos_jax.schedule import kinds as ev


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


def sharing_record(schedule):
  """The flow simulator's record of a `link_sharing: fair` async/halos schedule (rebuilt from
  the environment and settings for a schedule read back from JSON Lines); None otherwise."""
  if schedule.env.link_sharing != "fair" or schedule.settings.synchronous:
    return None
  if schedule.sharing is None:
    schedule.sharing = schedule.settings.algorithm_module.build(
        schedule.env, schedule.settings).sharing
  return schedule.sharing


def _download_ms(schedule, t_start: np.ndarray) -> np.ndarray:
  """fair sharing: each round's download time (inf where it was not through by the stop)."""
  end = sharing_record(schedule).download_end[:len(t_start)]
  return np.where(np.isnan(end), np.inf, end - t_start)


def worker_intervals(schedule) -> dict[str, list[tuple[np.ndarray, np.ndarray]]]:
  """Per kind ('compute', 'communication'; with `link_sharing: fair` also 'shared_wait', the
  part of each transfer beyond its time alone on its links) and worker: (starts, ends) arrays,
  clipped to the simulated time and sorted by start."""
  plan = schedule.plan
  r = schedule.rounds()
  t_end = schedule.summary_basic()["simulated_time_ms"]
  w, t_s = r["worker"], r["t_start"]
  c = plan.compute_ms[w]
  if schedule.env.compute_jitter is not None:  # each round's own compute (network/jitter.py)
    c = c * jitter_lib.Factors(schedule.env.compute_jitter, schedule.env.num_workers).of_rounds(w)
  net = network.from_environment(schedule.env)
  traced = hasattr(net, "transfer_end_ms")  # bandwidth traces: each transfer its own time
  fair = sharing_record(schedule) is not None  # fair sharing: each transfer its own time
  fragments = getattr(schedule.settings.algorithm_module, "communication", None)
  if schedule.env.has_failures:  # each round on the failure timeline, cut at its crash
    pieces = _failure_pieces(schedule, r, c)
  elif fragments is not None:  # streaming: each fragment's all-reduce, for every worker
    a, b = fragments(schedule)
    c = schedule.settings.step_time_ms * r["H"] / schedule.env.worker_speed[w]  # segments
    w_count = schedule.env.num_workers
    pieces = [("compute", w, t_s, t_s + c),
              ("communication", np.tile(np.arange(w_count), len(a)), np.repeat(a, w_count),
               np.repeat(b, w_count))]
  elif schedule.settings.synchronous:
    done = ~np.isnan(r["t_arrive"])
    t_a = r["t_arrive"][done]
    ar_start = t_a - plan.allreduce_ms
    if traced:  # the all-reduce starts when the round's slowest worker is done
      w_count = schedule.env.num_workers
      slowest = np.maximum.reduceat(c, np.arange(0, len(c), w_count))
      ar_start = (t_s + np.repeat(slowest, w_count)[:len(c)])[done]
    pieces = [("compute", w, t_s, t_s + c),
              ("communication", w[done], ar_start, t_a)]  # the all-reduce
  else:
    x, u = plan.transfer_ms[w], plan.upload_ms[w]
    if traced:  # download from each round's start; upload up to its arrival (or the stop)
      src = np.asarray(plan.server_region)[plan.worker_server[w]]
      down = schedule.settings.bytes_of("download")
      x = np.array([net.transfer_end_ms(int(a), int(b), down, float(t)) - t
                    for a, b, t in zip(src, schedule.env.worker_region[w], t_s)])
      t_a = r["t_arrive"]
      u = np.where(np.isnan(t_a), np.inf, t_a - (t_s + x + c))
    shared = []
    if fair:  # the simulator's download ends; the upload up to the arrival (or the stop)
      x_alone, u_alone = x, u
      x = _download_ms(schedule, t_s)
      t_a = r["t_arrive"]
      u = np.where(np.isnan(t_a), np.inf, t_a - (t_s + x + c))
      # What each transfer lost to the others on its links: the end of it beyond its time alone.
      # (An upload still under way at the stop is not counted.)
      u_done = np.where(np.isnan(t_a), u_alone, u)
      shared = [("shared_wait", w, t_s + np.minimum(x_alone, x), t_s + x),
                ("shared_wait", w, t_s + x + c + np.minimum(u_alone, u_done),
                 t_s + x + c + u_done)]
    pieces = [("compute", w, t_s + x, t_s + x + c),
              ("communication", w, t_s, t_s + x),  # download of the snapshot
              ("communication", w, t_s + x + c, t_s + x + c + u)] + shared  # upload
  out = {}
  names = ("compute", "communication") + (
      ("shared_wait",) if any(p[0] == "shared_wait" for p in pieces) else ())
  for name in names:
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


def _crash_times(schedule, r: dict) -> np.ndarray:
  """Per round: the time its worker went down if the round is lost (no arrival, a crash of its
  worker after its start and before the stop), else inf."""
  tl = schedule.env.failure_timeline()
  t_end = schedule.summary_basic()["simulated_time_ms"]
  out = np.full(len(r["worker"]), np.inf)
  for i in np.flatnonzero(np.isnan(r["t_arrive"])).tolist():
    crash = tl.worker_down[int(r["worker"][i])].next_start(float(r["t_start"][i]), t_end)
    if crash is not None:
      out[i] = crash[0]
  return out


def _failure_pieces(schedule, r: dict, c: np.ndarray) -> list:
  """worker_intervals' pieces with failures: transfers when their link is up (a cut transfer
  starts again), a rejoining synchronous worker's model download, every piece of a lost round
  cut at its crash."""
  env, plan, s = schedule.env, schedule.plan, schedule.settings
  tl = env.failure_timeline()
  w, t_s = r["worker"], r["t_start"]
  crash = _crash_times(schedule, r)
  region = env.worker_region[w]
  pieces = []
  if s.synchronous:
    cols = schedule.columns
    sync_t = cols["t"][cols["kind"] == ev.SYNC]
    k = np.searchsorted(sync_t, t_s, side="right") - 1
    begin = np.where(k >= 0, sync_t[np.maximum(k, 0)], 0.0)
    # A start after its round's beginning, or after a round of its worker that did not arrive,
    # rejoins: it downloads the model first.
    prev_lost = np.zeros(len(w), dtype=bool)
    last = {}
    for i, wk in enumerate(w.tolist()):
      if wk in last:
        prev_lost[i] = np.isnan(r["t_arrive"][last[wk]])
      last[wk] = i
    rejoin = (t_s > begin) | prev_lost
    size = s.bytes_of("download")
    net = network.from_environment(env)
    g = t_s.copy()
    dl = np.zeros(len(w))
    for i in np.flatnonzero(rejoin).tolist():
      d = net.transfer_ms(0, int(region[i]), size)
      g[i] = tl.transfer_end(0, int(region[i]), float(t_s[i]), d)
      dl[i] = d
    done = ~np.isnan(r["t_arrive"])
    t_a = r["t_arrive"][done]
    pieces = [("compute", w, g, np.minimum(g + c, crash)),
              ("communication", w, g - dl, np.minimum(g, crash)),
              ("communication", w[done], t_a - plan.allreduce_ms, t_a)]
    return pieces
  x, u = plan.transfer_ms[w], plan.upload_ms[w]
  src = np.asarray(plan.server_region)[plan.worker_server[w]]
  d_end = np.array([tl.transfer_end(int(a), int(b), float(t), float(d))
                    for a, b, t, d in zip(src, region, t_s, x)])
  ready = d_end + c
  u_end = np.array([tl.transfer_end(int(a), int(b), float(t), float(d))
                    for a, b, t, d in zip(src, region, ready, u)])
  return [("compute", w, d_end, np.minimum(ready, crash)),
          ("communication", w, d_end - x, np.minimum(d_end, crash)),
          ("communication", w, u_end - u, np.minimum(u_end, crash))]


def failure_summary(schedule) -> dict:
  """The `failures` entry of the summary (environments with failures; see module docstring)."""
  env, plan = schedule.env, schedule.plan
  tl = env.failure_timeline()
  t_end = schedule.summary_basic()["simulated_time_ms"]
  r = schedule.rounds()
  lost = np.isfinite(_crash_times(schedule, r))
  down = tl.worker_down_ms(t_end)
  iv = worker_intervals(schedule)
  idle = []
  for wk in range(env.num_workers):
    busy = sum(float(np.sum(iv[k][wk][1] - iv[k][wk][0])) for k in iv)
    idle.append(max(0.0, t_end - busy - down[wk]))
  out = {
      "failures": sum(1 for f in tl.failures if f.at_ms < t_end),
      "policy": tl.policy.to_dict(),
      "lost_rounds": int(lost.sum()),
      "lost_local_steps": int(r["H"][lost].sum()),
      "worker_down_ms": down,
      "worker_down_ms_total": float(sum(down)),
      "idle_ms": idle,
      "idle_ms_total": float(sum(idle)),
      "region_cut_ms": [c.overlap(0.0, t_end) for c in tl.region_cut],
      "region_down_ms": [o.overlap(0.0, t_end) for o in tl.region_out],
  }
  if schedule.settings.synchronous:
    c = schedule.columns
    sync_t = c["t"][c["kind"] == ev.SYNC]
    length = np.diff(np.concatenate(([0.0], sync_t)))
    out["round_delay_ms"] = float(np.maximum(length - float(plan.round_ms[0]), 0.0).sum())
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
  size = {k: float(v) for k, v in s.message_sizes().items()}
  out = np.zeros((env.num_regions, env.num_regions), dtype=np.float64)
  t_end = schedule.summary_basic()["simulated_time_ms"]
  if s.synchronous:
    w_count = env.num_workers
    if w_count == 1:
      return out
    reduced = getattr(s.algorithm_module, "allreduced_bytes", None)  # streaming: fragments
    if reduced is None:
      total = size["upload"] * int(np.count_nonzero(c["kind"] == ev.SYNC))
    else:
      total = reduced(schedule)
    per_hop = 2 * (w_count - 1) / w_count * total
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
  if sharing_record(schedule) is not None:
    down_done = r["t_start"] + _download_ms(schedule, r["t_start"]) <= t_end
  else:
    down_done = r["t_start"] + plan.transfer_ms[w] <= t_end
  np.add.at(out, (srv_reg[down_done], wrk_reg[down_done]), size["download"])
  up_done = ~np.isnan(r["t_arrive"])
  np.add.at(out, (wrk_reg[up_done], srv_reg[up_done]), size["upload"])
  if plan.hierarchical:  # Deltas up to the GPS, global models back down
    lps_reg = np.asarray(plan.server_region)
    per_event = getattr(s.algorithm_module, "exchange_bytes", None)  # streaming: fragments
    for kind, frm_to, nb in ((ev.GPS_APPLY, lambda l: (lps_reg[l], 0), size["delta"]),
                             (ev.MERGE, lambda l: (0, lps_reg[l]), size["global"])):
      l = c["server"][c["kind"] == kind]
      a, b = frm_to(l)
      if per_event is not None:
        nb = per_event(schedule, kind)
      np.add.at(out, (np.broadcast_to(a, l.shape), np.broadcast_to(b, l.shape)), nb)
  return out


def _union_ms(a: np.ndarray, b: np.ndarray) -> float:
  """Total length of the union of the intervals [a_i, b_i)."""
  if len(a) == 0:
    return 0.0
  order = np.argsort(a, kind="stable")
  a, b = a[order], b[order]
  reach = np.maximum.accumulate(b)
  # An interval extends the union by what it reaches beyond everything before it.
  before = np.concatenate(([-np.inf], reach[:-1]))
  return float(np.sum(np.maximum(0.0, b - np.maximum(a, before))))


def link_busy_ms(schedule) -> np.ndarray:
  """R x R float64: per directed link, the time at least one transfer was on it (the union of
  its transfers' intervals, clipped to the stop).

  With `link_sharing: fair` the flow simulator's own record; otherwise from the workers'
  communication (worker_intervals: each round's download and upload on the server -> worker
  link, the reference's rule; a synchronous all-reduce on every link of its ring) and, for
  hierarchies, each Delta's and global model's trip.
  """
  env, plan = schedule.env, schedule.plan
  rec = sharing_record(schedule)
  if rec is not None:
    return np.asarray(rec.busy_ms, dtype=np.float64)
  r_count = env.num_regions
  spans = {}  # (i, j) -> list of (starts, ends)

  def add(i, j, a, b):
    spans.setdefault((int(i), int(j)), []).append((np.asarray(a, float), np.asarray(b, float)))

  comm = worker_intervals(schedule)["communication"]
  if schedule.settings.synchronous:
    if env.num_workers > 1:
      a = np.concatenate([x for x, _ in comm])
      b = np.concatenate([y for _, y in comm])
      order = plan.ring.order
      for k, reg in enumerate(order):
        if len(order) == 1 or len(env.worker_speeds_raw[reg]) > 1:
          add(reg, reg, a, b)
        if len(order) > 1:
          add(reg, order[(k + 1) % len(order)], a, b)
  else:
    srv = np.asarray(plan.server_region)[plan.worker_server]
    for w, (a, b) in enumerate(comm):
      add(srv[w], env.worker_region[w], a, b)
    if plan.hierarchical:
      c = schedule.columns
      t_end = schedule.summary_basic()["simulated_time_ms"]
      t_of = {}
      for kind in (ev.SEND, ev.GPS_APPLY, ev.MERGE):
        sel = c["kind"] == kind
        t_of[kind] = dict(zip(c["exchange"][sel].tolist(), c["t"][sel].tolist()))
      lps_reg = np.asarray(plan.server_region)
      sel = c["kind"] == ev.SEND
      for e, l in zip(c["exchange"][sel].tolist(), c["server"][sel].tolist()):
        t0 = t_of[ev.SEND][e]
        t1 = t_of[ev.GPS_APPLY].get(e, t_end)
        add(lps_reg[l], 0, [t0], [min(t1, t_end)])
        if e in t_of[ev.GPS_APPLY]:
          add(0, lps_reg[l], [t1], [min(t_of[ev.MERGE].get(e, t_end), t_end)])
  out = np.zeros((r_count, r_count), dtype=np.float64)
  for (i, j), parts in spans.items():
    out[i, j] = _union_ms(np.concatenate([p[0] for p in parts]),
                          np.concatenate([p[1] for p in parts]))
  return out


def message_bytes(schedule) -> dict:
  """{kind: bytes} of the kinds of message the algorithm sends (docs/schedule.md, "Messages"):
  upload (worker -> server; the all-reduce of synchronous algorithms), download (server ->
  worker), delta and global (LPS <-> GPS)."""
  sizes = schedule.settings.message_sizes()
  if schedule.settings.synchronous:
    kinds = ("upload",)
  elif schedule.plan.hierarchical:
    kinds = ("upload", "download", "delta", "global")
  else:
    kinds = ("upload", "download")
  out = {k: sizes[k] for k in kinds}
  fragments = getattr(schedule.settings.algorithm_module, "fragment_sizes", None)
  if fragments is not None:  # streaming: the bytes of each fragment's message
    out["fragments"] = list(fragments(schedule.settings))
  return out


def summarize(schedule) -> dict:
  """The summary dict (JSON-serialisable); see `format_summary` for the printed form."""
  s, env, plan = schedule.settings, schedule.env, schedule.plan
  c = schedule.columns
  basic = schedule.summary_basic()
  r = schedule.rounds()
  arrived = ~np.isnan(r["t_arrive"])
  lb = link_bytes(schedule)
  busy = link_busy_ms(schedule)
  util = utilisation(schedule)
  staleness = {"server": _stats(server_staleness(schedule))}
  if plan.hierarchical:
    staleness["gps"] = _stats(gps_staleness(schedule))
  bound = s.total_local_steps * s.step_time_ms / float(env.worker_speed.sum())
  timing = {"round_ms": plan.round_ms.tolist(), "compute_ms": plan.compute_ms.tolist(),
            "transfer_ms": plan.transfer_ms.tolist()}
  if plan.upload_ms is not None and plan.upload_ms is not plan.transfer_ms:
    timing["upload_ms"] = plan.upload_ms.tolist()
  if plan.ring is not None:
    timing.update(allreduce_ms=plan.allreduce_ms, ring_bandwidth_gbps=plan.ring.bandwidth_gbps,
                  ring_order=list(plan.ring.order), ring_exact=plan.ring.exact)
  if plan.hierarchical:
    timing.update(lps_to_gps_ms=plan.up_ms.tolist(), gps_to_lps_ms=plan.down_ms.tolist())
  off = ~np.eye(env.num_regions, dtype=bool)
  out = {
      "algorithm": s.algorithm,
      "message_bytes": message_bytes(schedule),
      "env": env.name,
      "num_regions": env.num_regions,
      "num_workers": env.num_workers,
      "num_servers": plan.num_servers,
      "server_region": list(plan.server_region),
      "worker_H": plan.worker_H.tolist(),
      "simulated_time_ms": basic["simulated_time_ms"],
      "simulated_time_h": basic["simulated_time_ms"] / 3.6e6,
      "server_updates": basic["server_updates"],
      "server_updates_kind": s.algorithm_module.LABELS["server_updates"],
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
      "link_busy_ms": {f"{i}->{j}": float(busy[i, j]) for i in range(env.num_regions)
                       for j in range(env.num_regions) if busy[i, j] > 0},
  }
  if env.link_sharing != "none":  # (new keys only then: summaries without sharing unchanged)
    out["link_sharing"] = env.link_sharing
    rec = sharing_record(schedule)
    if rec is not None:
      out["shared_link_wait_ms"] = rec.wait_ms
  if env.has_failures:  # (only then: summaries without failures unchanged)
    out["failures"] = failure_summary(schedule)
  return out


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
  sizes = ", ".join(
      f"{k} {_human_bytes(v)}" if k != "fragments" else
      "fragments " + " + ".join(_human_bytes(b) for b in v)
      for k, v in s["message_bytes"].items())
  lines.append(f"message sizes      {sizes}")
  lines.append(f"bytes              total {_human_bytes(s['total_bytes'])}, inter-region "
               f"{_human_bytes(s['inter_region_bytes'])}")
  links = "  ".join(f"{k}: {_human_bytes(v)}" for k, v in s["link_bytes"].items())
  lines.append(f"  per link         {links}")
  busy = "  ".join(f"{k}: {v:,.0f} ms" for k, v in s.get("link_busy_ms", {}).items())
  lines.append(f"  busy per link    {busy}")
  if "shared_link_wait_ms" in s:
    lines.append(f"link sharing       {s['link_sharing']}: {s['shared_link_wait_ms']:,.1f} ms "
                 f"lost waiting on shared links")
  elif "link_sharing" in s:
    lines.append(f"link sharing       {s['link_sharing']}")
  if "failures" in s:
    f = s["failures"]
    line = (f"failures           {f['failures']:,} before the stop; lost rounds "
            f"{f['lost_rounds']:,} ({f['lost_local_steps']:,} local steps), workers down "
            f"{f['worker_down_ms_total']:,.0f} ms, idle while up {f['idle_ms_total']:,.0f} ms")
    if "round_delay_ms" in f:
      line += f", rounds delayed {f['round_delay_ms']:,.0f} ms"
    lines.append(line)
    cut = "  ".join(f"r{i}: {a:,.0f}/{b:,.0f} ms" for i, (a, b) in
                    enumerate(zip(f["region_cut_ms"], f["region_down_ms"])) if a > 0)
    if cut:
      lines.append(f"  regions cut/down {cut}")
  return "\n".join(lines)
