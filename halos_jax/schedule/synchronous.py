"""Synchronous rounds (DDP, DiLoCo, DiLoCo + DynUpd): the event loop they share.

Every round all W workers start from the server model at the same time, worker w runs H_w local
steps, and the round ends with a ring all-reduce:
    round time = max_w step_time_ms * H_w / s_w + all-reduce time
(docs/algorithms.md 3). The run stops after the sync at which the counted local
steps reach total_local_steps.

Events per round: W `start` (worker order), W `arrive` at the end of the all-reduce, one
`sync` averaging those W rounds; then `stop`. The builder is an event loop like the others,
but its queue never holds more than the current round's end, and the W-fold repetitive part of
the events is laid out vectorised.

With failures in the environment (docs/schedule.md, "Failures") `_build_with_failures` times
each round on the failure timeline: policy `wait` (a crashed worker rejoins, downloads the model
and redoes its round; the round waits) or `quorum` (the round goes on with the survivors, at
least ceil(quorum * W) of them, and keeps at least its failure-free length); the all-reduce runs
while no region is cut.
"""
from __future__ import annotations

import heapq
import math
from array import array

import numpy as np

from halos_jax import network
from halos_jax.network import jitter as jitter_lib
from halos_jax.schedule import _assemble
from halos_jax.schedule import events as ev
from halos_jax.schedule.environment import Environment
from halos_jax.schedule.plan import Plan
from halos_jax.schedule.settings import ScheduleSettings


def build(env: Environment, settings: ScheduleSettings, plan: Plan) -> ev.Schedule:
  """Rounds of (W starts, W arrivals, one sync) until total_local_steps are counted.

  Args:
    env: the environment.
    settings: the schedule settings.
    plan: the algorithm's plan (`plan.synchronous_plan`).
  """
  if env.has_failures:
    return _build_with_failures(env, settings, plan)
  w_count = env.num_workers
  round_time = float(plan.round_ms[0])
  # Compute jitter (network/jitter.py): round k waits for the slowest jittered worker; with
  # bandwidth traces (network/traces.py) its all-reduce is timed from when it starts.
  factors = None if env.compute_jitter is None else jitter_lib.Factors(
      env.compute_jitter, w_count)
  net = network.from_environment(env)
  traced = hasattr(net, "transfer_end_ms")
  comp = plan.compute_ms.tolist()
  max_comp = max(comp)
  upload = settings.bytes_of("upload")

  def end(k: int, t: float) -> float:
    """When round k, started at t, ends."""
    if factors is None and not traced:
      return t + round_time
    c = max_comp if factors is None else max(
        x * factors.factor(w, k) for w, x in enumerate(comp))
    if not traced:
      return t + (c + plan.allreduce_ms)
    return net.allreduce_end_ms(upload, w_count, t + c)
  steps_per_round = int(plan.worker_H.sum())
  total = settings.total_local_steps

  # -- event loop: the only pending event is the end of the current round (its all-reduce).
  t_sync = array("d")
  heap = [(end(0, 0.0), 0)]  # (t, round number)
  counted = 0
  while True:
    t, k = heapq.heappop(heap)
    t_sync.append(t)  # W arrivals, then the sync: average and one outer step
    counted += steps_per_round
    if counted >= total:
      break
    heapq.heappush(heap, (end(k + 1, t), k + 1))  # the next round starts at once
  num_rounds = len(t_sync)

  # -- columns: per round k, events [k * (2W + 1), (k + 1) * (2W + 1)), then the stop.
  per = 2 * w_count + 1
  n = num_rounds * per + 1
  cols = ev.empty_columns(n)
  t_end = np.frombuffer(t_sync, dtype=np.float64)
  t_begin = np.concatenate(([0.0], t_end[:-1]))
  pattern = np.array([ev.START] * w_count + [ev.ARRIVE] * w_count + [ev.SYNC], np.int8)
  cols["kind"][:-1] = np.tile(pattern, num_rounds)
  cols["kind"][-1] = ev.STOP
  k_of = np.repeat(np.arange(num_rounds), per)
  lane = np.tile(np.arange(per), num_rounds)  # position inside the round's block
  worker = np.where(lane < w_count, lane, lane - w_count)
  kind = cols["kind"][:-1]
  rnd = k_of * w_count + worker  # round ids: worker w of round k is k * W + w
  round_worker = np.tile(np.arange(w_count), num_rounds)
  round_H = plan.worker_H[round_worker]
  t_start = np.repeat(t_begin, w_count)
  t_arrive = np.repeat(t_end, w_count)
  data_start, data_end, lr_offset = _assemble.data_blocks(
      round_H, settings.local_batch, settings.global_batch, plan.uniform_H)
  body = {key: col[:-1] for key, col in cols.items()}  # views: everything but the stop
  idx = np.where(kind == ev.SYNC, k_of, rnd)
  st, _ = _assemble.fill_rounds(
      body, kind, idx, round_worker=round_worker, round_H=round_H, t_start=t_start,
      t_arrive=t_arrive, data_start=data_start, data_end=data_end, lr_offset=lr_offset,
      worker_server=plan.worker_server)
  body["version"][st] = k_of[st]  # the snapshot is the server model after k syncs
  sy = kind == ev.SYNC
  body["t"][sy] = t_end
  body["server"][sy] = 0
  body["version"][sy] = np.arange(1, num_rounds + 1)
  body["steps"][sy] = steps_per_round
  body["counted_steps"][sy] = steps_per_round * np.arange(1, num_rounds + 1, dtype=np.int64)
  cols["t"][-1] = t_end[-1]
  cols["version"][-1] = num_rounds
  cols["counted_steps"][-1] = counted
  # sync k averages rounds [k * W, (k + 1) * W): CSR pointers over all events.
  counts = np.zeros(n + 1, dtype=np.int64)
  counts[1:-1][sy] = w_count
  rounds_ptr = np.cumsum(counts)
  rounds_flat = np.arange(num_rounds * w_count, dtype=np.int32)
  return ev.Schedule(settings, env, plan, _assemble.finish(cols), rounds_ptr, rounds_flat)


def _round_with_failures(tl, T: float, workers, stale, comp, rejoin, ring_block, A: float,
                         deadline: float, nominal: float, wait: bool):
  """One round from T on the failure timeline.

  Args:
    tl: the failures.Timeline.
    T: the round's start (the previous sync).
    workers: the workers that take part (all of them with `wait`; those up at T otherwise).
    stale: per worker, True when it lost its model (it was down): its round starts with a
      download.
    comp: per worker, the compute of one round.
    rejoin: per worker, (region, download ms) of the model's download from the server region.
    ring_block: Intervals during which the all-reduce cannot run.
    A: the all-reduce's duration.
    deadline: the round's failure-free end of compute (T + the slowest worker's compute): the
      all-reduce never starts earlier.
    nominal: the round's failure-free end (T + round time).
    wait: True: a worker that crashes before the round's end rejoins and redoes its round, and
      the round waits for it; False: the crashed workers are left out.

  Returns:
    (starts [(t, worker)], E = the all-reduce's end, the workers whose round arrives).
  """
  starts, cur, done = [], {}, {}

  def attempt(w, s, fresh):
    starts.append((s, w))
    cur[w] = s
    g = s if fresh else tl.transfer_end(0, rejoin[w][0], s, rejoin[w][1])
    done[w] = g + comp[w]

  for w in workers:
    s = tl.worker_down[w].up_at(T)
    attempt(w, s, s == T and not stale[w])
  while True:
    ready = max([deadline] + list(done.values()))
    s_ar = ring_block.window(ready, A)
    E = nominal if s_ar == deadline else s_ar + A  # nominal: T + round time, to the bit
    crashed = [w for w in workers if tl.worker_down[w].next_start(cur[w], E) is not None]
    if not crashed or not wait:
      break
    for w in crashed:  # the round is lost: w rejoins, downloads the model and redoes it
      attempt(w, tl.worker_down[w].next_start(cur[w], E)[1], False)
  return starts, E, [w for w in workers if w not in crashed]


def _build_with_failures(env: Environment, settings: ScheduleSettings, plan: Plan
                         ) -> ev.Schedule:
  """Synchronous rounds when workers crash and regions are cut (docs/schedule.md, "Failures").

  Round k starts at T (the previous sync). Policy `quorum`: the workers up at T start; if at
  least ceil(quorum * W) of them do not crash before the round's end, the all-reduce starts at
  the round's failure-free end of compute, or when the last of them is done (a worker that
  lost its model first downloads it), and the sync averages the survivors' rounds; otherwise
  the round runs as under `wait`. Policy `wait`: every worker takes part; one down at T starts
  when it rejoins, and one that crashes before the round's end rejoins, downloads the model and
  redoes its round (a new round id; the lost one has a start and no arrive). The all-reduce
  needs every region connected for its whole duration (it starts again after a cut).
  """
  tl = env.failure_timeline()
  policy = tl.policy
  net = network.from_environment(env)
  w_count = env.num_workers
  comp = plan.compute_ms.tolist()
  region = env.worker_region.tolist()
  download = settings.bytes_of("download")
  rejoin = [(r, net.transfer_ms(0, r, download)) for r in region]
  ring_block = tl.all_links() if env.num_regions > 1 else tl.region_out[0]
  A = float(plan.allreduce_ms)  # pylint: disable=invalid-name
  slowest = max(comp)
  round_time = float(plan.round_ms[0])
  h = plan.worker_H.tolist()
  need = (w_count if policy.synchronous == "wait"
          else max(1, math.ceil(policy.quorum * w_count - 1e-9)))
  stale = [False] * w_count
  kinds, times, idx, start_version = [], [], [], []
  round_worker, sync_rounds, sync_steps = [], [], []
  T, counted, k = 0.0, 0, 0
  total = settings.total_local_steps
  while True:
    deadline = T + slowest
    up = [w for w in range(w_count) if tl.worker_down[w].up_at(T) == T]
    quorum = policy.synchronous == "quorum" and len(up) >= need
    if quorum:
      starts, E, arrived = _round_with_failures(tl, T, up, stale, comp, rejoin, ring_block, A,
                                                deadline, T + round_time, False)
      if len(arrived) < need:
        quorum = False
    if not quorum:
      starts, E, arrived = _round_with_failures(tl, T, range(w_count), stale, comp, rejoin,
                                                ring_block, A, deadline, T + round_time, True)
    last_round = {}
    for _, (s, w) in sorted(enumerate(starts), key=lambda p: (p[1][0], p[0])):
      r = len(round_worker)
      round_worker.append(w)
      last_round[w] = r
      kinds.append(ev.START)
      times.append(s)
      idx.append(r)
      start_version.append(k)
    arrived = sorted(arrived)
    for w in arrived:
      kinds.append(ev.ARRIVE)
      times.append(E)
      idx.append(last_round[w])
    got = set(arrived)
    stale = [w not in got for w in range(w_count)]  # left out or crashed: lost its model
    steps = sum(h[w] for w in arrived)
    counted += steps
    k += 1
    kinds.append(ev.SYNC)
    times.append(E)
    idx.append(len(sync_rounds))
    sync_rounds.append([last_round[w] for w in arrived])
    sync_steps.append(steps)
    T = E
    if counted >= total:
      break

  n = len(kinds) + 1
  cols = ev.empty_columns(n)
  kind = np.array(kinds + [ev.STOP], dtype=np.int8)
  cols["kind"][:] = kind
  rw = np.asarray(round_worker, dtype=np.int64)
  round_H = plan.worker_H[rw]
  t_all = np.asarray(times, dtype=np.float64)
  body_kind = kind[:-1]
  idx_a = np.asarray(idx, dtype=np.int64)
  t_start = np.full(len(rw), np.nan)
  t_start[idx_a[body_kind == ev.START]] = t_all[body_kind == ev.START]
  t_arrive = np.full(len(rw), np.nan)
  t_arrive[idx_a[body_kind == ev.ARRIVE]] = t_all[body_kind == ev.ARRIVE]
  data_start, data_end, lr_offset = _assemble.data_blocks(
      round_H, settings.local_batch, settings.global_batch, plan.uniform_H)
  body = {key: col[:-1] for key, col in cols.items()}
  st, _ = _assemble.fill_rounds(
      body, body_kind, idx_a, round_worker=rw, round_H=round_H, t_start=t_start,
      t_arrive=t_arrive, data_start=data_start, data_end=data_end, lr_offset=lr_offset,
      worker_server=plan.worker_server)
  body["version"][st] = np.asarray(start_version, dtype=np.int64)
  sy = body_kind == ev.SYNC
  num_syncs = len(sync_rounds)
  body["t"][sy] = t_all[sy]
  body["server"][sy] = 0
  body["version"][sy] = np.arange(1, num_syncs + 1)
  body["steps"][sy] = sync_steps
  body["counted_steps"][sy] = np.cumsum(np.asarray(sync_steps, dtype=np.int64))
  cols["t"][-1] = t_all[-1]
  cols["version"][-1] = num_syncs
  cols["counted_steps"][-1] = counted
  counts = np.zeros(n + 1, dtype=np.int64)
  counts[1:-1][sy] = [len(r) for r in sync_rounds]
  rounds_ptr = np.cumsum(counts)
  rounds_flat = np.asarray([r for rs in sync_rounds for r in rs], dtype=np.int32)
  return ev.Schedule(settings, env, plan, _assemble.finish(cols), rounds_ptr, rounds_flat)
