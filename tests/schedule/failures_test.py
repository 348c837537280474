"""Churn and faults (docs/schedule.md, "Failures"): worker crashes, partitions, region outages.

Times by hand on network_testlib's 2 x 2 environment: a transfer inside a region takes 1,000 ms,
0 -> 1 100,000 ms, 1 -> 0 200,000 ms; compute 1,000 ms per step / speed (speeds 1, 0.5, 1,
0.25); H = 2. Async rounds: w0 4,000, w1 6,000, w2 202,000, w3 208,000 ms (PS in region 0).
DiLoCo: compute 2,000 / 4,000 / 2,000 / 8,000 ms, all-reduce 300,000 ms (b* = 0.5 Gbps), round
308,000 ms.
"""

import numpy as np
import pytest
from hypothesis import given, settings as hsettings, strategies as st

import network_testlib
from halos_jax.schedule import (InvalidEnvironment, InvalidSettings, analysis,
                                build_schedule, environment_from_dict, load_environment,
                                read_jsonl)
from halos_jax.schedule import failures as failures_lib
from network_testlib import settings as _settings

ALL = ["ddp", "diloco", "diloco_dynupd", "async_local_sgd", "halos"]


def crash(w, at, down):
  return {"kind": "worker_crash", "worker": w, "at_ms": at, "down_ms": down}


def cut(kind, r, at, down):
  return {"kind": kind, "region": r, "at_ms": at, "down_ms": down}


def _env(failures=None, **kw):
  return network_testlib.env(failures=failures, **kw)


def _by(schedule, kind, worker=None):
  return [e for e in schedule.events if e.kind == kind and (worker is None or e.worker == worker)]


def check_failure_schedule(s):
  """Invariants of every schedule with failures: data in start order, one round in flight per
  worker (a start may follow a lost round), each arrival ends its worker's round in flight, a
  sync lists rounds that arrived at its time, counts and the stop."""
  ev = list(s.events)
  assert [e.seq for e in ev] == list(range(len(ev)))
  assert all(a.t <= b.t for a, b in zip(ev, ev[1:]))
  assert ev[-1].kind == "stop"
  starts = [e for e in ev if e.kind == "start"]
  assert [e.round for e in starts] == list(range(len(starts)))
  pos = 0
  for e in starts:
    assert (e.data_start, e.data_end) == (pos, pos + s.settings.local_batch * e.H)
    pos = e.data_end
  in_flight, arrived_at = {}, {}
  tl = s.env.failure_timeline()
  for e in ev:
    if e.kind == "start":
      prev = in_flight.get(e.worker)
      if prev is not None:  # its previous round was lost: the worker went down after its start
        assert tl.worker_down[e.worker].next_start(prev.t, e.t + 1e-9) is not None
      assert tl.worker_down[e.worker].up_at(e.t) == e.t  # a worker starts only when up
      in_flight[e.worker] = e
    elif e.kind == "arrive":
      assert in_flight.pop(e.worker).round == e.round
      arrived_at[e.round] = e.t
    elif e.kind == "sync":
      assert all(arrived_at[r] == e.t for r in e.rounds)
      assert len({s.rounds()["worker"][r] for r in e.rounds}) == len(e.rounds)
  counted = ev[-1].counted_steps
  assert counted >= s.settings.total_local_steps


# -- the reference without the keys --------------------------------------------------------------


@pytest.mark.parametrize("algorithm", ALL)
def test_geo4_without_failures_is_unchanged_and_late_failures_change_no_event(algorithm):
  geo4 = load_environment("geo4")
  d = geo4.to_dict()
  assert not {"failures", "failure_rate", "failure_policy"} & set(d)
  s = _settings(algorithm, total_local_steps=2_000, message_bytes=281_706_496, K=4,
                workers_per_lps=4, step_time_ms=238.391, H=8 if algorithm == "halos" else 2)
  plain = build_schedule(geo4, s)
  assert build_schedule(environment_from_dict(d), s).sha256() == plain.sha256()
  assert "failures" not in plain.summary()
  late = build_schedule(environment_from_dict(dict(d, failures=[crash(3, 1e12, 5.0)])), s)
  for key, col in plain.columns.items():
    np.testing.assert_array_equal(col, late.columns[key])
  np.testing.assert_array_equal(plain.rounds_flat, late.rounds_flat)
  assert late.sha256() != plain.sha256()  # the header lists the failures
  assert late.summary()["failures"]["lost_rounds"] == 0


# -- Async Local-SGD ---------------------------------------------------------------------------


def test_async_crash_mid_round_loses_it_and_restarts_at_rejoin():
  s = build_schedule(_env([crash(1, 2500.0, 3000.0)]), _settings("async_local_sgd",
                                                                  total_local_steps=12))
  check_failure_schedule(s)
  w1_starts = _by(s, "start", 1)
  assert [e.t for e in w1_starts[:3]] == [0.0, 5500.0, 11500.0]
  lost = w1_starts[0].round
  assert not [e for e in _by(s, "arrive") if e.round == lost]  # the lost round never arrives
  assert [e.t for e in _by(s, "arrive", 1)][:2] == [11500.0, 17500.0]  # 5,500 + 6,000
  assert [e.t for e in _by(s, "arrive", 0)][:3] == [4000.0, 8000.0, 12000.0]  # unaffected
  f = s.summary()["failures"]
  assert (f["lost_rounds"], f["lost_local_steps"]) == (1, 2)
  assert f["worker_down_ms"][1] == 3000.0


def test_async_crash_while_down_at_start_delays_the_first_round():
  s = build_schedule(_env([crash(0, 0.0, 1500.0)]), _settings("async_local_sgd",
                                                               total_local_steps=8))
  assert [e.t for e in _by(s, "start", 0)][:2] == [1500.0, 5500.0]
  assert s.summary()["failures"]["lost_rounds"] == 0


def test_async_partition_restarts_a_cut_transfer_when_the_link_returns():
  # w2's download 0 -> 1 runs [0, 100 s); region 1 is cut at 50 s for 10 s: the download starts
  # again at 60 s, ends at 160 s; compute 2 s; the upload 162 s -> 262 s.
  s = build_schedule(_env([cut("partition", 1, 50_000.0, 10_000.0)]),
                     _settings("async_local_sgd", total_local_steps=400))
  check_failure_schedule(s)
  assert _by(s, "arrive", 2)[0].t == 262_000.0
  assert _by(s, "arrive", 3)[0].t == 268_000.0  # 60 + 100 + 8 + 100 s
  assert s.summary()["failures"]["region_cut_ms"] == [0.0, 10_000.0]


def test_async_ps_region_down_stops_the_ps():
  # Region 0 down [3 s, 10 s): w0, w1 crash (rounds lost), every transfer to the PS waits.
  s = build_schedule(_env([cut("region_down", 0, 3000.0, 7000.0)]),
                     _settings("async_local_sgd", total_local_steps=16))
  check_failure_schedule(s)
  assert [e.t for e in _by(s, "start", 0)][:3] == [0.0, 10_000.0, 14_000.0]
  assert not [e for e in _by(s, "arrive") if 3000.0 <= e.t < 10_000.0]


# -- synchronous -------------------------------------------------------------------------------


def _diloco(failures, policy=None, total=16):
  env = _env(failures, failure_policy=policy)
  return build_schedule(env, _settings("diloco", total_local_steps=total))


def test_sync_wait_redoes_the_crashed_round():
  # w1 crashes at 1 s, back at 6 s, downloads the model (1 s), computes 4 s: done at 11 s
  # > the slowest worker's 8 s: the all-reduce runs [11 s, 311 s).
  s = _diloco([crash(1, 1000.0, 5000.0)], {"synchronous": "wait"})
  check_failure_schedule(s)
  syncs = _by(s, "sync")
  assert [e.t for e in syncs] == [311_000.0, 619_000.0]
  assert [e.t for e in _by(s, "start", 1)][:2] == [0.0, 6000.0]
  assert syncs[0].rounds == (0, 4, 2, 3)  # w1's redone round 4; round 1 is lost
  f = s.summary()["failures"]
  assert (f["lost_rounds"], f["round_delay_ms"]) == (1, 3000.0)


def test_sync_quorum_goes_on_with_the_survivors():
  s = _diloco([crash(1, 1000.0, 5000.0)], {"synchronous": "quorum", "quorum": 0.5})
  check_failure_schedule(s)
  syncs = _by(s, "sync")
  # Round 0 keeps its length and averages w0, w2, w3; w1 rejoins at round 1, downloads the
  # model first (done at 313 s, before the slowest worker's 316 s).
  assert [e.t for e in syncs] == [308_000.0, 616_000.0, 924_000.0]
  assert syncs[0].rounds == (0, 2, 3) and syncs[0].steps == 6
  assert [e.counted_steps for e in syncs] == [6, 14, 22]
  assert s.summary()["failures"]["lost_rounds"] == 1


def test_sync_quorum_not_reached_waits():
  failing = [crash(1, 1000.0, 5000.0), crash(2, 500.0, 1000.0), crash(0, 700.0, 100.0)]
  quorum = _diloco(failing, {"synchronous": "quorum", "quorum": 0.75})
  wait = _diloco(failing, {"synchronous": "wait"})
  assert quorum.sha256() != wait.sha256()  # (the headers differ) ...
  for key, col in wait.columns.items():  # ... the events do not
    np.testing.assert_array_equal(col, quorum.columns[key])


def test_sync_partition_delays_the_all_reduce():
  # The all-reduce [8 s, 308 s) is cut at 100 s for 1 s: it runs again [101 s, 401 s).
  s = _diloco([cut("partition", 1, 100_000.0, 1000.0)])
  assert _by(s, "sync")[0].t == 401_000.0
  assert all(len(e.rounds) == 4 for e in _by(s, "sync"))


sync_failure = st.one_of(
    st.builds(crash, st.integers(0, 3), st.floats(0, 4e4), st.floats(1, 2e4)),
    st.builds(cut, st.sampled_from(["partition", "region_down"]), st.integers(0, 1),
              st.floats(0, 4e4), st.floats(1, 2e4)))


def _non_overlapping(failures):
  spans = {}
  for f in failures:
    if f["kind"] == "worker_crash":
      for a, b in spans.get(f["worker"], []):
        if f["at_ms"] < b and a < f["at_ms"] + f["down_ms"]:
          return False
      spans.setdefault(f["worker"], []).append((f["at_ms"], f["at_ms"] + f["down_ms"]))
  return True


@hsettings(max_examples=25, deadline=None)
@given(failures=st.lists(sync_failure, min_size=1, max_size=4).filter(_non_overlapping),
       algorithm=st.sampled_from(["ddp", "diloco", "diloco_dynupd", "async_local_sgd"]),
       policy=st.sampled_from(["wait", "quorum"]), quorum=st.sampled_from([0.25, 0.5, 1.0]))
def test_a_failure_never_makes_a_run_end_earlier(failures, algorithm, policy, quorum):
  s = _settings(algorithm, total_local_steps=24, H=1 if algorithm == "ddp" else 2,
                message_bytes=network_testlib.B // 100)
  plain = build_schedule(_env(), s)
  failing = build_schedule(
      _env(failures, failure_policy={"synchronous": policy, "quorum": quorum}), s)
  check_failure_schedule(failing)
  assert failing.events[-1].t >= plain.events[-1].t
  assert failing.summary()["failures"]["lost_rounds"] >= 0


# -- HALoS -------------------------------------------------------------------------------------


def test_halos_partitioned_lps_keeps_training_and_sends_when_the_link_returns():
  f = [cut("partition", 1, 5000.0, 20_000.0)]
  s = build_schedule(_env(f), _settings("halos", total_local_steps=40))
  check_failure_schedule(s)
  send = [e for e in _by(s, "send") if e.server == 1][0]
  assert send.t == 25_000.0  # due at 8 s (v = 2), sent when the link returns
  arrivals = [e for e in _by(s, "arrive") if e.server == 1 and 8000.0 < e.t < 25_000.0]
  assert len(arrivals) == 6  # its workers kept arriving
  assert (send.version, send.base_version, send.steps) == (8, 0, 16)
  # The Delta needs 200 s from region 1 to region 0: the run stops (49 s) before it arrives.
  assert s.events[-1].t == 49_000.0
  assert not [e for e in _by(s, "gps_apply") if e.server == 1]
  # LPS 0 (region 0, with the GPS) is not affected.
  plain = build_schedule(_env(), _settings("halos", total_local_steps=40))
  assert ([e.t for e in _by(s, "send") if e.server == 0]
          == [e.t for e in _by(plain, "send") if e.server == 0])


def test_halos_policy_wait_pauses_the_partitioned_lps_workers():
  f = [cut("partition", 1, 5000.0, 20_000.0)]
  s = build_schedule(_env(f, failure_policy={"lps": "wait"}),
                     _settings("halos", total_local_steps=40))
  check_failure_schedule(s)
  late = [e for e in _by(s, "start") if e.server == 1 and 5000.0 <= e.t < 25_000.0]
  assert not late  # rounds in flight arrived, no new one started
  assert [e.t for e in _by(s, "start") if e.server == 1][3:5] == [25_000.0, 25_000.0]
  send = [e for e in _by(s, "send") if e.server == 1][0]
  assert (send.t, send.version) == (25_000.0, 3)


def test_halos_crash_and_gps_region_outage():
  f = [crash(2, 1000.0, 2000.0), cut("region_down", 0, 5000.0, 3000.0)]
  s = build_schedule(_env(f), _settings("halos", total_local_steps=40))
  check_failure_schedule(s)
  assert [e.t for e in _by(s, "start", 2)][:2] == [0.0, 3000.0]
  for e in s.events:  # nothing reaches the GPS or LPS 0 while region 0 is down
    if e.kind in ("gps_apply", "merge") or (e.kind == "arrive" and e.server == 0):
      assert not 5000.0 <= e.t < 8000.0
  f_sum = s.summary()["failures"]
  assert f_sum["lost_rounds"] >= 3 and f_sum["region_down_ms"][0] == 3000.0


# -- generated failures, round trips, pictures ---------------------------------------------------


def test_failure_rate_is_seeded_and_bounded():
  rate = {"worker_crashes_per_hour": 3600.0, "mean_down_ms": 500.0, "seed": 1,
          "until_ms": 20_000.0}
  a = _env(failure_rate=rate)
  gen = a.failure_timeline().failures
  assert gen and all(f.kind == "worker_crash" and f.at_ms < 20_000.0 for f in gen)
  assert gen == _env(failure_rate=rate).failure_timeline().failures
  assert gen != _env(failure_rate=dict(rate, seed=2)).failure_timeline().failures
  s = build_schedule(a, _settings("async_local_sgd", total_local_steps=40))
  check_failure_schedule(s)
  assert s.sha256() == build_schedule(_env(failure_rate=rate),
                                      _settings("async_local_sgd", total_local_steps=40)).sha256()


def test_round_trip_summary_and_gantt(tmp_path):
  env = _env([crash(1, 2500.0, 3000.0), cut("partition", 1, 3000.0, 1000.0)],
             failure_policy={"synchronous": "quorum"})
  assert environment_from_dict(env.to_dict()) == env
  for algorithm in ("async_local_sgd", "diloco", "halos"):
    s = build_schedule(env, _settings(algorithm, total_local_steps=24))
    s.write_jsonl(tmp_path / "s.jsonl")
    back = read_jsonl(tmp_path / "s.jsonl")
    assert back.sha256() == s.sha256()
    assert back.summary()["failures"] == s.summary()["failures"]
    text = analysis.format_summary(s.summary())
    assert "lost rounds" in text
    from halos_jax.schedule import plots  # pylint: disable=g-import-not-at-top
    plots.gantt(s, tmp_path / f"{algorithm}.png")
    assert (tmp_path / f"{algorithm}.png").stat().st_size > 0


# -- bad input ---------------------------------------------------------------------------------


@pytest.mark.parametrize("extra,message", [
    ({"failures": [{"kind": "meteor", "region": 0, "at_ms": 0, "down_ms": 1}]}, "kind"),
    ({"failures": [crash(4, 0.0, 1.0)]}, "worker must be a worker index in [0, 4)"),
    ({"failures": [cut("partition", 2, 0.0, 1.0)]}, "region must be a region in [0, 2)"),
    ({"failures": [crash(0, -1.0, 1.0)]}, "at_ms must be a finite number of ms >= 0"),
    ({"failures": [crash(0, 0.0, 0.0)]}, "down_ms must be positive"),
    ({"failures": [crash(0, 0.0, 10.0), crash(0, 5.0, 10.0)]}, "overlap: worker 0"),
    ({"failures": [{"kind": "worker_crash", "region": 0, "at_ms": 0, "down_ms": 1}]},
     "exactly the keys"),
    ({"failures": "often"}, "failures must be a list"),
    ({"failures": [crash(0, 0.0, 1.0)], "failure_policy": {"synchronous": "hope"}},
     "failure_policy.synchronous"),
    ({"failures": [crash(0, 0.0, 1.0)], "failure_policy": {"quorum": 0}}, "quorum"),
    ({"failures": [crash(0, 0.0, 1.0)], "failure_policy": {"lps": "panic"}}, "failure_policy.lps"),
    ({"failures": [crash(0, 0.0, 1.0)], "failure_policy": {"retries": 3}}, "unknown key"),
    ({"failure_policy": {"synchronous": "wait"}}, "failure_policy needs failures"),
    ({"failure_rate": {"worker_crashes_per_hour": 1.0, "mean_down_ms": 1.0}}, "until_ms"),
    ({"failure_rate": {"worker_crashes_per_hour": -1.0, "mean_down_ms": 1.0, "until_ms": 1}},
     "worker_crashes_per_hour"),
    ({"failures": [crash(0, 0.0, 1.0)], "link_sharing": "fair"}, "combined with link_sharing"),
    ({"failures": [crash(0, 0.0, 1.0)], "compute_jitter": {"sigma": 0.1}},
     "combined with compute_jitter"),
    ({"failures": [crash(0, 0.0, 1.0)],
      "bandwidth_traces": [{"from": 0, "to": 1, "times_ms": [0], "gbps": [1.0]}]},
     "combined with bandwidth_traces"),
])
def test_bad_failures_are_named(extra, message):
  with pytest.raises(InvalidEnvironment, match=message.replace("[", r"\[").replace(")", r"\)")
                     .replace("(", r"\(").replace("]", r"\]")):
    environment_from_dict(dict(network_testlib.BASE, **extra))


@pytest.mark.parametrize("algorithm,extra", [
    ("streaming_diloco", {"fragments": 2, "overlap_steps": 1}),
    ("streaming_halos", {"fragments": 2})])
def test_streaming_algorithms_refuse_failures(algorithm, extra):
  s = _settings(algorithm, **extra)
  with pytest.raises(InvalidSettings, match=f"{algorithm}.*failures"):
    build_schedule(_env([crash(0, 0.0, 1.0)]), s)


def test_intervals_helpers():
  iv = failures_lib.Intervals([(5.0, 7.0), (1.0, 2.0), (6.0, 9.0)])
  assert iv.pairs() == [(1.0, 2.0), (5.0, 9.0)]
  assert (iv.up_at(0.5), iv.up_at(1.0), iv.up_at(2.0), iv.up_at(6.0)) == (0.5, 2.0, 2.0, 9.0)
  assert iv.window(0.0, 1.0) == 0.0 and iv.window(0.0, 1.5) == 2.0 and iv.window(2.0, 4.0) == 9.0
  assert iv.next_start(1.5, 5.0) is None and iv.next_start(1.5, 5.5) == (5.0, 9.0)
  assert iv.overlap(0.0, 6.0) == 2.0
  assert failures_lib.round_end(iv, 0.0, 0.5, 0.5, 0.5, 1.5) == 2.5  # upload after the cut
  assert failures_lib.round_end(iv, 2.0, 0.5, 1.0, 0.5, 2.0) == 4.0  # not delayed: t + nominal


@pytest.mark.parametrize("algorithm", ["ddp", "diloco", "diloco_dynupd", "async_local_sgd",
                                       "halos"])
def test_geo4_churn_preset_loses_rounds_and_time(algorithm):
  """configs/envs/geo4_churn.yaml: geo4 with faults; the runlocal schedule of every algorithm
  loses rounds and ends later than on geo4."""
  from halos_jax import config_lib  # pylint: disable=g-import-not-at-top
  from halos_jax.schedule import schedule_from_config  # pylint: disable=g-import-not-at-top
  import importlib.util  # pylint: disable=g-import-not-at-top
  import pathlib  # pylint: disable=g-import-not-at-top
  root = pathlib.Path(__file__).resolve().parents[2]
  spec = importlib.util.spec_from_file_location(algorithm, root / "configs" / f"{algorithm}.py")
  module = importlib.util.module_from_spec(spec)
  spec.loader.exec_module(module)
  c = module.get_config("runlocal")
  c.env = "geo4_churn"
  churn = schedule_from_config(config_lib.resolve(c)).summary()
  c.env = "geo4"
  ref = schedule_from_config(config_lib.resolve(c)).summary()
  assert churn["failures"]["lost_rounds"] > 0
  assert churn["simulated_time_ms"] > ref["simulated_time_ms"]
