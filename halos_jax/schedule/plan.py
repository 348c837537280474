"""The static part of a schedule: who talks to whom, and how long each kind of thing takes.

A `Plan` is a pure function of (environment, settings): the servers and their regions, each
worker's server, H_w, and the durations of the timing model (HALOS.md section 3). The builders
run their event loops on it; a Schedule keeps it for the analysis (Gantt, utilisation, bytes).
"""
from __future__ import annotations

from typing import NamedTuple

import numpy as np

from halos_jax.schedule import timing
from halos_jax.schedule.environment import Environment
from halos_jax.schedule.settings import InvalidSettings, ScheduleSettings

GPS_REGION = 0  # the PS of async_local_sgd and the GPS of halos live in region 0
PS_REGION = 0


class Plan(NamedTuple):
  """Servers, per-worker round shape and durations (all times in ms).

  Attributes:
    num_servers: 1 (the PS) or L (the LPS of halos; the GPS is not numbered).
    worker_server: int64 [W], the server of each worker.
    server_region: region of each server (tuple of length num_servers).
    worker_H: int64 [W], H_w.
    compute_ms: float64 [W], compute of one round: step_time_ms * H_w / s_w.
    transfer_ms: float64 [W], one server <-> worker transfer (async, halos): transfer over
      bandwidth[server region, worker region]; 0 for synchronous algorithms.
    round_ms: float64 [W], a round from start to arrival: 2 * transfer + compute (async,
      halos); the synchronous round time (max compute + all-reduce) for ddp/diloco.
    allreduce_ms: ring all-reduce time (synchronous algorithms), else 0.
    ring: the best ring (synchronous algorithms), else None.
    up_ms: float64 [L], halos: Delta from LPS l to the GPS, transfer(LPS region -> 0).
    down_ms: float64 [L], halos: global model from the GPS to LPS l, transfer(0 -> LPS region).
    uniform_H: H if the LR offset is rounded down to a multiple of H (synchronous, one H for
      all workers), else 0.
  """
  num_servers: int
  worker_server: np.ndarray
  server_region: tuple
  worker_H: np.ndarray
  compute_ms: np.ndarray
  transfer_ms: np.ndarray
  round_ms: np.ndarray
  allreduce_ms: float
  ring: timing.Ring | None
  up_ms: np.ndarray
  down_ms: np.ndarray
  uniform_H: int


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


def make_plan(env: Environment, settings: ScheduleSettings) -> Plan:
  """The Plan of (env, settings); raises InvalidSettings if they do not fit together."""
  b = env.bandwidth_gbps
  s = env.worker_speed
  w = env.num_workers
  msg = settings.message_bytes
  h_w = settings.local_steps(s)
  # compute_w = step_time_ms * H_w / s_w
  compute = np.array([timing.compute_ms(settings.step_time_ms, int(h), float(v))
                      for h, v in zip(h_w, s)], dtype=np.float64)
  empty = np.zeros(0, dtype=np.float64)
  if settings.synchronous:
    ring = timing.best_ring(b)
    ar = timing.allreduce_ms(msg, w, ring.bandwidth_gbps)
    # Round time = slowest worker's compute + all-reduce (no overlap).
    round_time = float(compute.max()) + ar
    uniform = int(h_w[0]) if np.all(h_w == h_w[0]) else 0
    return Plan(1, np.zeros(w, dtype=np.int64), (PS_REGION,), h_w, compute,
                np.zeros(w, dtype=np.float64), np.full(w, round_time), ar, ring, empty, empty,
                uniform)
  if settings.algorithm == "halos":
    worker_server, server_region = _lps_layout(env, settings.workers_per_lps)
  else:  # async_local_sgd: one PS in region 0
    worker_server, server_region = np.zeros(w, dtype=np.int64), (PS_REGION,)
  # One server <-> worker transfer uses the server -> worker link (reference semantics: the
  # round is 2 * transfer(server region, worker region) + compute).
  xfer = np.array([timing.transfer_ms(msg, float(b[server_region[ws], r]))
                   for ws, r in zip(worker_server, env.worker_region)], dtype=np.float64)
  round_ms = 2 * xfer + compute
  if settings.algorithm == "halos":
    up = np.array([timing.transfer_ms(msg, float(b[r, GPS_REGION])) for r in server_region])
    down = np.array([timing.transfer_ms(msg, float(b[GPS_REGION, r])) for r in server_region])
  else:
    up = down = empty
  return Plan(len(server_region), worker_server, server_region, h_w, compute, xfer, round_ms,
              0.0, None, up, down, 0)
