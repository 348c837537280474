"""Bandwidth traces (issue 15, step 3): piecewise-constant bandwidth per link, transfers timed
by integrating over the changes."""
import numpy as np
import pytest

from halos_jax import network
from halos_jax.schedule import (InvalidEnvironment, analysis, build_schedule)

import network_testlib
from network_testlib import ALGORITHMS, B, settings as _settings  # noqa: F401


def _env(traces=None, **extra):
  return network_testlib.env(bandwidth_traces=traces, **extra)


def test_a_transfer_across_a_change_by_hand():
  """1e11 bits on a link at 100 Gbps until 500 ms, then 50 Gbps: 5e10 bits in the first
  500 ms, the other 5e10 at 5e7 bits/ms in 1,000 ms: through at 1,500 ms. Starting at 600 ms:
  2,000 ms at 50 Gbps. With 7 ms latency the bits start at 7 ms: 4.93e10 of them by 500 ms,
  the other 5.07e10 in 1,014 ms: through at 1,514 ms."""
  trace = [{"from": 0, "to": 0, "times_ms": [0, 500], "gbps": [100.0, 50.0]}]
  net = network.from_environment(_env(trace))
  assert net.transfer_end_ms(0, 0, B, 0.0) == 1500.0
  assert net.transfer_end_ms(0, 0, B, 600.0) == 2600.0
  assert net.transfer_end_ms(0, 1, B, 0.0) == 100_000.0  # an untraced link
  lat = network.from_environment(_env(trace, network_latencies_ms=[[7.0, 0.0], [0.0, 0.0]]))
  assert lat.transfer_end_ms(0, 0, B, 0.0) == pytest.approx(1514.0, rel=1e-15)


def test_the_allreduce_follows_the_ring_bottleneck_over_time():
  """4 workers, ring 0 -> 1 -> 0, bottleneck 0.5 Gbps (1 -> 0), traced to 0.25 Gbps from
  t = 0: 2 (4 - 1) / 4 * 1e11 bits = 1.5e11 bits at 0.25 Gbps = 600,000 ms."""
  trace = [{"from": 1, "to": 0, "times_ms": [0], "gbps": [0.25]}]
  net = network.from_environment(_env(trace))
  assert net.allreduce_end_ms(B, 4, 0.0) == 600_000.0


@pytest.mark.parametrize("algorithm", ALGORITHMS)
def test_a_constant_trace_is_the_fixed_bandwidth(algorithm):
  """Every link traced with its own constant bandwidth: the same events at the same times (to
  float rounding: the trace path adds the legs one by one)."""
  bw = network_testlib.BASE["network_bandwidths"]
  traces = [{"from": i, "to": j, "times_ms": [0], "gbps": [bw[i][j]]}
            for i in range(2) for j in range(2)]
  plain = build_schedule(_env(), _settings(algorithm))
  traced = build_schedule(_env(traces), _settings(algorithm))
  np.testing.assert_array_equal(plain.columns["kind"], traced.columns["kind"])
  np.testing.assert_array_equal(plain.columns["worker"], traced.columns["worker"])
  np.testing.assert_allclose(plain.columns["t"], traced.columns["t"], rtol=1e-12)


@pytest.mark.parametrize("algorithm", ALGORITHMS)
def test_a_slower_link_later_never_speeds_anything_up(algorithm):
  """The 0 -> 1 and 1 -> 0 links drop to a tenth after 5 s: no arrival (sync) comes earlier."""
  traces = [{"from": 0, "to": 1, "times_ms": [0, 5000], "gbps": [1.0, 0.1]},
            {"from": 1, "to": 0, "times_ms": [0, 5000], "gbps": [0.5, 0.05]}]
  plain = build_schedule(_env(), _settings(algorithm))
  slow = build_schedule(_env(traces), _settings(algorithm))
  kinds = ("sync",) if algorithm in ("ddp", "diloco") else ("arrive",)
  a = np.sort([e.t for e in plain.events if e.kind in kinds])
  b = np.sort([e.t for e in slow.events if e.kind in kinds])
  n = min(len(a), len(b))
  assert np.all(b[:n] >= a[:n])
  if algorithm in ("ddp", "diloco"):  # (the async runs end before region 1 reports)
    assert b[-1] > a[-1]


def test_traces_are_in_the_header_and_utilisation_stays_a_share():
  traces = [{"from": 0, "to": 1, "times_ms": [0, 5000], "gbps": [1.0, 0.1]}]
  s = build_schedule(_env(traces), _settings("async_local_sgd"))
  assert s.header()["env"]["bandwidth_traces"] == [
      {"from": 0, "to": 1, "times_ms": [0.0, 5000.0], "gbps": [1.0, 0.1]}]
  assert "bandwidth_traces" not in build_schedule(_env(), _settings("halos")).header()["env"]
  for row in analysis.utilisation(s):
    assert 0.0 <= row["compute"] + row["communication"] <= 1.0 + 1e-9


@pytest.mark.parametrize("bad,match", [
    ([{"from": 0, "to": 2, "times_ms": [0], "gbps": [1.0]}], r"\.to must be a region in \[0, 2\)"),
    ([{"from": 0, "to": 1, "times_ms": [5], "gbps": [1.0]}], "must start at 0"),
    ([{"from": 0, "to": 1, "times_ms": [0, 0], "gbps": [1.0, 2.0]}], "increase strictly"),
    ([{"from": 0, "to": 1, "times_ms": [0], "gbps": [0.0]}], r"gbps\[0\]"),
    ([{"from": 0, "to": 1, "times_ms": [0, 1], "gbps": [1.0]}], "the same length"),
    ([{"from": 0, "to": 1, "gbps": [1.0]}], "exactly the keys"),
    ([{"from": 0, "to": 1, "times_ms": [0], "gbps": [1.0]}] * 2, "has two traces"),
])
def test_bad_traces(bad, match):
  with pytest.raises(InvalidEnvironment, match=match):
    _env(bad)


def _jittered_env(sigma, seed=0, interval_ms=500.0, traces=None):
  return network_testlib.env(bandwidth_traces=traces, bandwidth_jitter={
      "distribution": "lognormal", "sigma": sigma, "seed": seed, "interval_ms": interval_ms})


def test_bandwidth_jitter_integrates_each_intervals_factor():
  """1e11 bits on the 100 Gbps link 0 -> 0 with factors f0 on [0, 500) ms and f1 after (for
  these factors the transfer needs the second interval)."""
  env = _jittered_env(0.5, seed=4)
  f = env.bandwidth_jitter.stream(0, 0)
  net = network.from_environment(env)
  rates = [100.0 * f(k) * 1e6 for k in range(64)]  # bits per ms in each interval
  bits, t, k = 1e11, 0.0, 0
  while bits > rates[k] * 500.0:  # the hand integration, interval by interval
    bits -= rates[k] * 500.0
    t, k = t + 500.0, k + 1
  assert k >= 1  # (this seed's transfer does cross a change)
  assert net.transfer_end_ms(0, 0, B, 0.0) == pytest.approx(t + bits / rates[k], rel=1e-12)
  # On a trace, the factor multiplies the trace's value.
  traced = network.from_environment(_jittered_env(
      0.5, seed=4, traces=[{"from": 0, "to": 0, "times_ms": [0], "gbps": [50.0]}]))
  assert traced._trace(0, 0).gbps_at(100.0) == pytest.approx(50.0 * f(0), rel=1e-15)


@pytest.mark.parametrize("algorithm", ALGORITHMS)
def test_bandwidth_jitter_seeds_and_zero(algorithm):
  plain = build_schedule(network_testlib.env(), _settings(algorithm))
  assert build_schedule(_jittered_env(0.0), _settings(algorithm)).sha256() == plain.sha256()
  a = build_schedule(_jittered_env(0.4, seed=1), _settings(algorithm))
  b = build_schedule(_jittered_env(0.4, seed=1), _settings(algorithm))
  assert a.sha256() == b.sha256() != plain.sha256()
  assert a.header()["env"]["bandwidth_jitter"]["interval_ms"] == 500.0


def test_bad_bandwidth_jitter():
  with pytest.raises(InvalidEnvironment,
                     match="bandwidth_jitter.interval_ms must be a number, got None"):
    network_testlib.env(bandwidth_jitter={"sigma": 0.1, "seed": 0})
