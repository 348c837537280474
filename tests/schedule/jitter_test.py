"""Compute jitter (issue 15, step 2): seeded per-round factors on compute, in virtual time."""
import numpy as np
import pytest

from halos_jax.network import jitter
from halos_jax.schedule import (InvalidEnvironment, analysis, build_schedule)

import network_testlib
from network_testlib import ALGORITHMS, B, settings as _settings  # noqa: F401


def _env(**jit):
  return network_testlib.env(compute_jitter=jit or None)


@pytest.mark.parametrize("algorithm", ALGORITHMS)
def test_zero_jitter_is_the_deterministic_schedule(algorithm):
  plain = build_schedule(_env(), _settings(algorithm))
  zero = build_schedule(_env(distribution="lognormal", sigma=0.0, seed=5), _settings(algorithm))
  assert zero.sha256() == plain.sha256()
  assert "compute_jitter" not in plain.header()["env"]


@pytest.mark.parametrize("algorithm", ALGORITHMS)
def test_a_seed_fixes_the_schedule(algorithm):
  a = build_schedule(_env(sigma=0.3, seed=1), _settings(algorithm))
  b = build_schedule(_env(sigma=0.3, seed=1), _settings(algorithm))
  c = build_schedule(_env(sigma=0.3, seed=2), _settings(algorithm))
  assert a.sha256() == b.sha256() != c.sha256()
  assert a.header()["env"]["compute_jitter"] == {"distribution": "lognormal", "sigma": 0.3,
                                                 "seed": 1}


def test_async_rounds_by_hand():
  """Async Local-SGD: worker w's j-th round lasts download + upload + compute_w * f(w, j)."""
  env = _env(sigma=0.5, seed=7)
  s = build_schedule(env, _settings("async_local_sgd"))
  f = jitter.Factors(env.compute_jitter, 4)
  plan = s.plan
  r = s.rounds()
  for w in range(4):
    mine = np.flatnonzero((r["worker"] == w) & ~np.isnan(r["t_arrive"]))
    for j, k in enumerate(mine):
      want = plan.transfer_ms[w] + plan.upload_ms[w] + plan.compute_ms[w] * f.factor(w, j)
      assert r["t_arrive"][k] - r["t_start"][k] == pytest.approx(want, rel=1e-12)


def test_synchronous_round_waits_for_the_slowest_jittered_worker():
  env = _env(sigma=0.5, seed=7)
  s = build_schedule(env, _settings("diloco"))
  f = jitter.Factors(env.compute_jitter, 4)
  syncs = [e.t for e in s.events if e.kind == "sync"]
  t = 0.0
  for k, got in enumerate(syncs):
    t += max(s.plan.compute_ms[w] * f.factor(w, k) for w in range(4)) + s.plan.allreduce_ms
    assert got == pytest.approx(t, rel=1e-12)


def test_factors_have_mean_one():
  f = jitter.Factors(jitter.ComputeJitter("lognormal", 0.3, 0), 1)
  x = np.array([f.factor(0, j) for j in range(20_000)])
  assert x.mean() == pytest.approx(1.0, abs=0.01)
  assert np.log(x).std() == pytest.approx(0.3, rel=0.03)


def test_utilisation_counts_the_jittered_compute():
  env = _env(sigma=0.5, seed=3)
  s = build_schedule(env, _settings("async_local_sgd"))
  util = analysis.utilisation(s)
  for row in util:
    assert 0.0 <= row["compute"] <= 1.0 and row["idle"] >= -1e-12


@pytest.mark.parametrize("spec,match", [
    ({"distribution": "pareto", "sigma": 0.1}, "distribution must be one of lognormal"),
    ({"sigma": -0.1}, "sigma must be a finite number >= 0"),
    ({"sigma": 0.1, "seed": -1}, "seed must be an integer >= 0"),
    ({"sigma": 0.1, "mean": 1}, r"unknown key\(s\) \['mean'\]"),
])
def test_bad_jitter_specs(spec, match):
  with pytest.raises(InvalidEnvironment, match=match):
    _env(**spec)
