"""Non-finite rounds (config `nonfinite`) and interruptions at any event boundary.

A NaN is injected with a problem whose data blocks carry their own stream indices: the quadratic
of halos_jax.replay.problem, except that a step whose batch holds a poisoned sequence index has a
NaN loss (and, by default, a NaN gradient). Which rounds are hit, where they arrive and which
checkpoint precedes them follow from the schedule alone, so the tests derive the expected
counts, event indices and trajectories by hand (numpy, as in quadratic_test.py).
"""
import json
import os
import signal
import subprocess
import sys

import jax
import jax.numpy as jnp
import numpy as np
import orbax.checkpoint as ocp
import pytest

from halos_jax import config_lib
from halos_jax import optim
from halos_jax import schedule as schedule_lib
from halos_jax import train
from halos_jax.replay import interrupts
from halos_jax.replay import nonfinite
from halos_jax.replay.problem import quadratic_curvatures, quadratic_problem
from quadratic_test import NumpyDN, sgd_round
from tiny_configs import ROOT, tiny_config


class IndexBlocks:
  """Sequence i of the stream is the number i; validation sequences are -1 (never poisoned)."""

  def __init__(self, tag):
    self.tag = tag

  def block(self, start, end):
    return np.arange(start, end, dtype=np.int32)[:, None]

  def validation(self):
    return np.full((1, 1), -1, np.int32)

  def fingerprint(self):
    return f"index-blocks:{self.tag}"


def poisoned_quadratic(config, poison, gradient=True):
  """The config's quadratic; a step whose batch holds an index in `poison` has a NaN loss, and
  a NaN gradient too unless gradient=False."""
  base = quadratic_problem(config.quadratic.dim, config.quadratic.worker_lr)
  bad = jnp.asarray(sorted(poison), jnp.int32)

  def loss(params, batch):
    hit = jnp.any(batch.reshape(-1, 1) == bad.reshape(1, -1))
    value = base.loss(params, batch)
    if gradient:
      return value * jnp.where(hit, jnp.nan, 1.0)
    return value + jnp.where(hit, jnp.nan, 0.0)  # a constant: the gradient stays finite

  return base._replace(loss=loss, data=IndexBlocks(f"{sorted(poison)}:{gradient}"))


def _config(algorithm, env, **kw):
  kw.setdefault("total_local_steps", 200)
  return tiny_config(algorithm, env, problem="quadratic", **{"quadratic.dim": 8}, **kw)


def _schedule(config):
  return schedule_lib.schedule_from_config(config_lib.resolve(config))


def _bad_rounds(schedule, poison):
  return {e.round for e in schedule.events if e.kind == "start"
          and any(e.data_start <= p < e.data_end for p in poison)}


def _strip(records):
  return [{k: v for k, v in r.items() if k != "wall_s"} for r in records]


def _metrics(workdir):
  return _strip(json.loads(l) for l in open(os.path.join(workdir, "metrics.jsonl")))


def _steps(workdir):
  d = os.path.join(workdir, "checkpoints")
  return sorted(int(n) for n in os.listdir(d) if n.isdigit())


def _final_x(workdir):
  with ocp.StandardCheckpointer() as ck:
    return np.asarray(ck.restore(os.path.join(workdir, "final_model"))["x"], np.float64)


# Independent numpy loops (docs/algorithms.md 2.5, 2.6) that drop the updates of the poisoned
# rounds.


def numpy_async_skipping(schedule, config, bad):
  h = quadratic_curvatures(config.quadratic.dim).astype(np.float64)
  x = np.zeros(config.quadratic.dim)
  opt = NumpyDN(config.ps.eta, config.ps.beta, config.ps.N, config.ps.c, x)
  snapshot = {}
  for ev in schedule.events:
    if ev.kind == "start":
      snapshot[ev.worker] = x.copy()
    elif ev.kind == "arrive":
      start = snapshot.pop(ev.worker)
      if ev.round not in bad:
        x = opt.step(x, start - sgd_round(start, h, config.quadratic.worker_lr, ev.H))
  return x


def numpy_halos_skipping(schedule, config, bad):
  d = config.quadratic.dim
  h = quadratic_curvatures(d).astype(np.float64)
  x0 = np.zeros(d)
  n = schedule.num_servers
  lps_x = [x0.copy() for _ in range(n)]
  lps_opt = [NumpyDN(config.lps.eta, config.lps.beta, config.lps.N, config.lps.c, x0)
             for _ in range(n)]
  xhat = [x0.copy() for _ in range(n)]
  gps_x = x0.copy()
  gps_opt = NumpyDN(config.gps.eta, config.gps.beta, config.gps.N, config.gps.c, x0)
  snapshot, outbox = {}, {}
  for ev in schedule.events:
    if ev.kind == "start":
      snapshot[ev.worker] = lps_x[ev.server].copy()
    elif ev.kind == "arrive":
      start = snapshot.pop(ev.worker)
      if ev.round not in bad:
        g = start - sgd_round(start, h, config.quadratic.worker_lr, ev.H)
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


def test_nonfinite_codes_name_loss_and_pseudo_gradient():
  nan = jnp.float32(jnp.nan)
  ok = {"x": jnp.ones(3)}
  bad = {"x": jnp.asarray([1.0, jnp.inf, 0.0])}
  codes = nonfinite.nonfinite_codes([ok, ok, bad, bad], [1.0, nan, 1.0, nan])
  assert [int(c) for c in codes] == [0, 1, 2, 3]
  assert int(nonfinite.combine_codes(codes[:2])) == 1 and int(nonfinite.combine_codes(codes)) == 3
  assert [nonfinite.describe(c) for c in (1, 2, 3)] == [
      "loss", "pseudo-gradient", "loss and pseudo-gradient"]


@pytest.mark.parametrize("algorithm,reference", [("async_local_sgd", numpy_async_skipping),
                                                  ("halos", numpy_halos_skipping)])
def test_skip_drops_exactly_the_poisoned_updates(algorithm, reference, tiny_env, tmp_path):
  poison = {10, 57, 101}
  config = _config(algorithm, tiny_env, nonfinite="skip")
  schedule = _schedule(config)
  bad = _bad_rounds(schedule, poison)
  arrived = {e.round for e in schedule.events if e.kind == "arrive"}
  want_skips = len(bad & arrived)
  assert want_skips == 3  # three different rounds, all of which arrive before the stop
  summary = train.train_and_evaluate(config, str(tmp_path),
                                     problem=poisoned_quadratic(config, poison))
  assert summary["skipped_updates"] == want_skips
  updates = [m for m in _metrics(str(tmp_path)) if m["kind"] == "update"]
  assert sum(m["skipped"] for m in updates) == want_skips
  assert all(np.isfinite(m["train_loss"]) for m in updates if m["train_loss"] is not None)
  got = _final_x(str(tmp_path))
  assert np.all(np.isfinite(got))
  np.testing.assert_allclose(got, reference(schedule, config, bad), rtol=1e-4, atol=1e-5)
  # Dropping nothing would be a different run (the test can tell).
  assert not np.allclose(got, reference(schedule, config, set()), rtol=1e-4, atol=1e-5)


def test_skip_in_a_synchronous_algorithm_skips_the_whole_sync(tiny_env, tmp_path):
  """DiLoCo with AdamW workers: the poisoned round's sync is skipped, and the worker's AdamW
  state is the one from before that round (else its later rounds would be NaN too)."""
  poison = {10}
  config = _config("diloco", tiny_env, nonfinite="skip")
  schedule = _schedule(config)
  bad = _bad_rounds(schedule, poison)
  syncs = [e for e in schedule.events if e.kind == "sync" and set(e.rounds) & bad]
  assert len(syncs) == 1
  problem = poisoned_quadratic(config, poison)._replace(worker_optimizer=optim.worker_adamw())
  final = {}

  def keep(ev, tree, rules):
    final["worker_opt"] = tree["workers"]["opt"]  # stacked over the worker slots

  summary = train.train_and_evaluate(config, str(tmp_path), problem=problem, on_event=keep)
  assert summary["skipped_updates"] == 1
  assert np.all(np.isfinite(_final_x(str(tmp_path))))
  leaves = jax.tree.leaves(final["worker_opt"])
  assert leaves and all(np.all(np.isfinite(np.asarray(x))) for x in leaves)


def test_skip_is_deterministic_and_resumable_bitwise(tiny_env, tmp_path):
  """HALoS: sequential = parallel replay; an interruption right after a skipped LPS update
  (its check and the round losses are not in any update record yet: the checkpoint carries
  them) resumes to the same bits, metrics and skip count."""
  poison = {10, 57, 101}
  config = _config("halos", tiny_env, nonfinite="skip")  # only the interruption saves
  problem = poisoned_quadratic(config, poison)
  ref = train.train_and_evaluate(config, str(tmp_path / "ref"), problem=problem)
  assert ref["skipped_updates"] == 3
  seq_config = _config("halos", tiny_env, nonfinite="skip", **{"replay.parallel": False})
  seq = train.train_and_evaluate(seq_config, str(tmp_path / "seq"), problem=problem)
  assert seq["params_sha256"] == ref["params_sha256"]

  schedule = _schedule(config)
  first_bad = min(_bad_rounds(schedule, poison))
  at = next(e.seq for e in schedule.events if e.kind == "arrive" and e.round == first_bad)
  assert schedule.events[at].counted_steps < 0  # an LPS update: no update record yet

  def interrupt(ev, tree, rules):
    if ev.seq == at:
      interrupts.request_interrupt(signal.SIGTERM)

  workdir = str(tmp_path / "run")
  with pytest.raises(interrupts.Interrupted) as info:
    train.train_and_evaluate(config, workdir, problem=problem, on_event=interrupt)
  assert info.value.cursor == at + 1 and info.value.signum == signal.SIGTERM
  assert "re-run the same command to resume" in str(info.value)
  assert max(_steps(workdir)) == at + 1
  meta = json.load(open(os.path.join(workdir, "checkpoints", str(at + 1), "meta", "metadata")))
  assert meta["pending_losses"] and meta["pending_skips"][-1][0] == 3  # NaN loss and delta
  got = train.train_and_evaluate(config, workdir, problem=problem)
  assert got["params_sha256"] == ref["params_sha256"]
  assert got["skipped_updates"] == 3
  assert _metrics(workdir) == _metrics(str(tmp_path / "ref"))


@pytest.mark.parametrize("gradient", [False, True])
def test_stop_keeps_the_last_good_checkpoint(gradient, tiny_env, tmp_path):
  poison = {37}
  config = _config("async_local_sgd", tiny_env, checkpoint_every=1, checkpoint_keep=3)
  schedule = _schedule(config)
  events = schedule.events
  (bad,) = _bad_rounds(schedule, poison)
  start = next(i for i, e in enumerate(events) if e.kind == "start" and e.round == bad)
  arrival = next(i for i, e in enumerate(events) if e.kind == "arrive" and e.round == bad)
  # Parallel replay computes every dispatched round at the first arrival of a round not yet
  # computed; the stop happens there, before that event's checkpoint: the newest one is the
  # counting event before it.
  status = {}
  for computed, e in enumerate(events):  # noqa: B007 (the index at the break is used below)
    if e.kind == "start":
      status[e.worker] = ("pending", e.round)
    elif e.kind == "arrive" and status[e.worker][0] == "pending":
      if ("pending", bad) in status.values():
        break
      status = {w: ("computed", r) for w, (_, r) in status.items()}
  last_good = 1 + max(i for i in range(computed) if events[i].counted_steps >= 0)

  workdir = str(tmp_path / "run")
  problem = poisoned_quadratic(config, poison, gradient=gradient)
  with pytest.raises(nonfinite.NonFiniteError) as info:
    train.train_and_evaluate(config, workdir, problem=problem)
  message = str(info.value)
  what = "loss and pseudo-gradient" if gradient else "loss"
  worker = events[start].worker
  assert f"non-finite {what} in round {bad} of worker {worker}" in message
  assert f"arriving at event {arrival} (simulated time {events[arrival].t / 1e3:.3f} s)" in message
  assert f"checkpoints/{last_good}" in message and "\n" not in message
  assert max(_steps(workdir)) == last_good
  assert not os.path.exists(os.path.join(workdir, "summary.json"))
  # The kept checkpoint restores and is finite: the same config with the poison lifted resumes
  # from it and ends at the clean run's bits.
  config.checkpoint_every = 0  # resumable: same run identity, fewer saves
  clean = train.train_and_evaluate(config, str(tmp_path / "clean"))
  lifted = problem._replace(loss=quadratic_problem(8).loss)
  got = train.train_and_evaluate(config, workdir, problem=lifted)
  assert got["params_sha256"] == clean["params_sha256"]


def test_diverging_run_stops_with_one_error_line(tiny_env, tmp_path):
  """The command line: a worker learning rate that makes SGD diverge -> exit 2, one line."""
  cmd = [sys.executable, "-m", "experiments.train", "--config=configs/async_local_sgd.py:quadratic",
         f"--workdir={tmp_path}", f"--config.env={tiny_env}", "--config.replay.progress=False",
         "--config.replay.plots=False", "--config.total_local_steps=400", "--config.H=4",
         "--config.quadratic.worker_lr=50", "--config.checkpoint_every=1",
         "--config.checkpoint_every_s=0"]
  proc = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, timeout=300)
  assert proc.returncode == 2, proc.stderr[-2000:]
  lines = [l for l in proc.stderr.splitlines() if l.strip()]
  assert len(lines) == 1 and lines[0].startswith("error: non-finite "), proc.stderr[-2000:]
  assert "Traceback" not in proc.stderr
