"""Fixtures of the scheduler tests: a tiny 2 x 2 environment whose times are exact integers.

TINY: regions 0 and 1, two workers each; bandwidth 100 Gbps inside a region, 1 Gbps from 0 to 1
and 0.5 Gbps from 1 to 0; raw speeds [1, 0.5] and [1, 0.25] (already normalised: the largest is
1). Messages of B = 12.5e9 bytes = 1e11 bits, so every transfer is an exact integer number of ms:
  inside a region 1e11 / 1e11 * 1e3 = 1,000 ms; 0 -> 1: 100,000 ms; 1 -> 0: 200,000 ms.
A local step takes 1,000 ms at speed 1, so compute times are integers too (1000 * n / s with
s in {1, 0.5, 0.25}). All expected times in these tests are therefore exact in float64.
"""
import pytest

from halos_jax.schedule import ScheduleSettings, environment_from_dict

TINY_ENV = {"num_regions": 2, "network_bandwidths": [[100.0, 1.0], [0.5, 100.0]],
            "worker_speeds": [[1.0, 0.5], [1.0, 0.25]]}
TINY_BYTES = 12_500_000_000


@pytest.fixture
def tiny_env():
  return environment_from_dict(TINY_ENV, name="tiny")


def _tiny_settings(algorithm, **kw):
  base = dict(algorithm=algorithm, H=2, total_local_steps=8, local_batch=2, global_batch=8,
              step_time_ms=1000.0, message_bytes=TINY_BYTES, rescale_local_steps=False, K=2,
              workers_per_lps=2)
  base.update(kw)
  return ScheduleSettings(**base)


@pytest.fixture
def tiny_settings():
  """tiny_settings(algorithm, **overrides): H 2, K 2, 2 workers per LPS, local batch 2,
  global batch 8, total 8 local steps, step 1,000 ms, B = 12.5e9 bytes."""
  return _tiny_settings
