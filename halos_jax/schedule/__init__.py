"""The asynchrony scheduler: environments, the timing model and the whole run's events.

When things happen in every algorithm here depends only on the configuration (speeds,
bandwidths, H, K, message size), never on model values: the schedule of a whole run is computed
before any training and the replay engine (halos_jax.replay) executes it. Plain Python + numpy.
Each algorithm's own part (its servers, its event loop) is its module in halos_jax.algorithms;
this package is the machinery they share; message times come from halos_jax.network.

  env = load_environment("geo4")
  settings = ScheduleSettings(algorithm="halos", H=8, rescale_local_steps=True, K=32,
                              workers_per_lps=4, total_local_steps=98_304, local_batch=64,
                              global_batch=1_024, step_time_ms=238.391,
                              message_bytes=281_706_496)
  schedule = build_schedule(env, settings)   # schedule.events, .summary(), .sha256()
"""
from halos_jax.network import Ring, allreduce_ms, best_ring, best_ring_bandwidth, transfer_ms
from halos_jax.schedule.build import build_schedule, schedule_from_config
from halos_jax.schedule.environment import (Environment, InvalidEnvironment,
                                            environment_from_dict, load_environment, presets)
from halos_jax.schedule.events import (KINDS, Event, Events, InvalidSchedule, Schedule,
                                       read_jsonl)
from halos_jax.schedule.plan import Plan, compute_ms, make_plan
from halos_jax.schedule.settings import InvalidSettings, ScheduleSettings

__all__ = [
    "KINDS", "Environment", "Event", "Events", "InvalidEnvironment",
    "InvalidSchedule", "InvalidSettings", "Plan", "Ring", "Schedule", "ScheduleSettings",
    "allreduce_ms", "best_ring", "best_ring_bandwidth", "build_schedule", "compute_ms",
    "environment_from_dict", "load_environment", "make_plan", "presets", "read_jsonl",
    "schedule_from_config", "transfer_ms",
]
