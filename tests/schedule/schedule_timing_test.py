"""The timing formulas (HALOS.md section 3) and the best-ring search against brute force."""
import itertools

import hypothesis.extra.numpy as hnp
import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from halos_jax.schedule import load_environment, timing


def test_formulas_by_hand():
  # 281,706,496 bytes = 2,253,651,968 bits; over 0.127 Gbps: 2.253651968 / 0.127 s.
  assert timing.transfer_ms(281_706_496, 0.127) == pytest.approx(17745.291086614173,
                                                                 rel=1e-15)
  # 1e11 bits over 100 Gbps = 1 s exactly (all operands exact in binary at these values).
  assert timing.transfer_ms(12_500_000_000, 100.0) == 1000.0
  # 32 steps at speed 0.5: 238.391 * 32 / 0.5 = 15,257.024 ms (rounding of the product only).
  assert timing.compute_ms(238.391, 32, 0.5) == pytest.approx(15257.024, rel=1e-15)
  # 2 (n - 1) / n * transfer: n = 16 -> 1.875 x 17,745.29... ms; n = 1 -> 0.
  assert timing.allreduce_ms(281_706_496, 16, 0.127) == pytest.approx(
      1.875 * 17745.291086614173, rel=1e-14)
  assert timing.allreduce_ms(281_706_496, 1, 0.127) == 0.0


def test_geo4_ring():
  ring = timing.best_ring(load_environment("geo4").bandwidth_gbps)
  # The paper's b*: 0.127 Gbps, e.g. 0 -> 3 -> 2 -> 1 -> 0 with hops 0.202, 0.127, 0.386, 0.537
  # (the 0.117 link 1 <-> 3 is avoided; every ring must use a link of region 3, and the best
  # two of region 3's links are 0.202 and 0.127).
  assert ring.bandwidth_gbps == 0.127 and ring.exact
  assert timing.ring_bandwidth(load_environment("geo4").bandwidth_gbps, ring.order) == 0.127
  assert timing.best_ring_bandwidth(load_environment("geo4").bandwidth_gbps) == 0.127


def test_small_rings():
  assert timing.best_ring(np.array([[7.0]])) == timing.Ring(7.0, (0,), True, 7.0)
  # Two regions: the ring 0 -> 1 -> 0 uses both directions: min(0.3, 0.9).
  assert timing.best_ring(np.array([[1.0, 0.3], [0.9, 1.0]])).bandwidth_gbps == 0.3


def test_direction_matters_for_asymmetric_matrices():
  # Cycle 0 -> 1 -> 2 -> 0 uses (0,1), (1,2), (2,0) = 5, 5, 5; the reverse uses 1, 1, 1.
  b = np.array([[9, 5, 1], [1, 9, 5], [5, 1, 9]], dtype=float)
  ring = timing.best_ring(b)
  assert ring.bandwidth_gbps == 5.0 and ring.order == (0, 1, 2)
  assert timing.best_ring(b.T).order == (0, 2, 1)


matrices = st.integers(3, 7).flatmap(lambda r: st.one_of(
    hnp.arrays(np.float64, (r, r), elements=st.sampled_from([0.1, 0.2, 0.5, 1.0])),  # ties
    hnp.arrays(np.float64, (r, r), elements=st.floats(0.05, 2.0))))


@given(matrices, st.sampled_from(["dp", "search"]))
@settings(max_examples=60)
def test_ring_search_equals_brute_force(b, method):
  ring = timing.best_ring(b, method=method)
  brute = max(min(b[p[k], p[(k + 1) % len(p)]] for k in range(len(p)))
              for p in itertools.permutations(range(len(b))))
  assert ring.bandwidth_gbps == brute  # exact: both pick one of the matrix entries
  assert ring.exact and ring.upper_bound_gbps == brute
  assert sorted(ring.order) == list(range(len(b))) and ring.order[0] == 0
  assert timing.ring_bandwidth(b, ring.order) == brute


@given(st.integers(9, 13), st.integers(0, 2**31 - 1))
@settings(max_examples=8)
def test_dp_and_search_agree_beyond_brute_force(r, seed):
  b = np.random.default_rng(seed).uniform(0.1, 1.0, (r, r))
  assert timing.best_ring(b, "dp").bandwidth_gbps == timing.best_ring(b, "search").bandwidth_gbps


def test_many_regions_is_fast_valid_and_proven():
  # 64 regions: far beyond enumeration (63!/2 rings) and the subset DP; patching reaches the
  # upper bound (strong connectivity + cycle cover), which proves optimality.
  b = np.random.default_rng(0).uniform(0.1, 1.0, (64, 64))
  ring = timing.best_ring(b)
  assert sorted(ring.order) == list(range(64))
  assert timing.ring_bandwidth(b, ring.order) == ring.bandwidth_gbps
  assert ring.exact and ring.bandwidth_gbps == ring.upper_bound_gbps


def test_unproven_result_reports_a_bound(monkeypatch):
  # Force the search to give up (no patching, no DFS nodes): the result is still a valid ring,
  # flagged as not proven, with the bound from the necessary conditions.
  monkeypatch.setattr(timing, "PATCH_TRIES", 0)
  monkeypatch.setattr(timing, "DFS_NODE_BUDGET", 0)
  b = np.random.default_rng(1).uniform(0.1, 1.0, (20, 20))
  ring = timing.best_ring(b, method="search")
  assert timing.ring_bandwidth(b, ring.order) == ring.bandwidth_gbps
  assert not ring.exact
  assert ring.bandwidth_gbps < ring.upper_bound_gbps
  assert ring.upper_bound_gbps == timing.best_ring(b, method="dp").upper_bound_gbps
