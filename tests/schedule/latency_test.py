"""Latency (issue 15, step 1): `network_latencies_ms` in the environment, hand-derived times,
the reference unchanged without it, and monotonicity (less latency never delays anything)."""
import numpy as np
import pytest
from hypothesis import given, settings, strategies as st

from halos_jax import network
from halos_jax.schedule import (InvalidEnvironment, build_schedule,
                                load_environment)

import network_testlib
from network_testlib import ALGORITHMS, B, settings as _settings  # noqa: F401


LAT = [[2.0, 40.0], [55.0, 3.0]]


def _env(latency=None):
  return network_testlib.env(network_latencies_ms=latency)


def test_one_transfer_is_latency_plus_size_over_bandwidth():
  net = network.from_environment(_env(LAT))
  assert isinstance(net, network.WithLatency)
  assert net.transfer_ms(0, 1, B) == 40.0 + 100_000.0
  assert net.transfer_ms(1, 0, B) == 55.0 + 200_000.0
  assert net.transfer_ms(1, 1, B) == 3.0 + 1_000.0


def test_allreduce_pays_the_largest_ring_hop_latency_in_each_phase():
  """4 workers, 2 per region, ring 0 -> 1 -> 0: hops 0->0 (2), 0->1 (40), 1->1 (3), 1->0 (55);
  2 (4 - 1) = 6 phases of at most 55 ms, plus the reference 2 (n-1)/n B / b* with b* = 0.5."""
  net = network.from_environment(_env(LAT))
  reference = network.allreduce_ms(B, 4, 0.5)
  assert net.allreduce_ms(B, 4) == 6 * 55.0 + reference
  assert net.allreduce_ms(B, 1) == 0.0


def test_an_async_round_by_hand():
  """Async Local-SGD, worker 1 (region 0, speed 0.5, H = 2; the server in region 0): download
  2 + 1,000 ms, compute 4,000 ms, upload 2 + 1,000 ms: the first arrival at 6,004 ms."""
  s = build_schedule(_env(LAT), _settings("async_local_sgd"))
  first = next(e for e in s.events if e.kind == "arrive" and e.worker == 1)
  assert first.t == 6004.0


def test_no_latency_key_is_the_reference_bit_for_bit():
  for name in ("async_local_sgd", "halos", "diloco"):
    plain = build_schedule(_env(), _settings(name))
    zeros = build_schedule(_env([[0.0, 0.0], [0.0, 0.0]]), _settings(name))
    assert plain.sha256() == zeros.sha256()  # all-zero latency is no latency
    assert "network_latencies_ms" not in plain.header()["env"]
  geo4 = load_environment("geo4")
  assert geo4.latency_ms is None
  assert isinstance(network.from_environment(geo4), network.BandwidthOnly)


@pytest.mark.parametrize("bad,match", [
    ([[1.0, 2.0]], "R x R matrix with R = 2"),
    ([[1.0, -1.0], [0.0, 0.0]], r"network_latencies_ms\[0\]\[1\] must be a finite number"),
    ([[1.0, "x"], [0.0, 0.0]], r"network_latencies_ms\[0\]\[1\]"),
    ([[1.0, float("inf")], [0.0, 0.0]], r"network_latencies_ms\[0\]\[1\]"),
])
def test_bad_latency_matrices(bad, match):
  with pytest.raises(InvalidEnvironment, match=match):
    _env(bad)


def _event_times(s, kinds):
  return np.sort([e.t for e in s.events if e.kind in kinds])


@settings(max_examples=25, deadline=None)
@given(st.sampled_from(["async_local_sgd", "halos", "diloco", "ddp"]),
       st.lists(st.floats(0.0, 5_000.0), min_size=4, max_size=4),
       st.floats(0.0, 1.0))
def test_less_latency_never_delays_an_arrival(algorithm, lat, shrink):
  """Each worker's rounds only get shorter, so the k-th arrival (sync) comes no later."""
  high = np.asarray(lat).reshape(2, 2)
  slow = build_schedule(_env(high.tolist()), _settings(algorithm))
  fast = build_schedule(_env((high * shrink).tolist()), _settings(algorithm))
  kinds = ("sync",) if algorithm in ("diloco", "ddp") else ("arrive",)
  a, b = _event_times(slow, kinds), _event_times(fast, kinds)
  n = min(len(a), len(b))
  assert n > 0 and np.all(b[:n] <= a[:n])


@settings(max_examples=25, deadline=None)
@given(st.sampled_from(["async_local_sgd", "halos", "diloco", "ddp"]),
       st.lists(st.floats(1.0, 8.0), min_size=4, max_size=4))
def test_more_bandwidth_never_delays_an_arrival(algorithm, gain):
  """Without sharing, every link at least as fast (each by its own factor >= 1) makes every
  transfer and all-reduce no longer, so the k-th arrival (sync) comes no later."""
  base = np.asarray(network_testlib.BASE["network_bandwidths"], dtype=np.float64)
  faster = (base * np.asarray(gain).reshape(2, 2)).tolist()
  slow = build_schedule(_env(), _settings(algorithm))
  fast = build_schedule(network_testlib.env(network_bandwidths=faster), _settings(algorithm))
  kinds = ("sync",) if algorithm in ("diloco", "ddp") else ("arrive",)
  a, b = _event_times(slow, kinds), _event_times(fast, kinds)
  n = min(len(a), len(b))
  assert n > 0 and np.all(b[:n] <= a[:n])


# The source of configs/envs/geo4_wan.yaml: "AWS Latency Index" (bytecode.tech, 2019), mean
# latency of a call, Feb - Mar 2019, in seconds, (origin, destination).
_CALLS_S = {("oregon", "ireland"): 0.267397, ("ireland", "oregon"): 0.267159,
            ("oregon", "sydney"): 0.278629, ("sydney", "oregon"): 0.278496,
            ("ireland", "saopaulo"): 0.367805, ("saopaulo", "ireland"): 0.367862,
            ("oregon", "saopaulo"): 0.366153, ("saopaulo", "oregon"): 0.365982,
            ("ireland", "sydney"): 0.536054, ("sydney", "ireland"): 0.536064,
            ("saopaulo", "sydney"): 0.630039, ("sydney", "saopaulo"): 0.629908}


def test_geo4_wan_preset_is_the_cited_figures():
  """geo4_wan: geo4's bandwidths and speeds, one-way latency = half the cited call latency
  (regions 0 Oregon, 1 Sao Paulo, 2 Ireland, 3 Sydney), 1 ms inside a region, fair sharing."""
  wan, geo4 = load_environment("geo4_wan"), load_environment("geo4")
  np.testing.assert_array_equal(wan.bandwidth_gbps, geo4.bandwidth_gbps)
  np.testing.assert_array_equal(wan.worker_speed, geo4.worker_speed)
  assert wan.link_sharing == "fair"
  names = ["oregon", "saopaulo", "ireland", "sydney"]
  for i, a in enumerate(names):
    for j, b in enumerate(names):
      want = 1.0 if i == j else _CALLS_S[(a, b)] * 1e3 / 2
      assert wan.latency_ms[i, j] == pytest.approx(want, abs=6e-4), (a, b)  # 3 decimals


@pytest.mark.parametrize("algorithm", ["ddp", "diloco", "async_local_sgd", "halos",
                                       "streaming_diloco", "streaming_halos"])
def test_geo4_wan_schedules_take_longer_than_geo4(algorithm):
  """Latency and sharing never make the same run shorter (the runlocal shape, 1,024 steps)."""
  kw = dict(algorithm=algorithm, H=32 if algorithm != "halos" else 8, total_local_steps=1024,
            local_batch=64, global_batch=1024, step_time_ms=238.391, message_bytes=281_706_496,
            rescale_local_steps=algorithm in ("halos", "streaming_halos"))
  if algorithm.startswith("streaming"):
    kw.update(fragments=2, overlap_steps=8 if algorithm == "streaming_diloco" else None)
  if algorithm.endswith("halos"):
    kw.update(K=32, workers_per_lps=4, H=8)
  from halos_jax.schedule import ScheduleSettings  # pylint: disable=g-import-not-at-top
  s = ScheduleSettings(**kw)
  wan = build_schedule(load_environment("geo4_wan"), s).summary_basic()
  ref = build_schedule(load_environment("geo4"), s).summary_basic()
  assert wan["simulated_time_ms"] > ref["simulated_time_ms"]
