"""The 2 x 2 environment of the network tests (latency, jitter, traces) and its settings.

Regions 0 and 1, two workers each; 100 Gbps inside a region, 1 Gbps 0 -> 1, 0.5 Gbps 1 -> 0
(as conftest.py's TINY); B = 12.5e9 bytes = 1e11 bits, so a transfer inside a region takes
1,000 ms and the times in these tests are exact.
"""
from halos_jax.schedule import ScheduleSettings, environment_from_dict

BASE = {"num_regions": 2, "network_bandwidths": [[100.0, 1.0], [0.5, 100.0]],
        "worker_speeds": [[1.0, 0.5], [1.0, 0.25]]}
B = 12_500_000_000
ALGORITHMS = ["ddp", "diloco", "async_local_sgd", "halos"]


def env(**extra):
  """BASE plus the given environment keys (None values left out)."""
  return environment_from_dict(dict(BASE, **{k: v for k, v in extra.items() if v is not None}),
                               name="tiny")


def settings(algorithm, **kw):
  base = dict(algorithm=algorithm, H=2, total_local_steps=16, local_batch=2, global_batch=8,
              step_time_ms=1000.0, message_bytes=B, K=2, workers_per_lps=2)
  base.update(kw)
  return ScheduleSettings(**base)
