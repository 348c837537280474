"""Whole HALoS / Async runs on the quadratic, re-derived by an independent numpy loop.

The loop below reads only the schedule's events and the rules of docs/algorithms.md (section 2):
plain SGD workers on loss(x) = 0.5 sum h_i (x_i - 1)^2, DN servers, LPS/GPS exchanges, the merge.
It shares no code with halos_jax.optim or halos_jax.replay. It runs in float64; the replay in
float32, so trajectories agree to float32 rounding accumulated over a few hundred updates (rtol
1e-4, atol 1e-5 on parameters of order 1).
"""
import numpy as np
import pytest

from halos_jax import config_lib
from halos_jax import schedule as schedule_lib
from halos_jax import train
from halos_jax.replay.problem import quadratic_curvatures
from tiny_configs import tiny_config


class NumpyDN:
  """Delayed Nesterov, docs/algorithms.md 2.2, written out on float64 vectors."""

  def __init__(self, eta, beta, n, c, x):
    self.lr, self.beta, self.n, self.c = eta * n, beta, n, c
    self.m = np.zeros_like(x)
    self.a = np.zeros_like(x)
    self.t = 0

  def step(self, x, g):
    self.a += g
    if (self.t + 1) % self.n == 0:
      self.m = self.beta * self.m + self.a / self.n
      x = x - self.lr * ((1 - self.c * self.n + self.c) * self.beta * self.m + g / self.n)
      self.a = np.zeros_like(x)
    else:
      x = x - self.lr * (self.c * self.beta * self.m + g / self.n)
    self.t += 1
    return x


def sgd_round(x, h_curv, lr, steps):
  for _ in range(steps):
    x = x - lr * h_curv * (x - 1.0)
  return x


def numpy_halos(schedule, config):
  d = config.quadratic.dim
  h_curv = quadratic_curvatures(d).astype(np.float64)
  x0 = np.zeros(d)
  num_lps = schedule.num_servers
  lps_x = [x0.copy() for _ in range(num_lps)]
  lps_opt = [NumpyDN(config.lps.eta, config.lps.beta, config.lps.N, config.lps.c, x0)
             for _ in range(num_lps)]
  xhat = [x0.copy() for _ in range(num_lps)]
  gps_x = x0.copy()
  gps_opt = NumpyDN(config.gps.eta, config.gps.beta, config.gps.N, config.gps.c, x0)
  snapshot, outbox = {}, {}
  for ev in schedule.events:
    if ev.kind == "start":
      snapshot[ev.worker] = lps_x[ev.server].copy()
    elif ev.kind == "arrive":
      start = snapshot.pop(ev.worker)
      g = start - sgd_round(start, h_curv, config.quadratic.worker_lr, ev.H)
      lps_x[ev.server] = lps_opt[ev.server].step(lps_x[ev.server], g)
    elif ev.kind == "send":
      outbox[ev.server] = xhat[ev.server] - lps_x[ev.server]
    elif ev.kind == "gps_apply":
      gps_x = gps_opt.step(gps_x, outbox[ev.server])
      outbox[ev.server] = gps_x.copy()
    elif ev.kind == "merge":
      a = config.alpha
      lps_x[ev.server] = (1 - a) * lps_x[ev.server] + a * outbox.pop(ev.server)
      xhat[ev.server] = lps_x[ev.server].copy()
  return gps_x


def numpy_async(schedule, config):
  d = config.quadratic.dim
  h_curv = quadratic_curvatures(d).astype(np.float64)
  x = np.zeros(d)
  opt = NumpyDN(config.ps.eta, config.ps.beta, config.ps.N, config.ps.c, x)
  snapshot = {}
  for ev in schedule.events:
    if ev.kind == "start":
      snapshot[ev.worker] = x.copy()
    elif ev.kind == "arrive":
      start = snapshot.pop(ev.worker)
      x = opt.step(x, start - sgd_round(start, h_curv, config.quadratic.worker_lr, ev.H))
  return x


def quadratic_loss(x, d):
  h_curv = quadratic_curvatures(d).astype(np.float64)
  return 0.5 * np.sum(h_curv * (x - 1.0) ** 2)


@pytest.mark.parametrize("algorithm,reference", [("halos", numpy_halos),
                                                  ("async_local_sgd", numpy_async)])
def test_quadratic_run_matches_numpy_loop(algorithm, reference, tiny_env, tmp_path):
  config = tiny_config(algorithm, tiny_env, problem="quadratic", total_local_steps=400,
                       **{"quadratic.dim": 8})
  summary = train.train_and_evaluate(config, str(tmp_path))
  schedule = schedule_lib.schedule_from_config(config_lib.resolve(config))
  want = reference(schedule, config)
  import orbax.checkpoint as ocp
  with ocp.StandardCheckpointer() as ck:
    got = ck.restore(str(tmp_path / "final_model"))
  np.testing.assert_allclose(np.asarray(got["x"], np.float64), want, rtol=1e-4, atol=1e-5)
  np.testing.assert_allclose(summary["final_val_loss"], quadratic_loss(want, 8), rtol=1e-4)
  # The run made progress from loss(0) = 0.5 * sum(h) = 0.5 * 8 * 0.55 = 2.2.
  assert summary["final_val_loss"] < 2.2
  if algorithm == "halos":
    assert summary["server_updates"] >= 3  # several GPS updates happened
