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
"""
from __future__ import annotations

import heapq
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
