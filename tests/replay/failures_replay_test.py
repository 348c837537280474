"""Whole runs with worker crashes on the quadratic (docs/schedule.md, "Failures").

Lost rounds are never applied: the replay's final model equals the independent numpy loops of
quadratic_test.py, which apply only the rounds that arrive; summary.json counts the lost rounds.
"""
import json

import numpy as np
import pytest

from halos_jax import config_lib
from halos_jax import schedule as schedule_lib
from halos_jax import train
from halos_jax.replay.problem import quadratic_curvatures
from quadratic_test import numpy_async, numpy_halos, sgd_round
from tiny_configs import TINY_ENV, tiny_config

# Worker 1 crashes mid-round; region 1 is cut off for a while; later worker 3 crashes.
FAILURES = """\
failures:
  - {kind: worker_crash, worker: 1, at_ms: 1500, down_ms: 4000}
  - {kind: partition, region: 1, at_ms: 500, down_ms: 6000}
  - {kind: worker_crash, worker: 3, at_ms: 9000, down_ms: 2500}
"""


def _env(tmp_path, policy=""):
  path = tmp_path / "failing.yaml"
  path.write_text(TINY_ENV + FAILURES + policy)
  return str(path)


def _restore(path):
  import orbax.checkpoint as ocp  # pylint: disable=g-import-not-at-top
  with ocp.StandardCheckpointer() as ck:
    return np.asarray(ck.restore(str(path))["x"], np.float64)


@pytest.mark.parametrize("algorithm,reference", [("async_local_sgd", numpy_async),
                                                  ("halos", numpy_halos)])
def test_async_runs_apply_only_arrived_rounds(algorithm, reference, tmp_path):
  config = tiny_config(algorithm, _env(tmp_path), problem="quadratic", total_local_steps=96,
                       **{"quadratic.dim": 8})
  summary = train.train_and_evaluate(config, str(tmp_path / "run"))
  schedule = schedule_lib.schedule_from_config(config_lib.resolve(config))
  got = _restore(tmp_path / "run" / "final_model")
  np.testing.assert_allclose(got, reference(schedule, config), rtol=1e-4, atol=1e-5)
  written = json.loads((tmp_path / "run" / "summary.json").read_text())
  f = written["failures"]
  assert f["lost_rounds"] >= 1 and f["lost_rounds"] == schedule.summary()["failures"][
      "lost_rounds"]
  assert f["worker_down_ms_total"] > 0
  if algorithm == "halos":  # LPS 1's Delta left when the link returned, with more updates
    late = [e for e in schedule.events if e.kind == "send" and e.server == 1]
    assert late[0].t == 6500.0 and late[0].version > late[0].base_version + config.K
  # Lost rounds are not computed either: every computed round arrived.
  r = schedule.rounds()
  assert summary["rounds_computed"] == int(np.count_nonzero(~np.isnan(r["t_arrive"])))


def test_sequential_and_parallel_replays_agree(tmp_path):
  # A lost round is never computed, so the worker's slot is the same in both modes.
  env = _env(tmp_path)
  out = []
  for parallel in (True, False):
    config = tiny_config("async_local_sgd", env, problem="quadratic", total_local_steps=64,
                         **{"quadratic.dim": 8, "replay.parallel": parallel})
    out.append(train.train_and_evaluate(config, str(tmp_path / f"run{parallel}")))
  assert out[0]["params_sha256"] == out[1]["params_sha256"]
  assert out[0]["rounds_computed"] == out[1]["rounds_computed"]


def numpy_diloco(schedule, config):
  """DiLoCo on the quadratic from the events alone: at each sync, Nesterov outer SGD on the mean
  pseudo-gradient of the rounds the sync lists (under quorum, the survivors only)."""
  d = config.quadratic.dim
  h_curv = quadratic_curvatures(d).astype(np.float64)
  x, m = np.zeros(d), np.zeros(d)
  lr, mu = config.outer.lr, config.outer.momentum
  snapshot, steps = {}, {}
  for ev in schedule.events:
    if ev.kind == "start":
      snapshot[ev.round], steps[ev.round] = x.copy(), ev.H
    elif ev.kind == "sync":
      g = np.mean([snapshot[r] - sgd_round(snapshot[r], h_curv, config.quadratic.worker_lr,
                                           steps[r]) for r in ev.rounds], axis=0)
      m = mu * m + g
      x = x - lr * (g + mu * m)
  return x


@pytest.mark.parametrize("policy", ["wait", "quorum"])
def test_diloco_runs_with_a_crash(policy, tmp_path):
  env = _env(tmp_path, f"failure_policy: {{synchronous: {policy}, quorum: 0.5}}\n")
  config = tiny_config("diloco", env, problem="quadratic", total_local_steps=64,
                       **{"quadratic.dim": 8})
  summary = train.train_and_evaluate(config, str(tmp_path / "run"))
  schedule = schedule_lib.schedule_from_config(config_lib.resolve(config))
  syncs = [e for e in schedule.events if e.kind == "sync"]
  if policy == "quorum":  # the first sync averages the survivors only
    assert len(syncs[0].rounds) < schedule.env.num_workers
  else:
    assert all(len(e.rounds) == schedule.env.num_workers for e in syncs)
  assert summary["failures"]["lost_rounds"] >= 1
  assert summary["final_val_loss"] < 2.2
  np.testing.assert_allclose(_restore(tmp_path / "run" / "final_model"),
                             numpy_diloco(schedule, config), rtol=1e-4, atol=1e-5)
  r = schedule.rounds()
  assert summary["rounds_computed"] == int(np.count_nonzero(~np.isnan(r["t_arrive"])))
