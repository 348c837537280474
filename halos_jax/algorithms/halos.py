"""HALoS (docs/algorithms.md 2.6): an LPS per group of workers of one region, the GPS in region 0.

LPS l holds workers [l * wpl, (l + 1) * wpl) of one region and keeps a version v_l and the
version at its last merge vhat_l. Timing (reference semantics):
  worker round      2 * transfer(LPS region -> worker region) + step_time_ms * H_w / s_w
  Delta to the GPS  transfer(LPS region -> region 0)
  global model back transfer(region 0 -> LPS region), leaving right after the GPS applied it

    on arrive at LPS l:  v_l += 1
                         if v_l == vhat_l + K: send (K counted from the LAST MERGE; equality,
                                               so at most one exchange in flight per LPS)
                         restart the worker at once from the current (pre-merge) x_l
    on gps_apply:        GPS version += 1, counts the steps the Delta reports; stop when the
                         count reaches total_local_steps
    on merge:            vhat_l = v_l

A send reports every local step the LPS received since its previous send, including those
applied while the previous exchange was in flight.

With `link_sharing: fair` (network/sharing.py) every message (a worker's download and upload,
a Delta, a global model) is a flow sharing its links max-min fairly with the others in flight:
`_fair_event_loop` runs the same state machines with the flow simulator's completions in the
heap; the events are the same, only their times change.

With failures in the environment (docs/schedule.md, "Failures") `_failure_event_loop` runs
them on the failure timeline: a crash loses the worker's round in flight; an LPS cut from the
GPS keeps serving its workers (policy `lps: continue`; with `wait` they pause) and sends its
Delta when the link returns; an outage of a region stops its workers and its LPS.

References:
  Kim et al., "HALoS: Hierarchical Asynchronous Local SGD over Slow Networks for
  Geo-Distributed Large Language Model Training", ICML 2025 (arXiv 2506.04531).
"""
from __future__ import annotations

import heapq
import math
from array import array
from typing import NamedTuple

import numpy as np

from halos_jax.algorithms import base
from halos_jax import fragments as fragments_lib
from halos_jax import network
from halos_jax.network import jitter as jitter_lib
from halos_jax.network import sharing
from halos_jax.schedule import _assemble
from halos_jax.schedule import events as ev
from halos_jax.schedule import failures
from halos_jax.schedule import plan as plan_lib
from halos_jax.schedule.environment import Environment
from halos_jax.schedule.settings import InvalidSettings, ScheduleSettings

SYNCHRONOUS = False
REQUIRED_SETTINGS = ("K", "workers_per_lps")
CONFIG_BLOCKS = {"lps": "delayed_nesterov", "gps": "delayed_nesterov"}  # configs/halos.py
EVALUATED_MODEL = "the GPS's global model"
LABELS = {"server_updates": "GPS updates", "server": "LPS"}
PAPER_SPEEDUP = None  # the algorithm the paper's speed-ups are claimed for
COMPARISON_REFERENCE = True
SUPPORTS_FAILURES = True  # _failure_event_loop: crashes, partitions (policy lps), outages
GPS_REGION = 0  # the GPS lives in region 0


local_H = base.configured_H
rescale = base.configured_rescale


def _lps_layout(env: Environment, wpl: int) -> tuple[np.ndarray, tuple]:
  """worker_server and LPS regions for LPS l = workers [l * wpl, (l + 1) * wpl)."""
  w = env.num_workers
  sizes = ", ".join(str(len(s)) for s in env.worker_speeds_raw)
  if w % wpl:
    raise InvalidSettings(
        f"workers_per_lps={wpl} does not divide the {w} workers of the environment (regions "
        f"have {sizes} workers); LPS l holds workers [l*{wpl}, (l+1)*{wpl})")
  regions = []
  for l in range(w // wpl):
    group = env.worker_region[l * wpl:(l + 1) * wpl]
    if np.any(group != group[0]):
      raise InvalidSettings(
          f"workers_per_lps={wpl}: LPS {l} would hold workers {l * wpl}..{(l + 1) * wpl - 1} "
          f"from regions {sorted(set(group.tolist()))}; an LPS's workers must share one region "
          f"(regions have {sizes} workers)")
    regions.append(int(group[0]))
  return np.arange(w, dtype=np.int64) // wpl, tuple(regions)


def make_plan(env: Environment, settings: ScheduleSettings) -> plan_lib.Plan:
  """LPS l serves workers [l * wpl, (l + 1) * wpl) of one region; the GPS is in region 0."""
  if settings.algorithm == "halos" and settings.fragments is not None:
    raise InvalidSettings("fragments: HALoS exchanges the whole model; its streaming form is "
                          "algorithm 'streaming_halos'", field="fragments")
  worker_server, server_region = _lps_layout(env, settings.workers_per_lps)
  return plan_lib.server_plan(env, settings, worker_server, server_region,
                              gps_region=GPS_REGION)


def exchange_sizes(settings: ScheduleSettings) -> tuple[list[int], list[int]]:
  """(Delta bytes, global-model bytes) of each fragment an exchange may carry: one of each for
  HALoS; P of each in the streaming form (settings.fragments: `fragment_bytes`, or the
  messages split evenly)."""
  delta, glob = settings.bytes_of("delta"), settings.bytes_of("global")
  p = settings.fragments or 1
  if p == 1:
    return [delta], [glob]
  if settings.fragment_bytes is not None:
    return list(settings.fragment_bytes), list(settings.fragment_bytes)
  return fragments_lib.even_split(delta, p), fragments_lib.even_split(glob, p)


ARRIVE_SEND = 7  # a processed arrival that also triggered a send (loop-internal code)


class _Loop(NamedTuple):
  """What the event loop records: processed events (payload << 3 | kind, and t) and the
  exchanges (LPS, v_l and vhat_l at the send, steps reported, v_l at the merge)."""
  codes: array
  times: array
  ex_lps: array
  ex_v: array
  ex_vhat: array
  ex_steps: array
  ex_vmerge: dict
  counted: int
  gps_version: int
  ex_frag: array | None = None  # the fragment of each exchange (streaming form), else None
  record: sharing.Record | None = None  # link_sharing fair: the flow simulator's record


class _Exchanges:
  """The LPS counters (v_l, vhat_l + K, steps received since the last send) and the exchanges
  opened so far, shared by the event loops: per exchange its LPS, v_l and vhat_l at the send,
  the steps it reports, its fragment (exchange n of an LPS carries fragment n mod P) and v_l
  at its merge. The loops keep the per-arrival work inline (`v`, `acc`, `send_at`)."""

  def __init__(self, num_lps: int, k_updates: int, num_fragments: int = 1):
    self.k = k_updates
    self.p = num_fragments
    self.v = [0] * num_lps  # v_l
    self.send_at = [k_updates] * num_lps  # vhat_l + K
    self.acc = [0] * num_lps  # local steps received since the LPS's previous send
    self.sent = [0] * num_lps  # exchanges of each LPS so far
    self.lps, self.ver, self.vhat, self.steps, self.frag = (array("q") for _ in range(5))
    self.vmerge = {}

  def send(self, l: int) -> tuple[int, int]:
    """LPS l sends its Delta now: records the exchange; returns (exchange id, fragment)."""
    e, f = len(self.lps), self.sent[l] % self.p
    self.sent[l] += 1
    self.lps.append(l)
    self.ver.append(self.v[l])
    self.vhat.append(self.send_at[l] - self.k)
    self.steps.append(self.acc[l])
    self.frag.append(f)
    self.acc[l] = 0
    return e, f

  def merge(self, e: int) -> None:
    """Exchange e's global model is merged: vhat_l = v_l, the next Delta is due K later."""
    l = self.lps[e]
    self.vmerge[e] = self.v[l]
    self.send_at[l] = self.v[l] + self.k

  def loop(self, codes, times, counted: int, gps_version: int, record=None) -> _Loop:
    return _Loop(codes, times, self.lps, self.ver, self.vhat, self.steps, self.vmerge, counted,
                 gps_version, self.frag if self.p > 1 else None, record)


def build(env: Environment, settings: ScheduleSettings) -> ev.Schedule:
  """The HALoS schedule of (env, settings)."""
  return build_from_plan(env, settings, make_plan(env, settings))


def build_from_plan(env: Environment, settings: ScheduleSettings,
                    plan: plan_lib.Plan) -> ev.Schedule:
  """The schedule of LPS/GPS state machines on `plan` (HALoS's, or its streaming form's)."""
  fair = env.link_sharing == "fair"
  if env.has_failures:
    if settings.fragments is not None:
      raise InvalidSettings("fragments: failures are not supported with fragmented exchanges "
                            "(the environment has failures / failure_rate)", field="fragments")
    loop, round_worker = _failure_event_loop(plan, settings, env)
    cols, kind, ex_of = _assemble.explicit_columns(loop.codes, loop.times, round_worker, plan,
                                                   settings)
    _exchange_columns(cols, kind, ex_of, loop)
    return ev.Schedule(settings, env, plan, _assemble.finish(cols))
  loop = (_fair_event_loop if fair else _event_loop)(plan, settings, env)
  cols, kind, ex_of = _round_columns(plan, settings, loop, env.num_workers)
  _exchange_columns(cols, kind, ex_of, loop)
  schedule = ev.Schedule(settings, env, plan, _assemble.finish(cols))
  if fair:
    schedule.sharing = loop.record
  return schedule


def _event_loop(plan: plan_lib.Plan, settings: ScheduleSettings, env: Environment) -> _Loop:
  """Runs the LPS/GPS state machines of docs/algorithms.md 2.6 in virtual time."""
  w_count = env.num_workers
  num_lps = plan.num_servers
  h = plan.worker_H.tolist()
  dur = plan.round_ms.tolist()
  # Compute jitter or bandwidth traces: each round its own end (plan.round_clock), and each
  # exchange timed from its start on the traced links.
  net = network.from_environment(env)
  clock = plan_lib.round_clock(env, settings, plan, net)
  traced = hasattr(net, "transfer_end_ms")
  lps_region = [int(r) for r in plan.server_region]
  # Each exchange of LPS l carries fragment (its exchanges so far) mod P: the whole model when
  # P = 1 (HALoS), one of P fragments every K / P updates in the streaming form
  # (halos_jax/algorithms/streaming_halos.py).
  delta_bytes, global_bytes = exchange_sizes(settings)
  p_count = len(delta_bytes)
  if p_count == 1:
    up = [[u] for u in plan.up_ms.tolist()]
    down = [[d] for d in plan.down_ms.tolist()]
  else:
    up = [[net.transfer_ms(r, GPS_REGION, b) for b in delta_bytes] for r in lps_region]
    down = [[net.transfer_ms(GPS_REGION, r, b) for b in global_bytes] for r in lps_region]
  lps_of = plan.worker_server.tolist()
  ex = _Exchanges(num_lps, settings.K // p_count, p_count)
  v, acc, send_at, ex_lps, ex_steps, ex_frag = ex.v, ex.acc, ex.send_at, ex.lps, ex.steps, ex.frag
  total = settings.total_local_steps
  ARRIVE, GPS_APPLY, MERGE = ev.ARRIVE, ev.GPS_APPLY, ev.MERGE  # pylint: disable=invalid-name

  # -- event loop. Pending events: (t, insertion number, kind, worker | exchange id).
  heap = [(dur[w] if clock is None else clock(w, 0.0), w, ARRIVE, w)
          for w in range(w_count)]  # all workers start at t = 0
  heapq.heapify(heap)
  seq = w_count
  codes, times = array("q"), array("d")  # per processed event: payload << 3 | kind, t
  emit, add_t = codes.append, times.append
  heappush, heapreplace, heappop = heapq.heappush, heapq.heapreplace, heapq.heappop
  counted = gps_version = 0
  while True:
    t, _, kind, x = heap[0]
    add_t(t)
    if kind == ARRIVE:  # x_l = DN_l(x_l, g); v_l += 1
      l = lps_of[x]
      vl = v[l] = v[l] + 1
      acc[l] += h[x]
      if vl == send_at[l]:  # v_l == vhat_l + K: send Delta = xhat_l - x_l
        e, f = ex.send(l)
        t_up = t + up[l][f] if not traced else net.transfer_end_ms(
            lps_region[l], GPS_REGION, delta_bytes[f], t)
        heappush(heap, (t_up, seq, GPS_APPLY, e))  # keeps this arrival on top
        seq += 1
        emit((x << 3) | ARRIVE_SEND)
      else:
        emit((x << 3) | ARRIVE)
      # restart x from the pre-merge x_l
      heapreplace(heap, (t + dur[x] if clock is None else clock(x, t), seq, ARRIVE, x))
      seq += 1
    elif kind == GPS_APPLY:  # xG = DN_g(xG, Delta); count the reported steps
      emit((x << 3) | GPS_APPLY)
      gps_version += 1
      counted += ex_steps[x]
      if counted >= total:
        break
      l = ex_lps[x]
      f = ex_frag[x]
      t_down = t + down[l][f] if not traced else net.transfer_end_ms(
          GPS_REGION, lps_region[l], global_bytes[f], t)
      heapreplace(heap, (t_down, seq, MERGE, x))  # xG leaves for the LPS
      seq += 1
    else:  # merge: x_l = (1 - alpha) x_l + alpha xG; xhat_l = x_l; vhat_l = v_l
      emit((x << 3) | MERGE)
      ex.merge(x)
      heappop(heap)
  return ex.loop(codes, times, counted, gps_version)


def _failure_event_loop(plan: plan_lib.Plan, settings: ScheduleSettings, env: Environment):
  """`_event_loop` on the environment's failure timeline (docs/schedule.md, "Failures").

  Workers: as in Async Local-SGD's (a crash before the arrival loses the round; the worker
  starts a fresh round when it rejoins). Their transfers stay inside the LPS's region, so only
  an outage of that region stops them. LPS l's Delta: due when v_l == vhat_l + K; the `send`
  happens then if the link LPS region -> GPS region is up, else when it returns (the Delta
  then holds every update received meanwhile, v_l >= vhat_l + K). Each exchange's transfer
  runs when its link is up for the whole transfer (a transfer cut by a partition or an outage
  starts again when the link returns). Policy `lps: wait`: while LPS l's link to the GPS is
  cut its workers start no new round (rounds in flight still arrive).

  Returns:
    (loop, round_worker): the _Loop (codes: payload << 3 | kind for START / ARRIVE with the
    round id, SEND / GPS_APPLY / MERGE with the exchange id) and the worker of each round.
  """
  tl = env.failure_timeline()
  wait = tl.policy.lps == "wait"
  num_lps = plan.num_servers
  h = plan.worker_H.tolist()
  dur = plan.round_ms.tolist()
  lps_region = [int(r) for r in plan.server_region]
  lps_of = plan.worker_server.tolist()
  up = plan.up_ms.tolist()
  down = plan.down_ms.tolist()
  to_gps = [tl.link(r, GPS_REGION) for r in lps_region]
  own = [tl.link(lps_region[l], lps_region[l]) for l in lps_of]  # worker <-> LPS, in-region
  worker_down = tl.worker_down
  x_ms, u_ms, comp = plan.transfer_ms.tolist(), plan.upload_ms.tolist(), plan.compute_ms.tolist()
  total = settings.total_local_steps
  START, ARRIVE, SEND = ev.START, ev.ARRIVE, ev.SEND  # pylint: disable=invalid-name
  GPS_APPLY, MERGE = ev.GPS_APPLY, ev.MERGE  # pylint: disable=invalid-name
  codes, times, round_worker = array("q"), array("d"), array("q")
  ex = _Exchanges(num_lps, settings.K)
  v, acc, send_at, ex_lps, ex_steps = ex.v, ex.acc, ex.send_at, ex.lps, ex.steps
  heap = []
  seq = 0

  def push(t, kind, x):
    nonlocal seq
    heapq.heappush(heap, (t, seq, kind, x))
    seq += 1

  def free_at(w: int, t: float) -> float:
    """When worker w may start a round at or after t (up, and not paused)."""
    while True:
      t2 = worker_down[w].up_at(t)
      if wait:
        t2 = to_gps[lps_of[w]].up_at(t2)
      if t2 == t:
        return t
      t = t2

  def dispatch(w: int, t: float) -> None:
    """Worker w starts its next round at t (or when it is free)."""
    t_free = free_at(w, t)
    if t_free != t:
      push(t_free, START, w)
      return
    r = len(round_worker)
    round_worker.append(w)
    codes.append((r << 3) | START)
    times.append(t)
    arrival = failures.round_end(own[w], t, x_ms[w], comp[w], u_ms[w], dur[w])
    crash = worker_down[w].next_start(t, arrival)
    if crash is None:
      push(arrival, ARRIVE, r)
    else:  # the round is lost; w starts again when it rejoins
      push(crash[1], START, w)

  def send(l: int, t: float) -> None:
    """LPS l sends Delta = xhat_l - x_l at t (its link to the GPS is up)."""
    e, _ = ex.send(l)
    codes.append((e << 3) | SEND)
    times.append(t)
    push(tl.transfer_end(lps_region[l], GPS_REGION, t, up[l]), GPS_APPLY, e)

  for w in range(env.num_workers):  # all workers start at t = 0 (or when first free)
    dispatch(w, 0.0)
  counted = gps_version = 0
  while True:
    t, _, kind, x = heapq.heappop(heap)
    if kind == START:
      dispatch(x, t)
    elif kind == ARRIVE:  # x_l = DN_l(x_l, g); v_l += 1
      codes.append((x << 3) | ARRIVE)
      times.append(t)
      w = round_worker[x]
      l = lps_of[w]
      v[l] += 1
      acc[l] += h[w]
      if v[l] == send_at[l]:  # the Delta is due: now, or when the link returns
        t_send = to_gps[l].up_at(t)
        if t_send == t:
          send(l, t)
        else:
          push(t_send, SEND, l)
      dispatch(w, t)  # restart w from the pre-merge x_l
    elif kind == SEND:
      send(x, t)
    elif kind == GPS_APPLY:  # xG = DN_g(xG, Delta); count the reported steps
      codes.append((x << 3) | GPS_APPLY)
      times.append(t)
      gps_version += 1
      counted += ex_steps[x]
      if counted >= total:
        break
      l = ex_lps[x]
      push(tl.transfer_end(GPS_REGION, lps_region[l], t, down[l]), MERGE, x)
    else:  # merge: x_l = (1 - alpha) x_l + alpha xG; xhat_l = x_l; vhat_l = v_l
      codes.append((x << 3) | MERGE)
      times.append(t)
      ex.merge(x)
  return ex.loop(codes, times, counted, gps_version), round_worker


FLOW, COMPUTE = 8, 9  # the fair loop's internal entries (beside ARRIVE, GPS_APPLY, MERGE)
DOWNLOAD, UPLOAD, DELTA, GLOBAL = 0, 1, 2, 3  # what a flow carries (owner = x << 2 | this)


def _fair_event_loop(plan: plan_lib.Plan, settings: ScheduleSettings, env: Environment) -> _Loop:
  """`_event_loop` when concurrent messages share links max-min fairly (network/sharing.py).

  A worker round is its download flow (LPS region -> worker region), compute, its upload flow
  (timed on the same LPS -> worker link, the reference's rule) and the arrival; a send starts
  the Delta's flow (LPS region -> GPS region), the gps_apply the global model's (back). Each
  message ends when its bits are through plus the link's latency. Heap entries are
  (t, order, kind, x, version): an arrival, gps_apply or merge keeps the insertion number the
  reference loop gives it (when its round starts, at the send, at the gps_apply), so ties are
  broken as there; the simulator's completions and the ends of compute have order -1 (at equal
  t they come first and emit nothing).
  """
  w_count = env.num_workers
  num_lps = plan.num_servers
  h = plan.worker_H.tolist()
  lps_region = [int(r) for r in plan.server_region]
  lps_of = plan.worker_server.tolist()
  src = [lps_region[l] for l in lps_of]
  dst = env.worker_region.tolist()
  lat_ms = env.latency_ms
  lat = ([0.0] * w_count if lat_ms is None
         else [float(lat_ms[a, b]) for a, b in zip(src, dst)])
  lat_up = [0.0 if lat_ms is None else float(lat_ms[r, GPS_REGION]) for r in lps_region]
  lat_down = [0.0 if lat_ms is None else float(lat_ms[GPS_REGION, r]) for r in lps_region]
  down_bits, up_bits = settings.bytes_of("download") * 8, settings.bytes_of("upload") * 8
  # Exchanges carry fragment (exchanges of the LPS so far) mod P (one fragment when P = 1).
  delta_bytes, global_bytes = exchange_sizes(settings)
  p_count = len(delta_bytes)
  delta_bits, global_bits = [b * 8 for b in delta_bytes], [b * 8 for b in global_bytes]
  ex = _Exchanges(num_lps, settings.K // p_count, p_count)
  v, acc, send_at, ex_lps, ex_steps, ex_frag = ex.v, ex.acc, ex.send_at, ex.lps, ex.steps, ex.frag
  comp = plan.compute_ms.tolist()
  factor = (None if env.compute_jitter is None
            else jitter_lib.Factors(env.compute_jitter, w_count).factor)
  nth = [0] * w_count
  total = settings.total_local_steps
  ARRIVE, GPS_APPLY, MERGE = ev.ARRIVE, ev.GPS_APPLY, ev.MERGE  # pylint: disable=invalid-name

  heap = []
  sim = sharing.FlowSimulator(env.bandwidth_gbps, heap, FLOW, env.uplink_gbps,
                              env.downlink_gbps)
  start, complete = sim.start, sim.complete
  heappush, heappop = heapq.heappush, heapq.heappop
  for w in range(w_count):  # all workers start at t = 0
    start(0.0, src[w], dst[w], down_bits, w << 2 | DOWNLOAD)
  order = list(range(w_count))  # the insertion number of each worker's pending arrival
  round_of = list(range(w_count))
  download_end = [math.nan] * w_count
  ex_order = []  # per exchange: the insertion number of its gps_apply, then of its merge
  seq = next_round = w_count
  codes, times = array("q"), array("d")  # per processed event: payload << 3 | kind, t
  emit, add_t = codes.append, times.append
  counted = gps_version = 0
  while True:
    t, _, kind, x, version = heappop(heap)
    if kind == FLOW:
      owner = complete(t, x, version)
      if owner is None:  # stale: the link's rate changed since
        continue
      y, what = owner >> 2, owner & 3
      if what == DOWNLOAD:  # model through: compute
        t_c = download_end[round_of[y]] = t + lat[y]
        c = comp[y]
        if factor is not None:
          c = c * factor(y, nth[y])
          nth[y] += 1
        heappush(heap, (t_c + c, -1, COMPUTE, y, 0))
      elif what == UPLOAD:
        heappush(heap, (t + lat[y], order[y], ARRIVE, y, 0))
      elif what == DELTA:
        heappush(heap, (t + lat_up[ex_lps[y]], ex_order[y], GPS_APPLY, y, 0))
      else:
        heappush(heap, (t + lat_down[ex_lps[y]], ex_order[y], MERGE, y, 0))
      continue
    if kind == COMPUTE:  # the upload leaves
      start(t, src[x], dst[x], up_bits, x << 2 | UPLOAD)
      continue
    add_t(t)
    if kind == ARRIVE:  # x_l = DN_l(x_l, g); v_l += 1
      l = lps_of[x]
      vl = v[l] = v[l] + 1
      acc[l] += h[x]
      if vl == send_at[l]:  # v_l == vhat_l + K: send Delta = xhat_l - x_l
        e, f = ex.send(l)
        ex_order.append(seq)
        seq += 1
        start(t, lps_region[l], GPS_REGION, delta_bits[f], e << 2 | DELTA)
        emit((x << 3) | ARRIVE_SEND)
      else:
        emit((x << 3) | ARRIVE)
      # restart x from the pre-merge x_l
      order[x] = seq
      seq += 1
      round_of[x] = next_round
      next_round += 1
      download_end.append(math.nan)
      start(t, src[x], dst[x], down_bits, x << 2 | DOWNLOAD)
    elif kind == GPS_APPLY:  # xG = DN_g(xG, Delta); count the reported steps
      emit((x << 3) | GPS_APPLY)
      gps_version += 1
      counted += ex_steps[x]
      if counted >= total:
        break
      ex_order[x] = seq  # xG leaves for the LPS
      seq += 1
      start(t, GPS_REGION, lps_region[ex_lps[x]], global_bits[ex_frag[x]], x << 2 | GLOBAL)
    else:  # merge: x_l = (1 - alpha) x_l + alpha xG; xhat_l = x_l; vhat_l = v_l
      emit((x << 3) | MERGE)
      ex.merge(x)
  record = sim.record(t)._replace(download_end=np.asarray(download_end, dtype=np.float64))
  return ex.loop(codes, times, counted, gps_version, record)


def _round_columns(plan: plan_lib.Plan, settings: ScheduleSettings, loop: _Loop, w_count: int):
  """Every event's kind and time, and the rounds' columns; returns (cols, kind, exchange of each
  event: the loop's payload, meaningful for gps_apply and merge)."""
  ARRIVE, GPS_APPLY, MERGE = ev.ARRIVE, ev.GPS_APPLY, ev.MERGE  # pylint: disable=invalid-name
  # -- columns. Processed arrival -> [arrive, (send), start]; gps_apply, merge -> themselves;
  # -- W starts first and a stop last.
  pkind, px = _assemble.decode(loop.codes)
  pt = np.frombuffer(loop.times, dtype=np.float64)
  is_arr = (pkind == ARRIVE) | (pkind == ARRIVE_SEND)
  per = np.where(pkind == ARRIVE_SEND, 3, np.where(is_arr, 2, 1))
  src = np.repeat(np.arange(len(pkind)), per)  # processed event of each emitted event
  pos = np.arange(len(src)) - np.repeat(np.cumsum(per) - per, per)  # position in its group
  sk = pkind[src]
  body_kind = np.where(sk == GPS_APPLY, GPS_APPLY, np.where(sk == MERGE, MERGE, ev.ARRIVE))
  body_kind = np.where((sk == ARRIVE_SEND) & (pos == 1), ev.SEND, body_kind)
  body_kind = np.where(is_arr[src] & (pos == per[src] - 1), ev.START, body_kind)
  n = w_count + len(src) + 1
  kind = np.empty(n, dtype=np.int8)
  kind[:w_count] = ev.START
  kind[w_count:-1] = body_kind
  kind[-1] = ev.STOP
  t_all = np.empty(n)
  t_all[:w_count] = 0.0
  t_all[w_count:-1] = pt[src]
  t_all[-1] = pt[-1]

  aw = px[is_arr]  # arrival workers, in order
  n_arr = len(aw)
  round_worker = np.concatenate((np.arange(w_count), aw))
  t_start = np.concatenate((np.zeros(w_count), pt[is_arr]))
  arr_round = _assemble.arrival_rounds(aw, w_count)
  t_arrive = np.full(len(round_worker), np.nan)
  t_arrive[arr_round] = pt[is_arr]
  idx = np.zeros(n, dtype=np.int64)
  idx[:w_count] = np.arange(w_count)
  body_idx = idx[w_count:-1]
  body_idx[body_kind == ev.ARRIVE] = arr_round
  body_idx[body_kind == ev.START] = np.arange(w_count, w_count + n_arr)
  cols, st, ar = _assemble.async_round_columns(
      kind, idx, plan, settings, round_worker=round_worker, t_start=t_start, t_arrive=t_arrive)
  cols["t"][:] = t_all  # the loop's times for every event (starts/arrivals agree exactly)
  ex_of = np.concatenate((np.zeros(w_count, np.int64), px[src], [0]))
  return cols, kind, ex_of


def _exchange_columns(cols: dict, kind: np.ndarray, ex_of: np.ndarray, loop: _Loop) -> None:
  """The send / gps_apply / merge columns and the stop's totals."""
  lps = np.frombuffer(loop.ex_lps, dtype=np.int64)
  steps = np.frombuffer(loop.ex_steps, dtype=np.int64)
  vmerge = np.full(len(lps), -1, dtype=np.int64)
  if loop.ex_vmerge:
    vmerge[list(loop.ex_vmerge)] = list(loop.ex_vmerge.values())
  frag = None if loop.ex_frag is None else np.frombuffer(loop.ex_frag, dtype=np.int64)
  for code in (ev.SEND, ev.GPS_APPLY, ev.MERGE):
    if frag is not None:  # the streaming form: which fragment each exchange carries
      sel = kind == code
      cols["fragment"][sel] = frag[np.arange(int(sel.sum())) if code == ev.SEND else ex_of[sel]]
  sel = kind == ev.SEND
  e = np.arange(int(sel.sum()))  # exchanges are numbered in send order
  cols["exchange"][sel] = e
  cols["server"][sel] = lps[e]
  cols["version"][sel] = np.frombuffer(loop.ex_v, dtype=np.int64)[e]
  cols["base_version"][sel] = np.frombuffer(loop.ex_vhat, dtype=np.int64)[e]
  cols["steps"][sel] = steps[e]
  sel = kind == ev.GPS_APPLY
  e = ex_of[sel]
  cols["exchange"][sel] = e
  cols["server"][sel] = lps[e]
  cols["version"][sel] = np.arange(1, len(e) + 1)
  cols["steps"][sel] = steps[e]
  cols["counted_steps"][sel] = np.cumsum(steps[e])
  sel = kind == ev.MERGE
  e = ex_of[sel]
  cols["exchange"][sel] = e
  cols["server"][sel] = lps[e]
  cols["version"][sel] = vmerge[e]
  cols["version"][-1] = loop.gps_version
  cols["counted_steps"][-1] = loop.counted


# ------------------------------------------------------------------------------------------------
# Server rules
# ------------------------------------------------------------------------------------------------


class HALoSRules(base.ServerRules):
  """An LPS per group of workers, the GPS in region 0 (halos_jax.optim.halos)."""
  global_region = GPS_REGION

  def __init__(self, config, problem, num_workers, num_servers):
    super().__init__(config, problem, num_workers, num_servers)
    import jax  # pylint: disable=g-import-not-at-top
    from halos_jax import optim  # pylint: disable=g-import-not-at-top
    self.lps_opt = optim.delayed_nesterov_from_base_lr(
        config.lps.eta, config.lps.beta, config.lps.N, c=config.lps.c)
    self.gps_opt = optim.delayed_nesterov_from_base_lr(
        config.gps.eta, config.gps.beta, config.gps.N, c=config.gps.c)
    self._lps_init, self._gps_init = optim.lps_init, optim.gps_init
    K, alpha = int(config.K), float(config.alpha)  # pylint: disable=invalid-name

    @jax.jit
    def receive(lps, g, steps):
      return optim.lps_receive(lps, g, steps, optimizer=self.lps_opt, K=K)[0]

    @jax.jit
    def gps_apply(gps, delta, steps):
      return optim.gps_apply(gps, delta, steps, optimizer=self.gps_opt)

    @jax.jit
    def merge(lps, global_params):
      return optim.lps_merge(lps, global_params, alpha)

    delta = jax.jit(optim.lps_delta)
    self._receive, self._gps_apply, self._merge, self._delta = receive, gps_apply, merge, delta
    # The LPS -> GPS codec (docs/codecs.md): each LPS keeps its own codec state.
    from halos_jax import codecs  # pylint: disable=g-import-not-at-top
    self.codec = codecs.from_config(config.get("exchange"), "global_codec")
    if self.codec is not None:
      codec = self.codec

      @jax.jit
      def compress(delta, state):
        payload, state = codec.encode(delta, state)
        return codec.decode(payload, delta), state

      self._compress = compress

  def init(self, x0):
    return {
        "lps": [self._lps_init(x0, self.lps_opt) for _ in range(self.num_servers)],
        "gps": self._gps_init(x0, self.gps_opt),
        # One exchange in flight per LPS at most (equality trigger): its Delta, then the
        # global model travelling back.
        "outbox": [x0 for _ in range(self.num_servers)],
        **({} if self.codec is None else
           {"codec": [self.codec.init(x0) for _ in range(self.num_servers)]}),
    }

  def place(self, servers, layout):
    """LPS r and its outbox on a device of LPS r's region, the GPS on one of its own."""
    self.layout = layout
    placed = {"lps": [self.to_server(x, r) for r, x in enumerate(servers["lps"])],
              "gps": self.to_global(servers["gps"]),
              "outbox": [self.to_server(x, r) for r, x in enumerate(servers["outbox"])]}
    if "codec" in servers:
      placed["codec"] = [self.to_server(x, r) for r, x in enumerate(servers["codec"])]
    return placed

  def model(self, servers, server):
    return servers["lps"][server].params

  def evaluated(self, servers):
    return servers["gps"].params

  def _set(self, servers, key, index, value):
    items = list(servers[key])
    items[index] = value
    return {**servers, key: items}

  def on_arrive(self, servers, ev, result):  # pylint: disable=redefined-outer-name
    lps = self._receive(servers["lps"][ev.server], result.delta, np.int32(ev.H))
    return self._set(servers, "lps", ev.server, lps)

  def skipped(self, before, after, ev):  # pylint: disable=redefined-outer-name
    # The LPS keeps its model and optimizer state; its version and pending steps follow the
    # schedule (the send after K arrivals, the local steps reported to the GPS).
    new = after["lps"][ev.server]
    lps = before["lps"][ev.server]._replace(version=new.version, pending_steps=new.pending_steps)
    return self._set(before, "lps", ev.server, lps)

  def on_send(self, servers, ev):  # pylint: disable=redefined-outer-name
    delta = self._delta(servers["lps"][ev.server])
    if self.codec is not None:  # what the GPS will decode; the LPS keeps the codec's state
      delta, state = self._compress(delta, servers["codec"][ev.server])
      servers = self._set(servers, "codec", ev.server, state)
    return self._set(servers, "outbox", ev.server, delta)

  def on_gps_apply(self, servers, ev):  # pylint: disable=redefined-outer-name
    delta = self.to_global(servers["outbox"][ev.server])  # the Delta reaches the GPS
    gps = self._gps_apply(servers["gps"], delta, np.int32(ev.steps))
    servers = {**servers, "gps": gps}
    # A copy of the global model leaves for the LPS (it waits in the outbox on the LPS's side).
    return self._set(servers, "outbox", ev.server, self.to_server(gps.params, ev.server))

  def on_merge(self, servers, ev):  # pylint: disable=redefined-outer-name
    lps = self._merge(servers["lps"][ev.server], servers["outbox"][ev.server])
    return self._set(servers, "lps", ev.server, lps)

  def check(self, servers, ev):  # pylint: disable=redefined-outer-name
    """Cross-checks the LPS/GPS counters of the numerics with the schedule at each exchange."""
    if ev.kind == "send":
      lps = servers["lps"][ev.server]
      got = (int(lps.version), int(lps.merge_version))
      if got != (ev.version, ev.base_version):
        raise AssertionError(f"LPS {ev.server} at send: (v, vhat) = {got}, schedule says "
                             f"{(ev.version, ev.base_version)}")
    elif ev.kind == "gps_apply":
      gps = servers["gps"]
      if int(gps.version) != ev.version or int(gps.steps) != ev.counted_steps:
        raise AssertionError(
            f"GPS after apply: version {int(gps.version)}, steps {int(gps.steps)}; schedule "
            f"says {ev.version}, {ev.counted_steps}")


def server_rules(config, problem, num_workers: int, num_servers: int) -> base.ServerRules:
  return HALoSRules(config, problem, num_workers, num_servers)
