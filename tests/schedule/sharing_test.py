"""Fair link sharing (`link_sharing: fair`, network/sharing.py): max-min fair rates by hand, the
reference unchanged without the key, fair == none when no transfers overlap, and sharing never
brings a message (or an arrival) earlier than without it (hypothesis)."""
import heapq

import numpy as np
import pytest
from hypothesis import given, settings, strategies as st

from halos_jax import network
from halos_jax.network import sharing
from halos_jax.schedule import (InvalidEnvironment, analysis, build_schedule,
                                environment_from_dict, load_environment, read_jsonl)

import network_testlib
from network_testlib import ALGORITHMS, B, settings as _settings  # noqa: F401
from schedule_properties_test import check_schedule

BITS = B * 8  # 1e11 bits: 1,000 ms at 100 Gbps, 100,000 ms at 1 Gbps, 200,000 ms at 0.5 Gbps


def _fair(**extra):
  return network_testlib.env(link_sharing="fair", **extra)


def _simulate(bandwidth, flows, uplink=None, downlink=None):
  """Runs the simulator alone: flows (t0, src, dst, bits) -> their completion times."""
  heap = []
  sim = sharing.FlowSimulator(bandwidth, heap, 0, uplink, downlink)
  for k, (t0, *_) in enumerate(flows):
    heapq.heappush(heap, (t0, k, 1, k, 0))  # the flows' starts, in the same heap
  done = [None] * len(flows)
  while heap:
    t, _, kind, x, version = heapq.heappop(heap)
    if kind == 1:
      _, src, dst, bits = flows[x]
      sim.start(t, src, dst, bits, x)
    else:
      owner = sim.complete(t, x, version)
      if owner is not None:
        done[owner] = t
  return done, sim


# -- the simulator by hand ----------------------------------------------------------------------

BW3 = [[100.0, 1.0, 10.0], [1.0, 100.0, 10.0], [10.0, 10.0, 100.0]]


def test_two_equal_transfers_that_start_together_each_take_twice_as_long():
  done, sim = _simulate(network_testlib.BASE["network_bandwidths"],
                        [(0.0, 0, 1, BITS), (0.0, 0, 1, BITS)])
  assert done == [200_000.0, 200_000.0]  # alone: 100,000 ms each
  rec = sim.record(200_000.0)
  assert rec.busy_ms[0, 1] == 200_000.0 and rec.busy_ms.sum() == 200_000.0
  assert rec.wait_ms == 200_000.0 and rec.flows == 2  # 100,000 ms lost by each
  done, _ = _simulate(network_testlib.BASE["network_bandwidths"],
                      [(0.0, 0, 0, BITS), (0.0, 0, 0, BITS)])
  assert done == [2_000.0, 2_000.0]  # inside a region too


def test_a_transfer_joining_later_shares_from_then_on():
  """A (1e11 bits on 1 Gbps) alone for 50 s sends 5e10 bits; then A and B at 0.5 Gbps each:
  A's other 5e10 bits take 100 s (A through at 150 s), B has 5e10 left, alone: 50 s more."""
  done, _ = _simulate(network_testlib.BASE["network_bandwidths"],
                      [(0.0, 0, 1, BITS), (50_000.0, 0, 1, BITS)])
  assert done == [150_000.0, 200_000.0]


def test_links_are_independent_without_caps():
  done, _ = _simulate(BW3, [(0.0, 0, 1, 1e9), (0.0, 0, 2, 1e9), (0.0, 1, 0, 1e9)])
  assert done == [1_000.0, 100.0, 1_000.0]


def test_three_flows_one_bottlenecked_on_its_link():
  """Uplink of region 0 capped at 3 Gbps; A, B: 0 -> 1 (link 1 Gbps), C: 0 -> 2 (10 Gbps).
  Progressive filling: link 0->1 fills first at 0.5 Gbps each (A, B), the uplink has 2 Gbps
  left for C. C's 1e9 bits: 500 ms; A and B have 2.5e8 bits through by then and stay at
  0.5 Gbps (their link): 1,500 ms more."""
  done, _ = _simulate(BW3, [(0.0, 0, 1, 1e9), (0.0, 0, 1, 1e9), (0.0, 0, 2, 1e9)],
                      uplink=[3.0, None, None])
  assert done == [2_000.0, 2_000.0, 500.0]


def test_an_uplink_cap_is_shared_by_flows_to_different_regions():
  """Region 0's uplink capped at 1 Gbps: 0 -> 1 and 0 -> 2 (10 Gbps links) get 0.5 Gbps
  each; a flow inside region 0 does not use the uplink."""
  bw = [[100.0, 10.0, 10.0], [10.0, 100.0, 10.0], [10.0, 10.0, 100.0]]
  flows = [(0.0, 0, 1, 1e9), (0.0, 0, 2, 1e9), (0.0, 0, 0, 1e9)]
  done, sim = _simulate(bw, flows, uplink=[1.0, None, None])
  assert done == [2_000.0, 2_000.0, 10.0]
  assert sim.record(2_000.0).wait_ms == 2 * 1_000.0  # alone (capped) each takes 1,000 ms
  done, _ = _simulate(bw, [(0.0, 1, 0, 1e9), (0.0, 2, 0, 1e9)], downlink=[1.0, None, None])
  assert done == [2_000.0, 2_000.0]


def test_a_cap_can_speed_up_another_flow():
  """Max-min fairness is not monotone: X (1 -> 2) and Y (0 -> 2) share region 2's 1 Gbps
  downlink (0.5 Gbps each); capping region 0's uplink at 0.1 Gbps slows Y and leaves 0.9 Gbps
  to X. (Caps never bring anything earlier than without sharing, tested below.)"""
  bw = [[100.0, 10.0, 10.0], [10.0, 100.0, 10.0], [10.0, 10.0, 100.0]]
  flows = [(0.0, 1, 2, 9e8), (0.0, 0, 2, 1e9)]
  plain, _ = _simulate(bw, flows, downlink=[None, None, 1.0])
  capped, _ = _simulate(bw, flows, uplink=[0.1, None, None], downlink=[None, None, 1.0])
  assert plain[0] == pytest.approx(1_800.0) and capped[0] == pytest.approx(1_000.0)


# -- the environment ----------------------------------------------------------------------------


def test_without_the_keys_the_schedule_is_the_reference_bit_for_bit():
  geo4 = load_environment("geo4")
  assert geo4.link_sharing == "none" and geo4.uplink_gbps is None
  d = geo4.to_dict()
  assert "link_sharing" not in d and "uplink_gbps" not in d
  none = environment_from_dict(dict(d, link_sharing="none"))
  assert none == geo4 and hash(none) == hash(geo4)
  for name in ALGORITHMS:
    assert (build_schedule(network_testlib.env(link_sharing="none"), _settings(name)).sha256()
            == build_schedule(network_testlib.env(), _settings(name)).sha256())
  fair = environment_from_dict(dict(d, link_sharing="fair", uplink_gbps=[1.0, None, 2, None]))
  assert fair != geo4
  assert fair.to_dict()["link_sharing"] == "fair"
  assert fair.to_dict()["uplink_gbps"] == [1.0, None, 2.0, None]
  assert environment_from_dict(fair.to_dict()) == fair


@pytest.mark.parametrize("algorithm", ALGORITHMS + ["diloco_dynupd"])
def test_geo4_without_sharing_is_unchanged_and_sync_fair_is_none(algorithm):
  """geo4 with `link_sharing: none` is geo4 (same sha256). The synchronous ring has one flow
  per inter-region link and 3 hops on each 100 Gbps region link (33 Gbps >> b* = 0.127):
  fair == none event for event, bit for bit."""
  geo4 = load_environment("geo4")
  s = _settings(algorithm, total_local_steps=2_000, message_bytes=281_706_496, K=4,
                workers_per_lps=4, step_time_ms=238.391)
  plain = build_schedule(geo4, s)
  assert build_schedule(environment_from_dict(dict(geo4.to_dict(), link_sharing="none")),
                        s).sha256() == plain.sha256()
  fair = build_schedule(environment_from_dict(dict(geo4.to_dict(), link_sharing="fair")), s)
  if s.synchronous:
    for key, col in plain.columns.items():
      np.testing.assert_array_equal(col, fair.columns[key])
  else:
    check_schedule(fair, timed=False)
    _no_earlier(plain, fair)


def test_a_fair_schedule_reads_back_with_its_summary(tmp_path):
  s = build_schedule(_fair(uplink_gbps=[0.5, None]), _settings("halos"))
  s.write_jsonl(tmp_path / "s.jsonl")
  back = read_jsonl(tmp_path / "s.jsonl")
  assert back.sha256() == s.sha256() and back.sharing is None
  assert back.header()["env"]["uplink_gbps"] == [0.5, None]
  assert {**back.summary(), "env": None} == {**s.summary(), "env": None}  # record rebuilt
  assert "link sharing" in analysis.format_summary(s.summary())


@pytest.mark.parametrize("extra,match", [
    ({"link_sharing": "fiar"}, "link_sharing must be one of none, fair, got 'fiar'"),
    ({"uplink_gbps": [1.0, 1.0]}, "uplink_gbps needs link_sharing: fair"),
    ({"link_sharing": "fair", "downlink_gbps": [1.0]}, "downlink_gbps must be a list of 2"),
    ({"link_sharing": "fair", "uplink_gbps": [1.0, 0.0]}, r"uplink_gbps\[1\] \(Gbps\)"),
    ({"link_sharing": "fair", "uplink_gbps": "1"}, "uplink_gbps must be a list"),
    ({"link_sharing": "fair", "bandwidth_traces": [
        {"from": 0, "to": 1, "times_ms": [0], "gbps": [1.0]}]},
     "link_sharing: fair cannot be combined with bandwidth_traces"),
    ({"link_sharing": "fair", "bandwidth_jitter": {"sigma": 0.1, "interval_ms": 10}},
     "link_sharing: fair cannot be combined with bandwidth_jitter"),
])
def test_bad_sharing_keys(extra, match):
  with pytest.raises(InvalidEnvironment, match=match):
    network_testlib.env(**extra)


# -- schedules ----------------------------------------------------------------------------------

ONE_FAST = {"network_bandwidths": [[100.0, 1.0], [0.5, 100.0]],
            "worker_speeds": [[1.0], [1.0, 1.0]]}


def test_an_async_schedule_by_hand():
  """Worker 0 (region 0) has the 0 -> 0 link to itself: rounds of 1,000 + 2,000 + 1,000 ms.
  Workers 1 and 2 (region 1) download together over 0 -> 1: 200,000 ms each instead of
  100,000, compute 2,000 ms, and upload together (on the same link, the reference's rule):
  both arrive at 402,000 ms (202,000 without sharing)."""
  s = _settings("async_local_sgd", total_local_steps=204)
  for mode, t_far in (("none", 202_000.0), ("fair", 402_000.0)):
    sch = build_schedule(environment_from_dict(dict(ONE_FAST, link_sharing=mode)), s)
    ev = list(sch.events)
    w0 = [e.t for e in ev if e.kind == "arrive" and e.worker == 0]
    assert w0[:3] == [4_000.0, 8_000.0, 12_000.0]
    assert [e.t for e in ev if e.kind == "arrive" and e.worker > 0] == [t_far, t_far]
    check_schedule(sch, timed=mode == "none")
  summary = sch.summary()
  assert summary["link_sharing"] == "fair"
  assert summary["link_busy_ms"]["0->1"] == 400_000.0  # idle while both compute
  assert summary["shared_link_wait_ms"] == pytest.approx(2 * 2 * 100_000.0)
  # Without sharing the busy time is the union of the transfers: workers 1 and 2 transfer
  # together, so 0 -> 1 is busy from 0 to the stop except while both compute (2 x 2,000 ms).
  plain = build_schedule(environment_from_dict(ONE_FAST), s).summary()
  assert "shared_link_wait_ms" not in plain
  assert plain["link_busy_ms"]["0->1"] == plain["simulated_time_ms"] - 4_000.0
  # The Gantt's "waiting on shared links": workers 1 and 2 lose the second 100,000 ms of their
  # download and of their upload; worker 0 has its link to itself.
  from halos_jax.schedule import analysis  # pylint: disable=g-import-not-at-top
  wait = analysis.worker_intervals(sch)["shared_wait"]
  for w in (1, 2):
    np.testing.assert_array_equal(wait[w][0], [100_000.0, 302_000.0])
    np.testing.assert_array_equal(wait[w][1], [200_000.0, 402_000.0])
  assert len(wait[0][0]) == 0
  assert "shared_wait" not in analysis.worker_intervals(
      build_schedule(environment_from_dict(ONE_FAST), s))


def test_latency_is_paid_once_per_message_after_its_bits():
  """With 40 ms on 0 -> 1 and 2 ms on 0 -> 0: worker 0's round is 2 + 1,000 + 2,000 + 2 +
  1,000; workers 1, 2: 200,040 + 2,000 + 200,040 ms."""
  lat = [[2.0, 40.0], [55.0, 3.0]]
  env = environment_from_dict(dict(ONE_FAST, link_sharing="fair", network_latencies_ms=lat))
  sch = build_schedule(env, _settings("async_local_sgd", total_local_steps=204))
  arrive = [(e.worker, e.t) for e in sch.events if e.kind == "arrive"]
  assert arrive[0] == (0, 4_004.0)
  assert [t for w, t in arrive if w > 0] == [402_080.0, 402_080.0]
  alone, _ = _simulate(ONE_FAST["network_bandwidths"], [(0.0, 0, 1, BITS)])
  net = network.from_environment(env)
  assert alone[0] + 40.0 == net.transfer_ms(0, 1, B) == 100_040.0  # alone: latency + bits / b


def test_halos_exchanges_share_with_worker_rounds():
  """HALoS on the tiny environment: every round and exchange obeys the rules, and the fair
  times come no earlier than the reference's, worker by worker."""
  none = build_schedule(network_testlib.env(), _settings("halos"))
  fair = build_schedule(_fair(), _settings("halos"))
  check_schedule(fair, timed=False)
  _no_earlier(none, fair)
  assert fair.summary()["shared_link_wait_ms"] > 0


@pytest.mark.parametrize("algorithm", ALGORITHMS)
def test_fair_without_overlapping_transfers_is_none(algorithm):
  """One worker per region, one LPS each: async workers each have their own link; the
  synchronous ring has one flow per link. (HALoS's LPS in the GPS's region always shares its
  link with its workers, so it is left out.)"""
  if algorithm == "halos":
    return
  d = {"network_bandwidths": [[100.0, 1.0, 2.0], [0.5, 100.0, 4.0], [3.0, 0.25, 100.0]],
       "worker_speeds": [[1.0], [0.5], [0.25]]}
  none = build_schedule(environment_from_dict(d), _settings(algorithm))
  fair = build_schedule(environment_from_dict(dict(d, link_sharing="fair")), _settings(algorithm))
  for key in ("kind", "round", "worker", "version", "counted_steps"):
    np.testing.assert_array_equal(none.columns[key], fair.columns[key])
  np.testing.assert_allclose(none.columns["t"], fair.columns["t"], rtol=1e-13)
  if fair.sharing is not None:
    assert fair.sharing.wait_ms == pytest.approx(0.0, abs=1e-6)


def test_synchronous_ring_with_caps_and_crowded_intra_region_links():
  """ddp, tiny environment, ring 0 -> 1 -> 0: with region 0's uplink capped at 0.25 Gbps the
  bottleneck is 0.25 (was 0.5): 2 (4 - 1) / 4 * 1e11 bits / 0.25 Gbps = 600,000 ms. Without
  caps fair == none. One region of 4 workers: its link carries the 4 hops of the ring at once,
  25 Gbps each: 1.5e11 bits / 25 Gbps = 6,000 ms (1,500 ms without sharing)."""
  plan = build_schedule(_fair(uplink_gbps=[0.25, None]), _settings("ddp")).plan
  assert plan.allreduce_ms == 600_000.0 and plan.ring.bandwidth_gbps == 0.25
  assert (build_schedule(_fair(), _settings("ddp")).plan.allreduce_ms
          == build_schedule(network_testlib.env(), _settings("ddp")).plan.allreduce_ms)
  one = {"network_bandwidths": [[100.0]], "worker_speeds": [[1.0] * 4]}
  assert network.from_environment(environment_from_dict(one)).allreduce_ms(B, 4) == 1_500.0
  fair_one = network.from_environment(environment_from_dict(dict(one, link_sharing="fair")))
  assert fair_one.allreduce_ms(B, 4) == 6_000.0


# -- properties ---------------------------------------------------------------------------------


def _no_earlier(none, fair):
  """Each worker's k-th arrival comes no earlier with sharing (for the rounds both have)."""
  for w in range(none.env.num_workers):
    a = [e.t for e in none.events if e.kind == "arrive" and e.worker == w]
    b = [e.t for e in fair.events if e.kind == "arrive" and e.worker == w]
    n = min(len(a), len(b))
    assert np.all(np.asarray(b[:n]) >= np.asarray(a[:n]) * (1 - 1e-12))


_caps = st.lists(st.one_of(st.none(), st.floats(0.05, 5.0)), min_size=3, max_size=3)


@settings(max_examples=40, deadline=None)
@given(st.lists(st.tuples(st.floats(0.0, 2_000.0), st.integers(0, 2), st.integers(0, 2),
                          st.floats(1e6, 2e9)), min_size=1, max_size=12),
       st.one_of(st.none(), _caps), st.one_of(st.none(), _caps))
def test_no_flow_finishes_earlier_than_without_sharing(flows, up, down):
  """Same start times: every flow ends no earlier than alone on its link without caps (the
  reference), nor than alone with the caps; all bits go through, each link's flows leave it no
  later than the work-conserving bound."""
  done, sim = _simulate(BW3, flows, up, down)
  eff = sharing.effective_bandwidth(BW3, up, down)
  for (t0, i, j, bits), t in zip(flows, done):
    assert t is not None
    assert t >= (t0 + bits / (BW3[i][j] * 1e9) * 1e3) * (1 - 1e-12)
    assert t >= (t0 + bits / (eff[i, j] * 1e9) * 1e3) * (1 - 1e-12)
  if up is None and down is None:  # one link is a work-conserving processor-sharing queue
    for i in range(3):
      for j in range(3):
        mine = sorted((t0, bits) for t0, a, b, bits in flows if (a, b) == (i, j))
        free = 0.0
        for t0, bits in mine:
          free = max(free, t0) + bits / (BW3[i][j] * 1e9) * 1e3
        if mine:
          last = max(t for (_, a, b, _), t in zip(flows, done) if (a, b) == (i, j))
          assert last == pytest.approx(free, rel=1e-9)
  assert sim.record(max(done)).flows == len(flows)


@settings(max_examples=25, deadline=None)
@given(st.sampled_from(["async_local_sgd", "halos"]),
       st.lists(st.floats(0.1, 1.0), min_size=4, max_size=4),
       st.one_of(st.none(), st.lists(st.floats(0.0, 500.0), min_size=4, max_size=4)),
       st.one_of(st.none(), st.lists(st.one_of(st.none(), st.floats(0.05, 2.0)), min_size=2,
                                     max_size=2)),
       st.booleans())
def test_sharing_and_caps_never_bring_an_arrival_earlier(algorithm, speeds, lat, up, jitter):
  """Against no sharing on the same environment: each worker's k-th arrival comes no earlier
  under fair sharing, with or without caps (and with compute jitter), and the schedule obeys
  the algorithm's rules."""
  extra = {"worker_speeds": [speeds[:2], speeds[2:]]}
  if lat is not None:
    extra["network_latencies_ms"] = np.reshape(lat, (2, 2)).tolist()
  if jitter:
    extra["compute_jitter"] = {"distribution": "lognormal", "sigma": 0.3, "seed": 1}
  d = dict(network_testlib.BASE, **extra)
  none = build_schedule(environment_from_dict(d), _settings(algorithm))
  fair = build_schedule(environment_from_dict(dict(d, link_sharing="fair")), _settings(algorithm))
  capped = build_schedule(environment_from_dict(dict(
      d, link_sharing="fair", uplink_gbps=up, downlink_gbps=up)), _settings(algorithm))
  for s in (fair, capped):
    check_schedule(s, timed=False)
    _no_earlier(none, s)
    for row in analysis.utilisation(s):
      assert 0.0 <= row["compute"] + row["communication"] <= 1.0 + 1e-9
