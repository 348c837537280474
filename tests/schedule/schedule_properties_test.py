"""Properties of every schedule, over random environments and settings (hypothesis).

`check_schedule` replays the algorithm's rules on the events alone (docs/algorithms.md 2.3-2.6) and
checks that the schedule obeys them: data handed out exactly once, contiguously, in scheduling
order; times never decrease; rounds start/arrive consistently with the timing model (exact float
equality: the builder and this check perform the same float additions); server versions, step
counts, HALoS sends (K from the last merge, equality), at most one exchange in flight per LPS,
and the stop rules.
"""
import json
import os
import subprocess
import sys
import tempfile

import ml_collections
import numpy as np
from hypothesis import given, settings
from hypothesis import strategies as st

from halos_jax.schedule import (ScheduleSettings, build_schedule, environment_from_dict,
                                read_jsonl, schedule_from_config)

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


def check_schedule(s, timed=True):
  """Asserts the invariants of docs/algorithms.md 2-3 on schedule s (any algorithm).

  timed=False: without the exact timing model's durations (fair link sharing makes every
  message's time depend on the others in flight; sharing_test.py checks those times).
  """
  cfg, plan = s.settings, s.plan
  ev = list(s.events)
  assert [e.seq for e in ev] == list(range(len(ev)))
  assert all(a.t <= b.t for a, b in zip(ev, ev[1:])), "times decrease"
  assert ev[-1].kind == "stop" and [e.kind for e in ev].count("stop") == 1

  # Data: one contiguous stream, blocks in round-id (= dispatch = event) order.
  starts = [e for e in ev if e.kind == "start"]
  assert [e.round for e in starts] == list(range(len(starts)))
  position = 0
  for e in starts:
    assert e.H == plan.worker_H[e.worker]
    assert (e.data_start, e.data_end) == (position, position + cfg.local_batch * e.H)
    position = e.data_end
    lr = e.data_start // cfg.global_batch
    if plan.uniform_H:
      lr -= lr % plan.uniform_H
    assert e.lr_offset == lr

  # Rounds: one in flight per worker; arrival = start + round time (async, halos).
  in_flight, started, arrived = {}, {}, set()
  for e in ev:
    if e.kind == "start":
      assert e.worker not in in_flight
      in_flight[e.worker] = e.round
      started[e.round] = e
      assert e.server == plan.worker_server[e.worker]
    elif e.kind == "arrive":
      assert in_flight.pop(e.worker) == e.round and e.round not in arrived
      arrived.add(e.round)
      st_ev = started[e.round]
      assert (e.H, e.steps, e.server) == (st_ev.H, st_ev.H, st_ev.server)
      if not cfg.synchronous and timed:
        assert e.t == st_ev.t + plan.round_ms[e.worker]
  total = cfg.total_local_steps

  if cfg.synchronous:
    w_count = s.env.num_workers
    k, counted, t0 = 0, 0, 0.0
    i = 0
    while ev[i].kind != "stop":
      block = ev[i:i + 2 * w_count + 1]
      assert [e.kind for e in block] == ["start"] * w_count + ["arrive"] * w_count + ["sync"]
      sync = block[-1]
      assert [e.worker for e in block[:w_count]] == list(range(w_count))  # round robin
      assert all(e.t == t0 and e.version == k for e in block[:w_count])
      assert sync.t == t0 + plan.round_ms[0]
      assert all(e.t == sync.t for e in block[w_count:])
      assert sync.rounds == tuple(e.round for e in block[:w_count])
      steps = sum(e.H for e in block[:w_count])
      counted += steps
      k += 1
      assert (sync.version, sync.counted_steps, sync.steps) == (k, counted, steps)
      assert (counted >= total) == (ev[i + 2 * w_count + 1].kind == "stop")
      t0 = sync.t
      i += 2 * w_count + 1
    assert (ev[-1].version, ev[-1].counted_steps, ev[-1].t) == (k, counted, t0)

  elif cfg.algorithm == "async_local_sgd":
    version = counted = 0
    for e, nxt in zip(ev, ev[1:]):
      if e.kind == "start":
        assert e.version == version
      elif e.kind == "arrive":
        version += 1
        counted += e.H
        assert (e.version, e.counted_steps) == (version, counted)
        assert (counted >= total) == (nxt.kind == "stop")
        if nxt.kind != "stop":  # the worker restarts at once
          assert (nxt.kind, nxt.worker, nxt.t) == ("start", e.worker, e.t)
    assert (ev[-1].version, ev[-1].counted_steps) == (version, counted)

  else:  # halos
    lps = plan.num_servers
    v, vhat, acc = [0] * lps, [0] * lps, [0] * lps
    flight = {}  # LPS -> [exchange, send event, gps_apply event or None]
    gps_version = counted = 0
    for i, e in enumerate(ev):
      if e.kind == "start":
        assert e.version == v[e.server]
      elif e.kind == "arrive":
        l = e.server
        v[l] += 1
        acc[l] += e.H
        assert e.version == v[l]
        nxt = ev[i + 1]
        if v[l] == vhat[l] + cfg.K:  # equality: K counted from the last merge
          assert (nxt.kind, nxt.server, nxt.t) == ("send", l, e.t)
          assert (nxt.version, nxt.base_version, nxt.steps) == (v[l], vhat[l], acc[l])
          assert l not in flight  # at most one exchange in flight
          flight[l] = [nxt.exchange, nxt, None]
          acc[l] = 0
          nxt = ev[i + 2]
        assert (nxt.kind, nxt.worker, nxt.t) == ("start", e.worker, e.t)
      elif e.kind == "gps_apply":
        ex, send, _ = flight[e.server]
        assert e.exchange == ex and (not timed or e.t == send.t + plan.up_ms[e.server])
        flight[e.server][2] = e
        gps_version += 1
        counted += send.steps
        assert (e.version, e.steps, e.counted_steps) == (gps_version, send.steps, counted)
        assert (counted >= total) == (ev[i + 1].kind == "stop")
      elif e.kind == "merge":
        ex, _, applied = flight.pop(e.server)
        assert e.exchange == ex and (not timed or e.t == applied.t + plan.down_ms[e.server])
        assert e.version == v[e.server]
        vhat[e.server] = v[e.server]
    assert (ev[-1].version, ev[-1].counted_steps) == (gps_version, counted)
    assert ev[-2].kind == "gps_apply"


# -- strategies ----------------------------------------------------------------------------------


@st.composite
def environments(draw, equal_region_sizes=False):
  r = draw(st.integers(1, 3))
  if equal_region_sizes:
    sizes = [draw(st.integers(1, 3))] * r
  else:
    sizes = draw(st.lists(st.integers(1, 3), min_size=r, max_size=r))
  bw_values = st.one_of(st.sampled_from([0.1, 0.5, 1.0, 100.0]), st.floats(0.05, 100.0))
  speed_values = st.one_of(st.sampled_from([0.25, 0.5, 1.0]), st.floats(0.05, 1.0))
  bw = [[draw(bw_values) for _ in range(r)] for _ in range(r)]
  speeds = [[draw(speed_values) for _ in range(n)] for n in sizes]
  return environment_from_dict({"network_bandwidths": bw, "worker_speeds": speeds})


@st.composite
def cases(draw):
  algorithm = draw(st.sampled_from(["ddp", "diloco", "diloco_dynupd", "async_local_sgd",
                                    "halos"]))
  env = draw(environments(equal_region_sizes=algorithm == "halos"))
  per_region = len(env.worker_speeds_raw[0])
  wpl = draw(st.sampled_from([d for d in range(1, per_region + 1) if per_region % d == 0]))
  s = ScheduleSettings(
      algorithm=algorithm, H=draw(st.integers(1, 6)),
      total_local_steps=draw(st.integers(1, 150)), local_batch=draw(st.integers(1, 4)),
      global_batch=draw(st.integers(1, 20)), step_time_ms=draw(st.floats(1.0, 300.0)),
      message_bytes=draw(st.sampled_from([1_000_000, 100_000_000, 281_706_496])),
      rescale_local_steps=draw(st.booleans()), K=draw(st.integers(1, 5)), workers_per_lps=wpl)
  return env, s


@given(cases())
@settings(max_examples=150)
def test_every_schedule_obeys_the_rules(case):
  env, s = case
  check_schedule(build_schedule(env, s))


@given(st.sampled_from(["async_local_sgd", "halos"]), st.integers(2, 5),
       st.floats(0.1, 1.0), st.integers(1, 4), st.integers(20, 120), st.booleans())
@settings(max_examples=30)
def test_equal_speeds_in_one_region_give_round_robin(algorithm, n, speed, h, total, other):
  # Region 0: n workers of equal speed (one LPS holds them all); optionally a second region
  # with different workers. Region 0's workers then arrive (and restart) in the cyclic order
  # 0, 1, ..., n-1, 0, 1, ...: equal times are broken by insertion order.
  speeds = [[speed] * n] + ([[1.0] * n] if other else [])
  bw = [[100.0, 0.3], [0.7, 100.0]] if other else [[100.0]]
  env = environment_from_dict({"network_bandwidths": bw, "worker_speeds": speeds})
  s = ScheduleSettings(algorithm=algorithm, H=h, total_local_steps=total, local_batch=1,
                       global_batch=4, step_time_ms=10.0, message_bytes=10**6, K=3,
                       workers_per_lps=n)
  order = [e.worker for e in build_schedule(env, s).events if e.kind == "arrive" and e.worker < n]
  assert order == [k % n for k in range(len(order))]


def _config(algorithm, **over):
  c = ml_collections.ConfigDict({
      "algorithm": algorithm, "env": "geo4", "H": 4, "rescale_local_steps": True, "K": 4,
      "alpha": 0.25, "workers_per_lps": 4, "total_local_steps": 500, "local_batch": 64,
      "global_batch": 1024, "step_time_ms": 238.391, "message_bytes": 281_706_496,
      "worker": {"max_lr": 1e-3, "b1": 0.9, "b2": 0.95},
      "outer": {"lr": 0.7, "momentum": 0.9},
      "lps": {"eta": 0.2, "beta": 0.9}, "gps": {"eta": 0.15, "beta": 0.5},
      "ps": {"eta": 0.05, "beta": 0.9}})
  for k, v in over.items():
    c[k] = v
  return c


@given(st.sampled_from(["diloco", "async_local_sgd", "halos"]), st.floats(0.0, 1.0),
       st.floats(1e-5, 10.0), st.floats(0.0, 0.999))
@settings(max_examples=12)
def test_schedule_does_not_depend_on_learning_rates_betas_or_alpha(algorithm, alpha, lr, beta):
  base = schedule_from_config(_config(algorithm)).sha256()
  c = _config(algorithm, alpha=alpha)
  c.worker.max_lr, c.outer.lr, c.lps.eta, c.gps.eta, c.ps.eta = lr, lr, lr, lr, lr
  c.worker.b1, c.outer.momentum, c.lps.beta, c.gps.beta, c.ps.beta = (beta,) * 5
  assert ScheduleSettings.from_config(c) == ScheduleSettings.from_config(_config(algorithm))
  assert schedule_from_config(c).sha256() == base


@given(cases())
@settings(max_examples=15)
def test_jsonl_round_trip(case):
  env, s = case
  schedule = build_schedule(env, s)
  with tempfile.TemporaryDirectory() as d:
    path = os.path.join(d, "schedule.jsonl")
    schedule.write_jsonl(path)
    back = read_jsonl(path)
    lines = open(path).read().splitlines()
  assert back.sha256() == schedule.sha256()
  assert list(back.events) == list(schedule.events)
  assert back.settings == schedule.settings and back.env == schedule.env
  assert json.loads(lines[0])["num_events"] == len(lines) - 1 == len(schedule)
  assert all(json.loads(line)["seq"] == i for i, line in enumerate(lines[1:]))


def test_same_configuration_same_sha256_in_a_fresh_process():
  algorithms = ["ddp", "diloco_dynupd", "async_local_sgd", "halos"]
  here = [schedule_from_config(_config(a)).sha256() for a in algorithms]
  code = (
      "import ml_collections, sys\n"
      "sys.path.insert(0, %r)\n"
      "from halos_jax.schedule import schedule_from_config\n"
      "for a in %r:\n"
      "  c = ml_collections.ConfigDict(%r)\n"
      "  c.algorithm = a\n"
      "  print(schedule_from_config(c).sha256())\n"
  ) % (ROOT, algorithms, _config("halos").to_dict())
  env = dict(os.environ, PYTHONHASHSEED="12345")
  out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env,
                       check=True, cwd=ROOT)
  assert out.stdout.split() == here
  assert len(set(here)) == len(here)


def test_events_sequence_interface(tiny_env, tiny_settings):
  s = build_schedule(tiny_env, tiny_settings("halos", total_local_steps=10))
  events = s.events
  assert events[-1] == list(events)[-1] and events[-1].kind == "stop"
  assert events[2:5] == list(events)[2:5]
  assert len(events) == len(s) == 29
  with np.testing.assert_raises(IndexError):
    events[len(events)]
