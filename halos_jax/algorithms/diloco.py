"""DiLoCo: synchronous rounds of H local steps, one Nesterov outer step per round.

Every round all W workers start from the server model, run H local steps, and the round ends
with a ring all-reduce of the pseudo-gradients; the server applies the outer optimizer
(Nesterov SGD) to their mean (docs/algorithms.md 2.4). Timing and events:
halos_jax/schedule/synchronous.py.

References:
  Douillard et al., "DiLoCo: Distributed Low-Communication Training of Language Models", 2023
  (arXiv 2311.08105).
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
CONFIG_BLOCKS = {"outer": "outer_nesterov"}  # the outer optimizer (configs/diloco.py)
EVALUATED_MODEL = "the server model"
LABELS = {"server_updates": "rounds", "server": "server"}
PAPER_SPEEDUP = 7.5  # the paper: HALoS up to 7.5x faster than synchronous DiLoCo
COMPARISON_REFERENCE = False
SUPPORTS_FAILURES = True  # schedule/synchronous.py: policies wait and quorum


local_H = base.configured_H
rescale = base.configured_rescale  # DynUpd only when asked for; diloco_dynupd forces it


def make_plan(env: Environment, settings: ScheduleSettings) -> plan_lib.Plan:
  return plan_lib.synchronous_plan(env, settings)


def build(env: Environment, settings: ScheduleSettings) -> ev.Schedule:
  """DiLoCo (H for every worker) or, with rescale_local_steps, H_w."""
  return synchronous.build(env, settings, make_plan(env, settings))


class DiLoCoRules(base.Synchronous):
  """Nesterov outer SGD on the mean pseudo-gradient of each round."""

  def __init__(self, config, problem, num_workers, num_servers):
    super().__init__(config, problem, num_workers, num_servers)
    from halos_jax import optim  # pylint: disable=g-import-not-at-top
    from halos_jax.replay import server_ops  # pylint: disable=g-import-not-at-top
    self.opt = optim.diloco_outer(config.outer.lr, config.outer.momentum)
    self._step = server_ops.jit_apply(self.opt)
    self._mean = server_ops.mean

  def init(self, x0):
    return {"params": x0, "opt": self.opt.init(x0)}

  def on_sync(self, servers, ev, results, specs):  # pylint: disable=redefined-outer-name
    g = self._mean([r.delta for r in results])
    params, opt = self._step(servers["params"], servers["opt"], g)
    return {"params": params, "opt": opt}


def server_rules(config, problem, num_workers: int, num_servers: int) -> base.ServerRules:
  return DiLoCoRules(config, problem, num_workers, num_servers)
