"""The static part of a schedule: who talks to whom, and how long each kind of thing takes.

A `Plan` is a pure function of (environment, settings): the servers and their regions, each
worker's server, H_w, and the durations of the timing model (docs/algorithms.md 3).
Each algorithm module builds its own (`make_plan(env, settings)`) from the two layouts
here: `synchronous_plan` (one server, rounds end in a ring all-reduce) and `server_plan`
(servers that workers talk to, optionally reporting to a GPS). Durations come from the network
model (halos_jax.network). The builders run their event loops on the plan; a Schedule keeps it
for the analysis (Gantt, utilisation, bytes).
"""
from __future__ import annotations

from typing import NamedTuple

import numpy as np

from halos_jax import network
from halos_jax.network import jitter as jitter_lib
from halos_jax.network import ring as ring_lib
from halos_jax.schedule.environment import Environment
from halos_jax.schedule.settings import ScheduleSettings

PS_REGION = 0  # the server of single-server algorithms lives in region 0


class Plan(NamedTuple):
  """Servers, per-worker round shape and durations (all times in ms).

  Attributes:
    num_servers: 1 (a single server) or L (the LPS of a hierarchy; the GPS is not numbered).
    worker_server: int64 [W], the server of each worker.
    server_region: region of each server (tuple of length num_servers).
    worker_H: int64 [W], H_w.
    compute_ms: float64 [W], compute of one round: step_time_ms * H_w / s_w.
    transfer_ms: float64 [W], the model's download from the server (asynchronous algorithms):
      transfer over the server region -> worker region link; 0 for synchronous algorithms.
    round_ms: float64 [W], a round from start to arrival: download + compute + upload
      (asynchronous); the synchronous round time (max compute + all-reduce) otherwise.
    allreduce_ms: ring all-reduce time (synchronous algorithms), else 0.
    ring: the best ring (synchronous algorithms), else None.
    up_ms: float64 [L], hierarchies: Delta from LPS l to the GPS; empty otherwise.
    down_ms: float64 [L], hierarchies: global model from the GPS to LPS l; empty otherwise.
    uniform_H: H if the LR offset is rounded down to a multiple of H (synchronous, one H for
      all workers), else 0.
    upload_ms: float64 [W], the result's upload over the same link (asynchronous algorithms;
      the same array as transfer_ms when both messages have the same size); None: no upload.
  """
  num_servers: int
  worker_server: np.ndarray
  server_region: tuple
  worker_H: np.ndarray
  compute_ms: np.ndarray
  transfer_ms: np.ndarray
  round_ms: np.ndarray
  allreduce_ms: float
  ring: ring_lib.Ring | None
  up_ms: np.ndarray
  down_ms: np.ndarray
  uniform_H: int
  upload_ms: np.ndarray | None = None

  @property
  def hierarchical(self) -> bool:
    """True when the servers are LPS that exchange with a GPS (up_ms/down_ms are set)."""
    return len(self.up_ms) > 0


def compute_ms(step_time_ms: float, num_steps: int, speed: float) -> float:
  """n local steps of a worker of relative speed s: step_time_ms * n / s."""
  return step_time_ms * num_steps / speed


def _compute(env: Environment, settings: ScheduleSettings) -> tuple[np.ndarray, np.ndarray]:
  """H_w and the compute of one round of every worker: step_time_ms * H_w / s_w."""
  h_w = settings.local_steps(env.worker_speed)
  compute = np.array([compute_ms(settings.step_time_ms, int(h), float(v))
                      for h, v in zip(h_w, env.worker_speed)], dtype=np.float64)
  return h_w, compute


def synchronous_plan(env: Environment, settings: ScheduleSettings,
                     net: network.NetworkModel | None = None) -> Plan:
  """One server; a round = the slowest worker's compute + a ring all-reduce (no overlap)."""
  net = net or network.from_environment(env)
  w = env.num_workers
  h_w, compute = _compute(env, settings)
  ar = net.allreduce_ms(settings.bytes_of("upload"), w)
  round_time = float(compute.max()) + ar
  uniform = int(h_w[0]) if np.all(h_w == h_w[0]) else 0
  empty = np.zeros(0, dtype=np.float64)
  return Plan(1, np.zeros(w, dtype=np.int64), (PS_REGION,), h_w, compute,
              np.zeros(w, dtype=np.float64), np.full(w, round_time), ar, net.ring, empty, empty,
              uniform)


def server_plan(env: Environment, settings: ScheduleSettings, worker_server: np.ndarray,
                server_region: tuple, *, gps_region: int | None = None,
                net: network.NetworkModel | None = None) -> Plan:
  """Workers talk to their server: a round = 2 * transfer(server -> worker) + compute.

  Args:
    env: the environment.
    settings: the schedule settings.
    worker_server: int64 [W], each worker's server.
    server_region: each server's region.
    gps_region: for a hierarchy, the GPS's region (sets up_ms and down_ms); None: no GPS.
    net: the network model (default: the environment's).
  """
  net = net or network.from_environment(env)
  h_w, compute = _compute(env, settings)
  # Both transfers of a round use the server -> worker link (reference semantics: the round
  # is 2 * transfer(server region, worker region) + compute), each with its own message size.
  def per_worker(size):
    return np.array([net.transfer_ms(server_region[ws], r, size)
                     for ws, r in zip(worker_server, env.worker_region)], dtype=np.float64)

  xfer = per_worker(settings.bytes_of("download"))
  upload = xfer if settings.bytes_of("upload") == settings.bytes_of("download") else per_worker(
      settings.bytes_of("upload"))
  round_ms = xfer + upload + compute
  empty = np.zeros(0, dtype=np.float64)
  if gps_region is None:
    up = down = empty
  else:
    up = np.array([net.transfer_ms(r, gps_region, settings.bytes_of("delta"))
                   for r in server_region])
    down = np.array([net.transfer_ms(gps_region, r, settings.bytes_of("global"))
                     for r in server_region])
  return Plan(len(server_region), worker_server, server_region, h_w, compute, xfer, round_ms,
              0.0, None, up, down, 0, upload)


def round_clock(env: Environment, settings: ScheduleSettings, plan: Plan,
                net: network.NetworkModel | None = None):
  """When an async round ends, if that varies from round to round; None when every round of
  worker w takes the plan's `round_ms[w]` (no compute jitter, no bandwidth traces).

  Returns end(w, t_start) -> arrival time: download (from t_start), compute (jittered: worker
  w's rounds in the order it runs them, network/jitter.py), upload, each transfer timed on the
  link's trace (network/traces.py). Called once per round a worker starts, in that order.
  """
  net = net or network.from_environment(env)
  traced = hasattr(net, "transfer_end_ms")
  if env.compute_jitter is None and not traced:
    return None
  w_count = env.num_workers
  factors = (None if env.compute_jitter is None
             else jitter_lib.Factors(env.compute_jitter, w_count))
  if not traced:
    duration = factors.durations(plan)
    return lambda w, t: t + duration(w)
  src = [int(plan.server_region[s]) for s in plan.worker_server]
  dst = env.worker_region.tolist()
  down, up = settings.bytes_of("download"), settings.bytes_of("upload")
  comp = plan.compute_ms.tolist()
  nth = [0] * w_count
  end_of = net.transfer_end_ms

  def end(w: int, t: float) -> float:
    j = nth[w]
    nth[w] = j + 1
    c = comp[w] if factors is None else comp[w] * factors.factor(w, j)
    # Both legs on the server -> worker link (reference semantics).
    return end_of(src[w], dst[w], up, end_of(src[w], dst[w], down, t) + c)
  return end


def make_plan(env: Environment, settings: ScheduleSettings) -> Plan:
  """The Plan of (env, settings), from the algorithm's module; raises InvalidSettings if they
  do not fit together."""
  return settings.algorithm_module.make_plan(env, settings)
