r"""Scheduler throughput and memory at scale: 64 regions x 16 workers, >= 10^6 events.

  .venv/bin/python benchmarks/schedule_scale.py [--events=1000000] [--algorithms=halos,ddp]
                                                [--memory=false] [--sharing=none,fair]

For each algorithm: builds a schedule of about --events events on a seeded random environment
(inter-region links uniform in [0.1, 1] Gbps, possibly asymmetric, 100 Gbps inside a region; raw
worker speeds uniform in [0.1, 1]) and prints events per second of `build_schedule` (best of
--repeats, wall clock), then (with --memory) the tracemalloc peak of building at half and at the
full size, per event: a constant bytes/event shows memory proportional to the schedule. The
ring search for the 64 regions is timed on its own, and a bare Python loop gives the speed of
the interpreter on this machine (the async/halos builders are bound by their heapq loop).
With --sharing=none,fair (the default) every algorithm is built a second time with
`link_sharing: fair` (docs/schedule.md, "Link sharing"; async/halos then run the flow
simulator), and --caps=G adds uplink/downlink caps of G Gbps to every region in that line.
"""
from __future__ import annotations

import argparse
import gc
import time
import tracemalloc

import numpy as np

from halos_jax.runtime import cpu_line
from halos_jax.schedule import (ScheduleSettings, best_ring, build_schedule,
                                environment_from_dict)

REGIONS, WORKERS_PER_REGION = 64, 16


def environment(seed: int = 0, sharing: str = "none", caps: float | None = None):
  rng = np.random.default_rng(seed)
  b = rng.uniform(0.1, 1.0, size=(REGIONS, REGIONS))
  np.fill_diagonal(b, 100.0)
  speeds = rng.uniform(0.1, 1.0, size=(REGIONS, WORKERS_PER_REGION))
  d = {"network_bandwidths": b.tolist(), "worker_speeds": speeds.tolist()}
  if sharing != "none":
    d["link_sharing"] = sharing
    if caps is not None:
      d["uplink_gbps"] = d["downlink_gbps"] = [caps] * REGIONS
  return environment_from_dict(d, name=f"random64x16-s{seed}")


def settings_for(algorithm: str, env, events: int) -> ScheduleSettings:
  """Settings whose schedule has about `events` events."""
  h = {"ddp": 1, "diloco": 32, "diloco_dynupd": 32, "async_local_sgd": 32, "halos": 8}[algorithm]
  base = ScheduleSettings(algorithm=algorithm, H=h, total_local_steps=1, local_batch=64,
                          global_batch=1024, step_time_ms=238.391, message_bytes=281_706_496,
                          rescale_local_steps=algorithm in ("async_local_sgd", "halos"),
                          K=32, workers_per_lps=WORKERS_PER_REGION)
  h_w = base.local_steps(env.worker_speed)
  if base.synchronous:  # 2W + 1 events per round of sum(H_w) steps
    total = -(-events // (2 * env.num_workers + 1)) * int(h_w.sum())
  else:  # about 2 events per round of mean(H_w) steps
    total = int(events / 2 * float(h_w.mean()) * 1.01)
  return ScheduleSettings(**{**base.to_dict(), "total_local_steps": max(1, total)})


def main():
  parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
  parser.add_argument("--events", type=int, default=1_000_000)
  parser.add_argument("--algorithms", default="ddp,diloco,diloco_dynupd,async_local_sgd,halos")
  parser.add_argument("--repeats", type=int, default=2)
  parser.add_argument("--memory", default="true", choices=("true", "false"))
  parser.add_argument("--sharing", default="none,fair",
                      help="link_sharing modes to build each algorithm with (none, fair)")
  parser.add_argument("--caps", type=float, default=None,
                      help="with fair: uplink and downlink caps in Gbps for every region")
  args = parser.parse_args()
  print(cpu_line())
  t0 = time.perf_counter()
  total = 0
  for i in range(10_000_000):  # interpreter speed of this machine, to compare runs across hosts
    total += i
  print(f"calibration: a bare 10^7-iteration Python loop (total += i) takes "
        f"{time.perf_counter() - t0:.2f} s here")
  env = environment()
  envs = {mode: environment(sharing=mode, caps=args.caps) for mode in args.sharing.split(",")}
  t0 = time.perf_counter()
  ring = best_ring(env.bandwidth_gbps)
  print(f"environment: {REGIONS} regions x {WORKERS_PER_REGION} workers; best ring b* = "
        f"{ring.bandwidth_gbps:.4f} Gbps (exact={ring.exact}, upper bound "
        f"{ring.upper_bound_gbps:.4f}) found in {time.perf_counter() - t0:.3f} s")
  for algorithm, mode in ((a, m) for a in args.algorithms.split(",") for m in envs):
    env = envs[mode]
    s = settings_for(algorithm, env, args.events)
    best, schedule = float("inf"), None
    for _ in range(args.repeats):
      schedule = None
      gc.collect()
      t0 = time.perf_counter()
      schedule = build_schedule(env, s)
      best = min(best, time.perf_counter() - t0)
    n = len(schedule)
    label = algorithm if mode == "none" else f"{algorithm} {mode}" + (
        f" caps {args.caps:g}" if args.caps is not None else "")
    line = (f"{label:>21}: {n:>9,} events in {best:6.3f} s = {n / best / 1e6:5.2f} M events/s"
            f" ({schedule.summary_basic()['server_updates']:,} server updates, "
            f"{s.total_local_steps:,} local steps)")
    if args.memory == "true":
      del schedule
      per_event = []
      for frac in (0.5, 1.0):
        s_m = settings_for(algorithm, env, int(args.events * frac))
        gc.collect()
        tracemalloc.start()
        sch = build_schedule(env, s_m)
        _, peak = tracemalloc.get_traced_memory()
        tracemalloc.stop()
        per_event.append((len(sch), peak))
        del sch
      line += "; peak memory " + ", ".join(
          f"{p / 2**20:.0f} MiB at {m:,} events ({p / m:.0f} B/event)" for m, p in per_event)
    print(line, flush=True)


if __name__ == "__main__":
  main()
