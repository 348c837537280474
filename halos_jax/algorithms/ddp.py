"""Synchronous data parallel: one global AdamW step per round, H = 1.

Every step all W workers compute a gradient on their share (local_batch sequences each) of the
global batch, the gradients are all-reduced and averaged, and the server applies one worker-AdamW
step (docs/algorithms.md 2.3):
    step time = step_time_ms / min_w s_w + all-reduce time.
The events are DiLoCo's with H = 1 (`start`, `arrive`, `sync` per step); the "result" of a
round is a gradient, which the server averages at the sync.
"""
from __future__ import annotations

from halos_jax.algorithms import base
from halos_jax.schedule import events as ev
from halos_jax.schedule import plan as plan_lib
from halos_jax.schedule import synchronous
from halos_jax.schedule.environment import Environment
from halos_jax.schedule.settings import ScheduleSettings

SYNCHRONOUS = True
REQUIRED_SETTINGS = ()
CONFIG_BLOCKS = {}  # the server runs the workers' AdamW (config.worker)
EVALUATED_MODEL = "the server model"
LABELS = {"server_updates": "rounds", "server": "server"}
PAPER_SPEEDUP = "synchronous: up to 7.5x"
COMPARISON_REFERENCE = False
SUPPORTS_FAILURES = True  # schedule/synchronous.py: policies wait and quorum


def local_H(settings: ScheduleSettings) -> int:
  """1: a round is one step (settings.H is ignored)."""
  del settings
  return 1


def rescale(settings: ScheduleSettings) -> bool:
  """Never (rescale_local_steps is ignored)."""
  del settings
  return False


def make_plan(env: Environment, settings: ScheduleSettings) -> plan_lib.Plan:
  return plan_lib.synchronous_plan(env, settings)


def build(env: Environment, settings: ScheduleSettings) -> ev.Schedule:
  """The DDP schedule of (env, settings); settings.H and rescale_local_steps are ignored."""
  return synchronous.build(env, settings, make_plan(env, settings))


class DataParallelRules(base.Synchronous):
  """Averaged gradients, one worker-AdamW step at the server per round."""
  gradient_rounds = True

  def __init__(self, config, problem, num_workers, num_servers):
    super().__init__(config, problem, num_workers, num_servers)
    import jax  # pylint: disable=g-import-not-at-top
    import optax  # pylint: disable=g-import-not-at-top
    from halos_jax.replay import server_ops  # pylint: disable=g-import-not-at-top
    self.opt = problem.worker_optimizer
    lr_fn = problem.learning_rate

    @jax.jit
    def step(params, state, g, counter):
      updates, state = self.opt.update(g, state, params, learning_rate=lr_fn(counter))
      return optax.apply_updates(params, updates), state
    self._step = step
    self._mean = server_ops.mean
    self._asarray = jax.numpy.asarray

  def init(self, x0):
    return {"params": x0, "opt": self.opt.init(x0)}

  def on_sync(self, servers, ev, results, specs):  # pylint: disable=redefined-outer-name
    # The step uses the learning rate of schedule position lr_offset + 1 (docs/algorithms.md
    # 2.1).
    counter = self._asarray(specs[0].lr_offset + 1)
    params, opt = self._step(
        servers["params"], servers["opt"], self._mean([r.delta for r in results]), counter)
    return {"params": params, "opt": opt}


def server_rules(config, problem, num_workers: int, num_servers: int) -> base.ServerRules:
  return DataParallelRules(config, problem, num_workers, num_servers)
