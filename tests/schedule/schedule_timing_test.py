"""The timing formulas (docs/algorithms.md 3) and the best-ring search against brute force."""
import itertools

import hypothesis.extra.numpy as hnp
import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from halos_jax import network
from halos_jax.schedule import load_environment, plan


def test_formulas_by_hand():
  # 281,706,496 bytes = 2,253,651,968 bits; over 0.127 Gbps: 2.253651968 / 0.127 s.
  assert network.transfer_ms(281_706_496, 0.127) == pytest.approx(17745.291086614173,
                                                                 rel=1e-15)
  # 1e11 bits over 100 Gbps = 1 s exactly (all operands exact in binary at these values).
  assert network.transfer_ms(12_500_000_000, 100.0) == 1000.0
  # 32 steps at speed 0.5: 238.391 * 32 / 0.5 = 15,257.024 ms (rounding of the product only).
  assert plan.compute_ms(238.391, 32, 0.5) == pytest.approx(15257.024, rel=1e-15)
  # 2 (n - 1) / n * transfer: n = 16 -> 1.875 x 17,745.29... ms; n = 1 -> 0.
  assert network.allreduce_ms(281_706_496, 16, 0.127) == pytest.approx(
      1.875 * 17745.291086614173, rel=1e-14)
  assert network.allreduce_ms(281_706_496, 1, 0.127) == 0.0


def test_geo4_ring():
  ring = network.best_ring(load_environment("geo4").bandwidth_gbps)
  # The paper's b*: 0.127 Gbps, e.g. 0 -> 3 -> 2 -> 1 -> 0 with hops 0.202, 0.127, 0.386, 0.537
  # (the 0.117 link 1 <-> 3 is avoided; every ring must use a link of region 3, and the best
  # two of region 3's links are 0.202 and 0.127).
  assert ring.bandwidth_gbps == 0.127 and ring.exact
  assert network.ring_bandwidth(load_environment("geo4").bandwidth_gbps, ring.order) == 0.127
  assert network.best_ring_bandwidth(load_environment("geo4").bandwidth_gbps) == 0.127


def test_small_rings():
  assert network.best_ring(np.array([[7.0]])) == network.Ring(7.0, (0,), True, 7.0)
  # Two regions: the ring 0 -> 1 -> 0 uses both directions: min(0.3, 0.9).
  assert network.best_ring(np.array([[1.0, 0.3], [0.9, 1.0]])).bandwidth_gbps == 0.3


def test_direction_matters_for_asymmetric_matrices():
  # Cycle 0 -> 1 -> 2 -> 0 uses (0,1), (1,2), (2,0) = 5, 5, 5; the reverse uses 1, 1, 1.
  b = np.array([[9, 5, 1], [1, 9, 5], [5, 1, 9]], dtype=float)
  ring = network.best_ring(b)
  assert ring.bandwidth_gbps == 5.0 and ring.order == (0, 1, 2)
  assert network.best_ring(b.T).order == (0, 2, 1)


matrices = st.integers(3, 7).flatmap(lambda r: st.one_of(
    hnp.arrays(np.float64, (r, r), elements=st.sampled_from([0.1, 0.2, 0.5, 1.0])),  # ties
    hnp.arrays(np.float64, (r, r), elements=st.floats(0.05, 2.0))))


@given(matrices, st.sampled_from(["dp", "search"]))
@settings(max_examples=60)
def test_ring_search_equals_brute_force(b, method):
  ring = network.best_ring(b, method=method)
  brute = max(min(b[p[k], p[(k + 1) % len(p)]] for k in range(len(p)))
              for p in itertools.permutations(range(len(b))))
  assert ring.bandwidth_gbps == brute  # exact: both pick one of the matrix entries
  assert ring.exact and ring.upper_bound_gbps == brute
  assert sorted(ring.order) == list(range(len(b))) and ring.order[0] == 0
  assert network.ring_bandwidth(b, ring.order) == brute


@given(st.integers(9, 13), st.integers(0, 2**31 - 1))
@settings(max_examples=8)
def test_dp_and_search_agree_beyond_brute_force(r, seed):
  b = np.random.default_rng(seed).uniform(0.1, 1.0, (r, r))
  assert network.best_ring(b, "dp").bandwidth_gbps == network.best_ring(b, "search").bandwidth_gbps


def test_many_regions_is_fast_valid_and_proven():
  # 64 regions: far beyond enumeration (63!/2 rings) and the subset DP; patching reaches the
  # upper bound (strong connectivity + cycle cover), which proves optimality.
  b = np.random.default_rng(0).uniform(0.1, 1.0, (64, 64))
  ring = network.best_ring(b)
  assert sorted(ring.order) == list(range(64))
  assert network.ring_bandwidth(b, ring.order) == ring.bandwidth_gbps
  assert ring.exact and ring.bandwidth_gbps == ring.upper_bound_gbps


def test_unproven_result_reports_a_bound(monkeypatch):
  # Force the search to give up (no patching, no DFS nodes): the result is still a valid ring,
  # flagged as not proven, with the bound from the necessary conditions.
  monkeypatch.setattr(network.hamiltonian, "PATCH_TRIES", 0)
  monkeypatch.setattr(network.hamiltonian, "DFS_NODE_BUDGET", 0)
  b = np.random.default_rng(1).uniform(0.1, 1.0, (20, 20))
  ring = network.best_ring(b, method="search")
  assert network.ring_bandwidth(b, ring.order) == ring.bandwidth_gbps
  assert not ring.exact
  assert ring.bandwidth_gbps < ring.upper_bound_gbps
  assert ring.upper_bound_gbps == network.best_ring(b, method="dp").upper_bound_gbps


class _Doubling(network.BandwidthOnly):
  """A network model of our own: every transfer takes twice the reference time."""

  def transfer_ms(self, src, dst, message_bytes):
    return 2 * super().transfer_ms(src, dst, message_bytes)


def test_plans_ask_only_the_network_interface():
  # geo4, HALoS: each worker's transfer is the model's transfer(LPS region -> worker region);
  # swapping the model (no other change) changes exactly those durations.
  from halos_jax import algorithms  # pylint: disable=g-import-not-at-top
  from halos_jax.schedule import ScheduleSettings  # pylint: disable=g-import-not-at-top
  env = load_environment("geo4")
  settings = ScheduleSettings(algorithm="halos", H=8, rescale_local_steps=True, K=32,
                              workers_per_lps=4, total_local_steps=1024, local_batch=64,
                              global_batch=1024, step_time_ms=238.391, message_bytes=281_706_496)
  ref = algorithms.get("halos").make_plan(env, settings)
  net = network.from_environment(env)
  for w in range(env.num_workers):
    lps_region = ref.server_region[ref.worker_server[w]]
    assert ref.transfer_ms[w] == net.transfer_ms(lps_region, env.worker_region[w], 281_706_496)
  assert list(ref.up_ms) == [net.transfer_ms(r, 0, 281_706_496) for r in ref.server_region]
  doubled = plan.server_plan(env, settings, ref.worker_server, ref.server_region, gps_region=0,
                             net=_Doubling(env.bandwidth_gbps))
  np.testing.assert_array_equal(doubled.transfer_ms, 2 * ref.transfer_ms)
  np.testing.assert_array_equal(doubled.up_ms, 2 * ref.up_ms)
  np.testing.assert_array_equal(doubled.compute_ms, ref.compute_ms)
  # The synchronous layout takes its all-reduce from the model too (geo4: b* = 0.127 Gbps).
  sync = plan.synchronous_plan(env, settings, net)
  assert sync.allreduce_ms == network.allreduce_ms(281_706_496, env.num_workers, 0.127)
  assert sync.ring == net.ring
