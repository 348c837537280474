"""Staleness, utilisation, bytes per link and the pictures, on the hand-derived tiny schedules
of schedule_builders_test.py (tiny environment: see conftest.py)."""
import json

import numpy as np
import pytest

from halos_jax.schedule import analysis, build_schedule, load_environment, plots

B = 12_500_000_000


def test_async_numbers(tiny_env, tiny_settings):
  s = build_schedule(tiny_env, tiny_settings("async_local_sgd", total_local_steps=10))
  # Arrivals (round: start version -> version after): r0 0 -> 1, r1 0 -> 2, r4 1 -> 3,
  # r5 2 -> 4, r6 3 -> 5. Staleness = after - 1 - start: 0, 1, 1, 1, 1.
  assert analysis.server_staleness(s).tolist() == [0, 1, 1, 1, 1]
  assert analysis.gps_staleness(s).tolist() == []
  # Run ends at 12,000 ms. w0: rounds r0, r4, r6 each 1,000 down + 2,000 compute + 1,000 up
  # -> compute 6,000 / 12,000, communication 6,000 / 12,000. w1: r1, r5 each 1,000 + 4,000 +
  # 1,000 -> 8,000 and 4,000 (r7 starts at 12,000: nothing inside the run). w2, w3: their
  # first download (100,000 ms) outlasts the run -> 100% communication.
  u = analysis.utilisation(s)
  assert [(x["compute"], x["communication"]) for x in u] == [  # exact: ratios of integers
      (0.5, 0.5), (8 / 12, 4 / 12), (0.0, 1.0), (0.0, 1.0)]
  # idle = 1 - compute - communication: 0 up to the rounding of 1 - 2/3 - 1/3.
  assert [x["idle"] for x in u] == pytest.approx([0.0] * 4, abs=1e-15)
  # Completed by 12,000: downloads of r0, r1, r4, r5, r6 (r2, r3 take 100 s, r7 ends at
  # 13,000) and uploads of the 5 arrived rounds, all inside region 0: 10 messages of B bytes.
  lb = analysis.link_bytes(s)
  assert lb.tolist() == [[10 * B, 0.0], [0.0, 0.0]]


def test_halos_numbers(tiny_env, tiny_settings):
  s = build_schedule(tiny_env, tiny_settings("halos", total_local_steps=10))
  # LPS staleness = version after - 1 - version at start, per arrival in order:
  # r0 (0 -> 1) 0, r2 (0 -> 1) 0, r1 (0 -> 2) 1, r4 (1 -> 3) 1, r5 (1 -> 2) 0, r3 (0 -> 3) 2,
  # r6 (2 -> 4) 1, r7 (3 -> 5) 1, r8 (2 -> 4) 1.
  assert analysis.server_staleness(s).tolist() == [0, 0, 1, 1, 0, 2, 1, 1, 1]
  # GPS: e0 applied as version 1, LPS 0 had merged nothing (GPS version 0) -> 0; e2 applied
  # as version 2, LPS 0 last merged the model of e0 (version 1) -> 0.
  assert analysis.gps_staleness(s).tolist() == [0, 0]
  # Links by 13,000: worker <-> LPS inside the regions: downloads completed (t_start + 1,000 <=
  # 13,000): all 13 rounds except none (last starts at 12,000 -> 13,000) = 13, of which
  # 7 in region 0 (r0, r1, r4, r6, r7, r10, r11) and 6 in region 1; uploads = arrivals: 5 in
  # region 0 (r0, r1, r4, r6, r7), 4 in region 1 (r2, r5, r3, r8). Deltas applied: e0, e2
  # (LPS 0, 0 -> 0); global model merged: e0 (0 -> 0). e1 (1 -> 0) is still in flight.
  lb = analysis.link_bytes(s)
  assert lb.tolist() == [[(7 + 5 + 2 + 1) * B, 0.0], [0.0, (6 + 4) * B]]


def test_diloco_numbers(tiny_env, tiny_settings):
  s = build_schedule(tiny_env, tiny_settings("diloco", total_local_steps=16))
  # Two rounds of 308,000 ms: compute 2,000 / 4,000 / 2,000 / 8,000 per round, all-reduce
  # 300,000, the rest waiting for w3.
  u = analysis.utilisation(s)
  assert u[3]["compute"] == pytest.approx(8000 / 308000, rel=1e-12)
  assert u[0]["idle"] == pytest.approx(6000 / 308000, rel=1e-12)
  assert all(x["communication"] == pytest.approx(300000 / 308000, rel=1e-12) for x in u)
  # Ring 0 -> 1 -> 0 over workers w0 w1 | w2 w3: hops w0->w1 (0->0), w1->w2 (0->1),
  # w2->w3 (1->1), w3->w0 (1->0); each carries 2 (4 - 1) / 4 * B per all-reduce, 2 rounds.
  per_hop = 2 * 1.5 * B
  assert analysis.link_bytes(s).tolist() == [[per_hop, per_hop], [per_hop, per_hop]]
  assert analysis.server_staleness(s).tolist() == [0] * 8


def test_summary_is_json_and_complete(tiny_env, tiny_settings):
  for algorithm in ("ddp", "diloco", "diloco_dynupd", "async_local_sgd", "halos"):
    s = build_schedule(tiny_env, tiny_settings(algorithm, total_local_steps=10))
    summary = json.loads(json.dumps(s.summary()))
    for key in ("simulated_time_ms", "server_updates", "local_steps", "schedule_sha256",
                "utilisation", "staleness", "link_bytes"):
      assert key in summary
    assert summary["schedule_sha256"] == s.sha256()
    assert len(summary["utilisation"]["per_worker"]) == 4
    for row in summary["utilisation"]["per_worker"]:  # shares of the run add up to 1
      assert row["compute"] + row["communication"] + row["idle"] == pytest.approx(1, abs=1e-12)
    assert ("gps" in summary["staleness"]) == (algorithm == "halos")
    assert "simulated time" in analysis.format_summary(summary)


def test_pictures(tmp_path, tiny_env, tiny_settings):
  s = build_schedule(tiny_env, tiny_settings("halos", total_local_steps=10))
  plots.gantt(s, tmp_path / "g.png")
  plots.staleness_histogram(s, tmp_path / "h.png")
  geo = build_schedule(load_environment("geo4"), tiny_settings("diloco", total_local_steps=64))
  plots.gantt(geo, tmp_path / "d.png", t_max_ms=1e6)
  for name in ("g.png", "h.png", "d.png"):
    data = (tmp_path / name).read_bytes()
    assert data[:8] == b"\x89PNG\r\n\x1a\n" and len(data) > 5000
  assert sorted(p.name for p in tmp_path.iterdir()) == ["d.png", "g.png", "h.png"]  # no temps
  assert np.isfinite(s.summary()["simulated_time_ms"])


def test_link_busy_time_by_hand():
  """Busy time per link = the union of its transfers: DiLoCo's ring links are busy for every
  all-reduce; HALoS's LPS -> GPS links for every Delta (nothing else crosses them)."""
  from halos_jax.schedule import ScheduleSettings, analysis, build_schedule, load_environment
  env = load_environment("geo4")
  base = dict(total_local_steps=4096, local_batch=64, global_batch=1024, step_time_ms=238.391,
              message_bytes=281_706_496)
  d = build_schedule(env, ScheduleSettings(algorithm="diloco", H=32, **base))
  busy = analysis.link_busy_ms(d)
  syncs = sum(1 for e in d.events if e.kind == "sync")
  order = d.plan.ring.order
  for k, reg in enumerate(order):
    assert busy[reg, order[(k + 1) % 4]] == pytest.approx(syncs * d.plan.allreduce_ms)
  h = build_schedule(env, ScheduleSettings(algorithm="halos", H=8, K=32, workers_per_lps=4,
                                           rescale_local_steps=True, **base))
  applies = [e for e in h.events if e.kind == "gps_apply" and e.server == 3]
  busy = analysis.link_busy_ms(h)
  assert busy[3, 0] == pytest.approx(len(applies) * h.plan.up_ms[3])
