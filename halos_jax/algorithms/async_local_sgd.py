"""Async Local-SGD (docs/algorithms.md 2.5): one parameter server in region 0, workers never wait.

Every worker starts at time 0. A round of worker w takes
    round_w = 2 * transfer(PS region -> worker region) + step_time_ms * H_w / s_w
and when its pseudo-gradient arrives the PS applies it at once (DN; version += 1, counts H_w
local steps) and restarts w immediately from the PS's current model with the next data block.
The run stops right after the arrival at which the counted steps reach total_local_steps.

Events: W `start` at t = 0, then per arrival `arrive` + the worker's next `start`; the last
arrival is followed by `stop` instead.

With failures in the environment (docs/schedule.md, "Failures") `_failure_events` runs the
loop on the failure timeline: a crash loses the round in flight (its `start` has no `arrive`)
and the worker starts a fresh round when it rejoins; transfers wait while their link is cut.

With `link_sharing: fair` (network/sharing.py) a round is download flow, compute, upload flow,
and concurrent flows share their links: `_fair_arrivals` runs the same loop with the flow
simulator's completions in the heap; the events are the same kinds, only their times change.

References:
  Liu et al., "Asynchronous Local-SGD Training for Language Modeling", 2024 (arXiv 2401.09135).
"""
from __future__ import annotations

import heapq
import math
from array import array

import numpy as np

from halos_jax.algorithms import base
from halos_jax.network import jitter as jitter_lib
from halos_jax.network import sharing
from halos_jax.schedule import _assemble
from halos_jax.schedule import events as ev
from halos_jax.schedule import failures
from halos_jax.schedule import plan as plan_lib
from halos_jax.schedule.environment import Environment
from halos_jax.schedule.settings import ScheduleSettings

SYNCHRONOUS = False
REQUIRED_SETTINGS = ()
CONFIG_BLOCKS = {"ps": "delayed_nesterov"}  # the PS's DN (configs/async_local_sgd.py)
EVALUATED_MODEL = "the parameter server's model"
LABELS = {"server_updates": "PS updates", "server": "PS"}
PAPER_SPEEDUP = 2.1  # the paper: HALoS up to 2.1x faster than Async Local-SGD
COMPARISON_REFERENCE = False
SUPPORTS_FAILURES = True  # worker crashes, partitions, region outages (_failure_events)


local_H = base.configured_H
rescale = base.configured_rescale


def make_plan(env: Environment, settings: ScheduleSettings) -> plan_lib.Plan:
  """One parameter server in region 0 for every worker."""
  w = env.num_workers
  return plan_lib.server_plan(env, settings, np.zeros(w, dtype=np.int64), (plan_lib.PS_REGION,))


def build(env: Environment, settings: ScheduleSettings) -> ev.Schedule:
  """The Async Local-SGD schedule of (env, settings)."""
  plan = make_plan(env, settings)
  w_count = env.num_workers
  h = plan.worker_H.tolist()
  dur = plan.round_ms.tolist()
  total = settings.total_local_steps
  if env.has_failures:
    codes, times, round_worker, counted = _failure_events(env, settings, plan)
    cols, kind, _ = _assemble.explicit_columns(codes, times, round_worker, plan, settings)
    ar = kind == ev.ARRIVE
    cols["counted_steps"][ar] = np.cumsum(cols["steps"][ar], dtype=np.int64)
    cols["version"][-1] = int(ar.sum())
    cols["counted_steps"][-1] = counted
    return ev.Schedule(settings, env, plan, _assemble.finish(cols))
  if env.link_sharing == "fair":
    arrival_worker, arrival_t, counted, record = _fair_arrivals(env, settings, plan)
    schedule = _columns(env, settings, plan, arrival_worker, arrival_t, counted)
    schedule.sharing = record
    return schedule
  # Compute jitter or bandwidth traces: each round its own end (plan.round_clock).
  clock = plan_lib.round_clock(env, settings, plan)

  # -- event loop. Pending: one arrival per worker, keyed (t, round id); round ids are dispatch
  # -- order, i.e. the insertion numbers of the only kind of pending event.
  heap = [(dur[w] if clock is None else clock(w, 0.0), w, w)  # (t, round, worker)
          for w in range(w_count)]  # all start at t = 0
  heapq.heapify(heap)
  arrival_worker, arrival_t = array("q"), array("d")
  add_w, add_t, heapreplace = arrival_worker.append, arrival_t.append, heapq.heapreplace
  counted, next_round = 0, w_count
  while True:
    t, _, w = heap[0]
    add_w(w)  # arrive: the PS applies the pseudo-gradient (DN) and counts H_w local steps
    add_t(t)
    counted += h[w]
    if counted >= total:
      break
    # start: w restarts at once, next block
    heapreplace(heap, (t + dur[w] if clock is None else clock(w, t), next_round, w))
    next_round += 1
  return _columns(env, settings, plan, arrival_worker, arrival_t, counted)


def _columns(env: Environment, settings: ScheduleSettings, plan: plan_lib.Plan,
             arrival_worker: array, arrival_t: array, counted: int) -> ev.Schedule:
  """The schedule of the arrivals (workers and times, in order): [W starts] +
  [arrive, start] * (A - 1) + [arrive, stop]."""
  w_count = env.num_workers
  aw = np.frombuffer(arrival_worker, dtype=np.int64)
  at = np.frombuffer(arrival_t, dtype=np.float64)
  n_arr = len(aw)
  n = w_count + 2 * n_arr
  kind = np.empty(n, dtype=np.int8)
  kind[:w_count] = ev.START
  kind[w_count::2] = ev.ARRIVE
  kind[w_count + 1::2] = ev.START
  kind[-1] = ev.STOP
  round_worker = np.concatenate((np.arange(w_count), aw[:-1]))
  t_start = np.concatenate((np.zeros(w_count), at[:-1]))
  arr_round = _assemble.arrival_rounds(aw, w_count)
  t_arrive = np.full(len(round_worker), np.nan)
  t_arrive[arr_round] = at
  idx = np.empty(n, dtype=np.int64)
  idx[:w_count] = np.arange(w_count)
  idx[w_count::2] = arr_round
  idx[w_count + 1::2] = np.arange(w_count, w_count + n_arr)  # the stop's entry is unused
  idx[-1] = 0
  cols, st, ar = _assemble.async_round_columns(
      kind, idx, plan, settings, round_worker=round_worker, t_start=t_start, t_arrive=t_arrive)
  cols["counted_steps"][ar] = np.cumsum(cols["steps"][ar], dtype=np.int64)
  cols["t"][-1] = at[-1]
  cols["version"][-1] = n_arr
  cols["counted_steps"][-1] = counted
  return ev.Schedule(settings, env, plan, _assemble.finish(cols))


def _failure_events(env: Environment, settings: ScheduleSettings, plan: plan_lib.Plan):
  """The events when workers crash and regions are cut (docs/schedule.md, "Failures").

  A round started at t: the download over the PS region -> worker region link starts when the
  link is up for the whole transfer (a transfer cut by a partition or an outage starts again
  when the link returns), then compute, then the upload over the same link (the reference's
  rule), then the arrival. A crash of the worker before the arrival loses the round: no
  `arrive`, and the worker starts a fresh round when it rejoins (its round pays the download as
  every round does). After an arrival the worker restarts at once if it is up, else when it
  rejoins.

  Returns:
    (codes, times, round_worker, counted): the processed events as `payload << 3 | kind`
    (START / ARRIVE with the round id) and their times, the worker of each round, the counted
    local steps at the stop.
  """
  tl = env.failure_timeline()
  w_count = env.num_workers
  h = plan.worker_H.tolist()
  comp = plan.compute_ms.tolist()
  down_ms, up_ms = plan.transfer_ms.tolist(), plan.upload_ms.tolist()
  dur = plan.round_ms.tolist()
  link = [tl.link(int(plan.server_region[s]), r)
          for s, r in zip(plan.worker_server.tolist(), env.worker_region.tolist())]
  worker_down = tl.worker_down
  total = settings.total_local_steps
  START, ARRIVE = ev.START, ev.ARRIVE  # pylint: disable=invalid-name
  codes, times, round_worker = array("q"), array("d"), array("q")
  heap = []
  seq = 0

  def dispatch(w: int, t: float) -> None:
    """Worker w (up at t) starts its next round at t."""
    nonlocal seq
    r = len(round_worker)
    round_worker.append(w)
    codes.append((r << 3) | START)
    times.append(t)
    arrival = failures.round_end(link[w], t, down_ms[w], comp[w], up_ms[w], dur[w])
    crash = worker_down[w].next_start(t, arrival)
    if crash is None:
      heapq.heappush(heap, (arrival, seq, ARRIVE, r))
    else:  # the round is lost; w starts again when it rejoins
      heapq.heappush(heap, (crash[1], seq, START, w))
    seq += 1

  for w in range(w_count):  # all start at t = 0, or when they are first up
    t0 = worker_down[w].up_at(0.0)
    if t0 == 0.0:
      dispatch(w, 0.0)
    else:
      heapq.heappush(heap, (t0, seq, START, w))
      seq += 1
  counted = 0
  while True:
    t, _, kind, x = heapq.heappop(heap)
    if kind == START:
      dispatch(x, t)
      continue
    codes.append((x << 3) | ARRIVE)  # the PS applies the pseudo-gradient (DN)
    times.append(t)
    w = round_worker[x]
    counted += h[w]
    if counted >= total:
      break
    t_up = worker_down[w].up_at(t)
    if t_up == t:
      dispatch(w, t)
    else:
      heapq.heappush(heap, (t_up, seq, START, w))
      seq += 1
  return codes, times, round_worker, counted


FLOW, COMPUTE, ARRIVE = 0, 1, 2  # the fair loop's entries


def _fair_arrivals(env: Environment, settings: ScheduleSettings, plan: plan_lib.Plan):
  """The arrivals (workers, times), the counted steps and the simulator's record when
  concurrent transfers share links max-min fairly (network/sharing.py).

  A round: its download flow (server region -> worker region) starts with the round; when its
  bits are through (plus the link's latency) the worker computes; then its upload flow, timed on
  the same server -> worker link (the reference's rule), and the arrival when that is through
  (plus latency). Heap entries are (t, order, kind, x, version): arrivals have order = round id,
  as in the reference loop (ties in dispatch order); the simulator's completions and the ends of
  compute have order -1 (at equal t they come first; they emit nothing).
  """
  w_count = env.num_workers
  h = plan.worker_H.tolist()
  total = settings.total_local_steps
  heap = []
  sim = sharing.FlowSimulator(env.bandwidth_gbps, heap, FLOW, env.uplink_gbps,
                              env.downlink_gbps)
  src = [int(plan.server_region[s]) for s in plan.worker_server.tolist()]
  dst = env.worker_region.tolist()
  lat = ([0.0] * w_count if env.latency_ms is None
         else [float(env.latency_ms[a, b]) for a, b in zip(src, dst)])
  down_bits = settings.bytes_of("download") * 8
  up_bits = settings.bytes_of("upload") * 8
  comp = plan.compute_ms.tolist()
  factor = (None if env.compute_jitter is None
            else jitter_lib.Factors(env.compute_jitter, w_count).factor)
  nth = [0] * w_count  # rounds each worker computed (the jitter's index)
  round_of = list(range(w_count))  # each worker's round in flight
  download_end = [math.nan] * w_count
  start, complete = sim.start, sim.complete
  heappush, heappop = heapq.heappush, heapq.heappop
  for w in range(w_count):  # all start at t = 0
    start(0.0, src[w], dst[w], down_bits, w << 1)
  arrival_worker, arrival_t = array("q"), array("d")
  add_w, add_t = arrival_worker.append, arrival_t.append
  counted, next_round = 0, w_count
  while True:
    t, _, kind, x, version = heappop(heap)
    if kind == FLOW:
      owner = complete(t, x, version)
      if owner is None:  # stale: the link's rate changed since
        continue
      w = owner >> 1
      if owner & 1:  # upload through: the pseudo-gradient arrives after the latency
        heappush(heap, (t + lat[w], round_of[w], ARRIVE, w, 0))
      else:  # model through: compute
        t_c = download_end[round_of[w]] = t + lat[w]
        c = comp[w]
        if factor is not None:
          c = c * factor(w, nth[w])
          nth[w] += 1
        heappush(heap, (t_c + c, -1, COMPUTE, w, 0))
    elif kind == COMPUTE:  # the upload leaves
      start(t, src[x], dst[x], up_bits, (x << 1) | 1)
    else:  # arrive: the PS applies the pseudo-gradient (DN) and counts H_w local steps
      add_w(x)
      add_t(t)
      counted += h[x]
      if counted >= total:
        break
      round_of[x] = next_round  # start: x restarts at once, next block
      next_round += 1
      download_end.append(math.nan)
      start(t, src[x], dst[x], down_bits, x << 1)
  record = sim.record(t)._replace(download_end=np.asarray(download_end, dtype=np.float64))
  return arrival_worker, arrival_t, counted, record


# ------------------------------------------------------------------------------------------------
# Server rules
# ------------------------------------------------------------------------------------------------


class AsyncLocalSGDRules(base.SingleServer):
  """One parameter server applying DN to each pseudo-gradient on arrival."""

  def __init__(self, config, problem, num_workers, num_servers):
    super().__init__(config, problem, num_workers, num_servers)
    from halos_jax import optim  # pylint: disable=g-import-not-at-top
    from halos_jax.replay import server_ops  # pylint: disable=g-import-not-at-top
    ps = config.ps
    self.opt = optim.delayed_nesterov_from_base_lr(ps.eta, ps.beta, ps.N, c=ps.c)
    self._step = server_ops.jit_apply(self.opt)

  def init(self, x0):
    return {"params": x0, "opt": self.opt.init(x0)}

  def on_arrive(self, servers, ev, result):  # pylint: disable=redefined-outer-name
    params, opt = self._step(servers["params"], servers["opt"], result.delta)
    return {"params": params, "opt": opt}


def server_rules(config, problem, num_workers: int, num_servers: int) -> base.ServerRules:
  return AsyncLocalSGDRules(config, problem, num_workers, num_servers)
