"""Async Local-SGD (docs/algorithms.md 2.5): one parameter server in region 0, workers never wait.

Every worker starts at time 0. A round of worker w takes
    round_w = 2 * transfer(PS region -> worker region) + step_time_ms * H_w / s_w
and when its pseudo-gradient arrives the PS applies it at once (DN; version += 1, counts H_w
local steps) and restarts w immediately from the PS's current model with the next data block.
The run stops right after the arrival at which the counted steps reach total_local_steps.

Events: W `start` at t = 0, then per arrival `arrive` + the worker's next `start`; the last
arrival is followed by `stop` instead.

References:
  Liu et al., "Asynchronous Local-SGD Training for Language Modeling", 2024 (arXiv 2401.09135).
"""
from __future__ import annotations

import heapq
from array import array

import numpy as np

from halos_jax.algorithms import base
from halos_jax.schedule import _assemble
from halos_jax.schedule import events as ev
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

  # -- columns: [W starts] + [arrive, start] * (A - 1) + [arrive, stop]
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
