"""Simulator-level reductions of docs/algorithms.md 2.6, through the whole replay."""
import jax
import jax.numpy as jnp
import numpy as np
import optax

from halos_jax import config_lib, optim, train
from halos_jax import schedule as schedule_lib
from halos_jax.replay.problem import make_problem
from tiny_configs import tiny_config

ONE_REGION = """\
num_regions: 1
network_bandwidths:
  - [100.0]
worker_speeds:
  - [1.0, 0.7, 0.45]
"""


def _trajectory(config, workdir, kind_filter):
  """Runs the replay, recording the server model after every event of kind `kind_filter`."""
  seen = []

  def hook(ev, tree, rules):
    if ev.kind == kind_filter:
      seen.append(jax.device_get(rules.model(tree["servers"], ev.server)))

  train.train_and_evaluate(config, workdir, on_event=hook)
  return seen


def test_one_lps_alpha0_equals_async_local_sgd(tmp_path):
  """One LPS holding every worker of a one-region environment, alpha = 0, LPS optimizer = the
  PS optimizer: the LPS model after each arrival equals the async PS model, update by update.
  The arithmetic is identical (same rounds, same DN on the same inputs): compared exactly."""
  env = tmp_path / "one.yaml"
  env.write_text(ONE_REGION)
  dn = {"eta": 0.05, "beta": 0.9, "N": 4, "c": 0.0}
  common = dict(problem="quadratic", total_local_steps=120, workers_per_lps=3)
  halos = tiny_config("halos", str(env), alpha=0.0, K=3, **common,
                      **{f"lps.{k}": v for k, v in dn.items()})
  asyn = tiny_config("async_local_sgd", str(env), **common,
                     **{f"ps.{k}": v for k, v in dn.items()})
  a = _trajectory(halos, str(tmp_path / "h"), "arrive")
  b = _trajectory(asyn, str(tmp_path / "a"), "arrive")
  n = min(len(a), len(b))
  assert n >= 20
  for i in range(n):
    np.testing.assert_array_equal(a[i]["x"], b[i]["x"], err_msg=f"update {i}")


def test_diloco_h1_sgd_equals_minibatch_sgd(tiny_env, tmp_path):
  """DiLoCo with H = 1, plain-SGD workers and outer SGD(lr 1) is minibatch SGD on the union of
  the workers' batches. Float32: the pseudo-gradient x - (x - lr g) rounds lr g, so 1e-5."""
  lr = 0.05
  config = tiny_config("diloco", tiny_env, H=1, total_local_steps=16,
                       **{"outer.lr": 1.0, "outer.momentum": 0.0})
  problem = make_problem(config_lib.resolve(config))
  problem = problem._replace(worker_optimizer=optim.worker_sgd(),
                             learning_rate=optax.constant_schedule(lr))
  train.train_and_evaluate(config, str(tmp_path), problem=problem)
  import orbax.checkpoint as ocp
  with ocp.StandardCheckpointer() as ck:
    got = ck.restore(str(tmp_path / "final_model"))

  schedule = schedule_lib.schedule_from_config(config_lib.resolve(config))
  grad = jax.jit(jax.grad(problem.loss))
  x = problem.init_params()
  starts = []
  for ev in schedule.events:
    if ev.kind == "start":
      starts.append(ev)
    elif ev.kind == "sync":
      grads = [grad(x, jnp.asarray(problem.data.block(s.data_start, s.data_end))) for s in starts]
      mean = jax.tree.map(lambda *g: sum(g) / len(g), *grads)
      x = jax.tree.map(lambda p, g: p - lr * g, x, mean)
      starts = []
  for (path, want), have in zip(jax.tree_util.tree_flatten_with_path(x)[0],
                                jax.tree.leaves(got)):
    np.testing.assert_allclose(np.asarray(have), np.asarray(want), rtol=1e-5, atol=1e-5,
                               err_msg=jax.tree_util.keystr(path))
