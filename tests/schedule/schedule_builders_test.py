"""Hand-derived schedules of every algorithm on the tiny 2 x 2 environment (see conftest.py).

Reminder of the tiny environment: workers w0, w1 in region 0 with speeds 1, 0.5; w2, w3 in
region 1 with speeds 1, 0.25; a local step is 1,000 ms at speed 1; a message takes 1,000 ms
inside a region, 100,000 ms from region 0 to 1, 200,000 ms from 1 to 0. Every expected time
below is an exact float64 integer, so times are compared exactly (==).
"""
from halos_jax.schedule import build_schedule


def _rows(schedule, *fields):
  return [(e.kind, e.t) + tuple(getattr(e, f) for f in fields) for e in schedule.events]


def test_ddp(tiny_env, tiny_settings):
  # H = 1. Compute of one step: 1000/1, 1000/0.5, 1000/1, 1000/0.25 -> slowest 4,000 ms.
  # Best ring of 2 regions: 0 -> 1 -> 0, bottleneck min(1, 0.5) = 0.5 Gbps.
  # All-reduce over W = 4: 2 * 3 * (1e11 / 4) / 0.5e9 * 1e3 = 300,000 ms. Round 304,000 ms.
  # 4 steps per round, total 8 -> 2 rounds; syncs at 304,000 and 608,000.
  # Data: local batch 2 per worker per step; lr offset floor(start / 8).
  s = build_schedule(tiny_env, tiny_settings("ddp", H=32, total_local_steps=8))
  got = _rows(s, "round", "worker", "version", "H", "data_start", "data_end", "lr_offset",
              "counted_steps", "rounds")
  r0 = [("start", 0.0, w, w, 0, 1, 2 * w, 2 * w + 2, 0, -1, ()) for w in range(4)]
  a0 = [("arrive", 304000.0, w, w, -1, 1, -1, -1, -1, -1, ()) for w in range(4)]
  r1 = [("start", 304000.0, 4 + w, w, 1, 1, 8 + 2 * w, 10 + 2 * w, 1, -1, ()) for w in range(4)]
  a1 = [("arrive", 608000.0, 4 + w, w, -1, 1, -1, -1, -1, -1, ()) for w in range(4)]
  expected = (r0 + a0 + [("sync", 304000.0, -1, -1, 1, -1, -1, -1, -1, 4, (0, 1, 2, 3))]
              + r1 + a1 + [("sync", 608000.0, -1, -1, 2, -1, -1, -1, -1, 8, (4, 5, 6, 7))]
              + [("stop", 608000.0, -1, -1, 2, -1, -1, -1, -1, 8, ())])
  assert got == expected


def test_diloco(tiny_env, tiny_settings):
  # H = 2: compute 2000, 4000, 2000, 8000 -> round 8,000 + 300,000 = 308,000 ms.
  # 8 steps per round, total 16 -> syncs at 308,000 and 616,000.
  # Blocks of 2 * 2 = 4 sequences; lr offset floor(start / 8) rounded down to a multiple of
  # H = 2: round 0 starts 0, 4, 8, 12 -> 0, 0, 1, 1 -> 0, 0, 0, 0;
  # round 1 starts 16, 20, 24, 28 -> 2, 2, 3, 3 -> 2, 2, 2, 2.
  s = build_schedule(tiny_env, tiny_settings("diloco", total_local_steps=16))
  starts = [(e.t, e.round, e.version, e.H, e.data_start, e.data_end, e.lr_offset)
            for e in s.events if e.kind == "start"]
  assert starts == [(0.0, w, 0, 2, 4 * w, 4 * w + 4, 0) for w in range(4)] + [
      (308000.0, 4 + w, 1, 2, 16 + 4 * w, 20 + 4 * w, 2) for w in range(4)]
  syncs = [(e.t, e.version, e.steps, e.counted_steps, e.rounds)
           for e in s.events if e.kind in ("sync", "stop")]
  assert syncs == [(308000.0, 1, 8, 8, (0, 1, 2, 3)), (616000.0, 2, 8, 16, (4, 5, 6, 7)),
                   (616000.0, 2, -1, 16, ())]


def test_diloco_dynupd(tiny_env, tiny_settings):
  # H = 4 rescaled: H_w = max(1, ceil(4 s_w)) = 4, 2, 4, 1; compute 4000/1, 2000/0.5,
  # 4000/1, 1000/0.25 = 4,000 ms each -> round 304,000 ms; 11 steps per round.
  # total 20 -> 2 rounds (11 < 20 <= 22), counted 22.
  # Blocks (2 * H_w = 8, 4, 8, 2 sequences): round 0 [0,8) [8,12) [12,20) [20,22),
  # round 1 [22,30) [30,34) [34,42) [42,44). H differs between workers: no rounding of the
  # lr offsets, floor(start / 8) = 0, 1, 1, 2 and 2, 3, 4, 5.
  s = build_schedule(tiny_env, tiny_settings("diloco_dynupd", H=4, total_local_steps=20))
  starts = [(e.t, e.worker, e.H, e.data_start, e.data_end, e.lr_offset)
            for e in s.events if e.kind == "start"]
  assert starts == [(0.0, 0, 4, 0, 8, 0), (0.0, 1, 2, 8, 12, 1), (0.0, 2, 4, 12, 20, 1),
                    (0.0, 3, 1, 20, 22, 2), (304000.0, 0, 4, 22, 30, 2),
                    (304000.0, 1, 2, 30, 34, 3), (304000.0, 2, 4, 34, 42, 4),
                    (304000.0, 3, 1, 42, 44, 5)]
  last = s.events[-1]
  assert (last.kind, last.t, last.version, last.counted_steps) == ("stop", 608000.0, 2, 22)


def test_async_local_sgd(tiny_env, tiny_settings):
  # PS in region 0. Round = 2 * transfer(0 -> worker region) + compute(H = 2):
  #   w0: 2*1000 + 2000 = 4,000   w1: 2*1000 + 4000 = 6,000
  #   w2: 2*100000 + 2000 = 202,000   w3: 2*100000 + 8000 = 208,000
  # Arrivals: w0 at 4000, 8000, 12000; w1 at 6000, 12000. At t = 12000 w1's round (r5,
  # dispatched at 6000) precedes w0's (r6, dispatched at 8000): ties go by insertion order.
  # total 10 = 5 arrivals x 2 steps -> stop right after the arrival of r6 at 12000.
  # Blocks of 4 sequences in dispatch order; lr offset floor(start / 8).
  s = build_schedule(tiny_env, tiny_settings("async_local_sgd", total_local_steps=10))
  got = _rows(s, "round", "worker", "version", "data_start", "lr_offset", "counted_steps")
  expected = [("start", 0.0, w, w, 0, 4 * w, (4 * w) // 8, -1) for w in range(4)] + [
      ("arrive", 4000.0, 0, 0, 1, -1, -1, 2), ("start", 4000.0, 4, 0, 1, 16, 2, -1),
      ("arrive", 6000.0, 1, 1, 2, -1, -1, 4), ("start", 6000.0, 5, 1, 2, 20, 2, -1),
      ("arrive", 8000.0, 4, 0, 3, -1, -1, 6), ("start", 8000.0, 6, 0, 3, 24, 3, -1),
      ("arrive", 12000.0, 5, 1, 4, -1, -1, 8), ("start", 12000.0, 7, 1, 4, 28, 3, -1),
      ("arrive", 12000.0, 6, 0, 5, -1, -1, 10),
      ("stop", 12000.0, -1, -1, 5, -1, -1, 10)]
  assert got == expected
  assert [e.seq for e in s.events] == list(range(len(expected)))


def test_halos(tiny_env, tiny_settings):
  # LPS 0 = {w0, w1} in region 0, LPS 1 = {w2, w3} in region 1; GPS in region 0; K = 2, H = 2.
  # Worker rounds (LPS in the worker's region): 2 * 1000 + compute:
  #   w0 4,000  w1 6,000  w2 4,000  w3 10,000.
  # Delta LPS -> GPS: LPS 0 1,000 ms (inside region 0), LPS 1 200,000 ms (1 -> 0);
  # global model back: LPS 0 1,000 ms, LPS 1 100,000 ms (0 -> 1).
  #   4000  r0 (w0) at LPS 0: v0 = 1; restart w0 (r4).   r2 (w2) at LPS 1: v1 = 1; r5.
  #         (tie at 4000: r0 was inserted before r2)
  #   6000  r1 (w1): v0 = 2 = vhat0 + K -> send e0 (v 2, vhat 0, steps 2 + 2); restart (r6).
  #   7000  GPS applies e0: version 1, counted 4; the model leaves for LPS 0.
  #   8000  r4 (w0): v0 = 3 (in flight, no send); r7.  r5 (w2): v1 = 2 -> send e1
  #         (v 2, vhat 0, steps 4); r8.  Then merge e0 at LPS 0 (inserted last): vhat0 = 3.
  #   10000 r3 (w3): v1 = 3; r9.
  #   12000 r6 (w1): v0 = 4; r10.  r7 (w0): v0 = 5 = vhat0 + K -> send e2 (v 5, vhat 3,
  #         steps of r4, r6, r7 = 6, incl. r4's applied while e0 was in flight); r11.
  #         r8 (w2): v1 = 4; r12.
  #   13000 GPS applies e2: version 2, counted 10 >= total 10 -> stop.
  s = build_schedule(tiny_env, tiny_settings("halos", total_local_steps=10))
  got = _rows(s, "round", "worker", "server", "version", "base_version", "steps",
              "counted_steps", "exchange")
  expected = [("start", 0.0, w, w, w // 2, 0, -1, -1, -1, -1) for w in range(4)] + [
      ("arrive", 4000.0, 0, 0, 0, 1, -1, 2, -1, -1),
      ("start", 4000.0, 4, 0, 0, 1, -1, -1, -1, -1),
      ("arrive", 4000.0, 2, 2, 1, 1, -1, 2, -1, -1),
      ("start", 4000.0, 5, 2, 1, 1, -1, -1, -1, -1),
      ("arrive", 6000.0, 1, 1, 0, 2, -1, 2, -1, -1),
      ("send", 6000.0, -1, -1, 0, 2, 0, 4, -1, 0),
      ("start", 6000.0, 6, 1, 0, 2, -1, -1, -1, -1),
      ("gps_apply", 7000.0, -1, -1, 0, 1, -1, 4, 4, 0),
      ("arrive", 8000.0, 4, 0, 0, 3, -1, 2, -1, -1),
      ("start", 8000.0, 7, 0, 0, 3, -1, -1, -1, -1),
      ("arrive", 8000.0, 5, 2, 1, 2, -1, 2, -1, -1),
      ("send", 8000.0, -1, -1, 1, 2, 0, 4, -1, 1),
      ("start", 8000.0, 8, 2, 1, 2, -1, -1, -1, -1),
      ("merge", 8000.0, -1, -1, 0, 3, -1, -1, -1, 0),
      ("arrive", 10000.0, 3, 3, 1, 3, -1, 2, -1, -1),
      ("start", 10000.0, 9, 3, 1, 3, -1, -1, -1, -1),
      ("arrive", 12000.0, 6, 1, 0, 4, -1, 2, -1, -1),
      ("start", 12000.0, 10, 1, 0, 4, -1, -1, -1, -1),
      ("arrive", 12000.0, 7, 0, 0, 5, -1, 2, -1, -1),
      ("send", 12000.0, -1, -1, 0, 5, 3, 6, -1, 2),
      ("start", 12000.0, 11, 0, 0, 5, -1, -1, -1, -1),
      ("arrive", 12000.0, 8, 2, 1, 4, -1, 2, -1, -1),
      ("start", 12000.0, 12, 2, 1, 4, -1, -1, -1, -1),
      ("gps_apply", 13000.0, -1, -1, 0, 2, -1, 6, 10, 2),
      ("stop", 13000.0, -1, -1, -1, 2, -1, -1, 10, -1)]
  assert got == expected
  # Data: 13 rounds of 2 * 2 = 4 sequences in dispatch order; lr offset floor(start / 8).
  starts = [(e.round, e.data_start, e.data_end, e.lr_offset)
            for e in s.events if e.kind == "start"]
  assert starts == [(r, 4 * r, 4 * r + 4, (4 * r) // 8) for r in range(13)]
  assert s.lps_region == (0, 1)
  assert s.worker_server.tolist() == [0, 0, 1, 1]
