"""Server rules: what each algorithm's servers do at each schedule event.

The numerics live in `halos_jax.optim` (DN, the DiLoCo outer step, LPS/GPS state machines); this
module only wires them to events. Each algorithm is one class registered under its name; the
replay engine calls `on_<event kind>` for every server-side event and never branches on the
algorithm itself, so a new algorithm is a new class here (or in its own module) plus a schedule
builder and a config.

Server state is a pytree of FIXED structure (slots, not dicts that grow), so a checkpoint can be
restored onto a template built from the initial parameters.
"""
from __future__ import annotations

from typing import Any, Callable

import jax
import jax.numpy as jnp
import optax

from halos_jax import optim

Params = Any
Servers = dict

_RULES: dict[str, Callable[..., "ServerRules"]] = {}


def register(name: str):
  """Class decorator: makes `rules_for(config)` find these rules under `name`."""
  def deco(cls):
    _RULES[name] = cls
    return cls
  return deco


def rules_for(config, problem, num_workers: int, num_servers: int) -> "ServerRules":
  if config.algorithm not in _RULES:
    raise ValueError(f"algorithm must be one of {sorted(_RULES)}, got {config.algorithm!r}")
  return _RULES[config.algorithm](config, problem, num_workers, num_servers)


class ServerRules:
  """Base class. Subclasses implement the events their schedules contain."""
  gradient_rounds = False  # True: worker rounds return gradients (ddp)

  def __init__(self, config, problem, num_workers: int, num_servers: int):
    self.config = config
    self.problem = problem
    self.num_workers = num_workers
    self.num_servers = num_servers

  def init(self, x0: Params) -> Servers:
    raise NotImplementedError

  def model(self, servers: Servers, server: int) -> Params:
    """The model a worker of `server` starts from (a `start` event's snapshot)."""
    raise NotImplementedError

  def evaluated(self, servers: Servers) -> Params:
    """The model that validation and `params_sha256` report."""
    raise NotImplementedError

  def check(self, servers: Servers, ev) -> None:
    """Optional check of the numerics against the schedule after `ev` (may sync the host)."""

  def skipped(self, before: Servers, after: Servers, ev) -> Servers:
    """The servers after `ev` (an arrive or sync) when its update is skipped because a round
    result is not finite (config `nonfinite='skip'`); `after` is the updated state.

    By default the servers stay as they were. Rules whose schedule bookkeeping counts every
    arrival keep those counters from `after` (HALoS).
    """
    del after, ev
    return before


@jax.jit
def _mean(trees):
  return optim.mean_pseudo_gradient(trees)


def _apply(opt):
  """jit(params, opt_state, g) -> (params, opt_state) for a server transform."""
  @jax.jit
  def step(params, state, g):
    updates, state = opt.update(g, state, params)
    return optax.apply_updates(params, updates), state
  return step


# ------------------------------------------------------------------------------------------------


@register("async_local_sgd")
class AsyncLocalSGD(ServerRules):
  """One parameter server applying DN to each pseudo-gradient on arrival (HALOS.md 2.5)."""

  def __init__(self, config, problem, num_workers, num_servers):
    super().__init__(config, problem, num_workers, num_servers)
    ps = config.ps
    self.opt = optim.delayed_nesterov_from_base_lr(ps.eta, ps.beta, ps.N, c=ps.c)
    self._step = _apply(self.opt)

  def init(self, x0):
    return {"params": x0, "opt": self.opt.init(x0)}

  def model(self, servers, server):
    return servers["params"]

  def evaluated(self, servers):
    return servers["params"]

  def on_arrive(self, servers, ev, result):
    params, opt = self._step(servers["params"], servers["opt"], result.delta)
    return {"params": params, "opt": opt}


class _Synchronous(ServerRules):
  """Rounds end with a `sync`: the server averages its workers' results (HALOS.md 2.3, 2.4)."""

  def model(self, servers, server):
    return servers["params"]

  def evaluated(self, servers):
    return servers["params"]

  def on_arrive(self, servers, ev, result):
    return servers  # the update happens at the round's sync


@register("diloco")
class DiLoCo(_Synchronous):
  """Nesterov outer SGD on the mean pseudo-gradient of each round."""

  def __init__(self, config, problem, num_workers, num_servers):
    super().__init__(config, problem, num_workers, num_servers)
    self.opt = optim.diloco_outer(config.outer.lr, config.outer.momentum)
    self._step = _apply(self.opt)

  def init(self, x0):
    return {"params": x0, "opt": self.opt.init(x0)}

  def on_sync(self, servers, ev, results, specs):
    params, opt = self._step(servers["params"], servers["opt"], _mean([r.delta for r in results]))
    return {"params": params, "opt": opt}


register("diloco_dynupd")(DiLoCo)


@register("ddp")
class DataParallel(_Synchronous):
  """Averaged gradients, one worker-AdamW step at the server per round (HALOS.md 2.3)."""
  gradient_rounds = True

  def __init__(self, config, problem, num_workers, num_servers):
    super().__init__(config, problem, num_workers, num_servers)
    self.opt = problem.worker_optimizer
    lr_fn = problem.learning_rate

    @jax.jit
    def step(params, state, g, counter):
      updates, state = self.opt.update(g, state, params, learning_rate=lr_fn(counter))
      return optax.apply_updates(params, updates), state
    self._step = step

  def init(self, x0):
    return {"params": x0, "opt": self.opt.init(x0)}

  def on_sync(self, servers, ev, results, specs):
    counter = jnp.asarray(specs[0].lr_offset + 1)  # HALOS.md 2.1: the step uses offset + 1
    params, opt = self._step(
        servers["params"], servers["opt"], _mean([r.delta for r in results]), counter)
    return {"params": params, "opt": opt}


@register("halos")
class HALoS(ServerRules):
  """LPS per group of workers, GPS in region 0 (HALOS.md 2.6)."""

  def __init__(self, config, problem, num_workers, num_servers):
    super().__init__(config, problem, num_workers, num_servers)
    self.lps_opt = optim.delayed_nesterov_from_base_lr(
        config.lps.eta, config.lps.beta, config.lps.N, c=config.lps.c)
    self.gps_opt = optim.delayed_nesterov_from_base_lr(
        config.gps.eta, config.gps.beta, config.gps.N, c=config.gps.c)
    K, alpha = int(config.K), float(config.alpha)

    @jax.jit
    def receive(lps, g, steps):
      return optim.lps_receive(lps, g, steps, optimizer=self.lps_opt, K=K)[0]

    @jax.jit
    def gps_apply(gps, delta, steps):
      return optim.gps_apply(gps, delta, steps, optimizer=self.gps_opt)

    @jax.jit
    def merge(lps, global_params):
      return optim.lps_merge(lps, global_params, alpha)

    @jax.jit
    def delta(lps):
      return jax.tree.map(lambda a, b: (a - b).astype(a.dtype), lps.merge_params, lps.params)

    self._receive, self._gps_apply, self._merge, self._delta = receive, gps_apply, merge, delta

  def init(self, x0):
    return {
        "lps": [optim.lps_init(x0, self.lps_opt) for _ in range(self.num_servers)],
        "gps": optim.gps_init(x0, self.gps_opt),
        # One exchange in flight per LPS at most (equality trigger): its Delta, then the
        # global model travelling back.
        "outbox": [x0 for _ in range(self.num_servers)],
    }

  def model(self, servers, server):
    return servers["lps"][server].params

  def evaluated(self, servers):
    return servers["gps"].params

  def _set(self, servers, key, index, value):
    items = list(servers[key])
    items[index] = value
    return {**servers, key: items}

  def on_arrive(self, servers, ev, result):
    lps = self._receive(servers["lps"][ev.server], result.delta, jnp.int32(ev.H))
    return self._set(servers, "lps", ev.server, lps)

  def skipped(self, before, after, ev):
    # The LPS keeps its model and optimizer state; its version and pending steps follow the
    # schedule (the send after K arrivals, the local steps reported to the GPS).
    new = after["lps"][ev.server]
    lps = before["lps"][ev.server]._replace(version=new.version, pending_steps=new.pending_steps)
    return self._set(before, "lps", ev.server, lps)

  def on_send(self, servers, ev):
    return self._set(servers, "outbox", ev.server, self._delta(servers["lps"][ev.server]))

  def on_gps_apply(self, servers, ev):
    gps = self._gps_apply(servers["gps"], servers["outbox"][ev.server], jnp.int32(ev.steps))
    servers = {**servers, "gps": gps}
    return self._set(servers, "outbox", ev.server, gps.params)  # a copy leaves for the LPS

  def on_merge(self, servers, ev):
    lps = self._merge(servers["lps"][ev.server], servers["outbox"][ev.server])
    return self._set(servers, "lps", ev.server, lps)

  def check(self, servers, ev):
    """Cross-checks the LPS/GPS counters of the numerics with the schedule at each exchange."""
    if ev.kind == "send":
      lps = servers["lps"][ev.server]
      got = (int(lps.version), int(lps.merge_version))
      if got != (ev.version, ev.base_version):
        raise AssertionError(f"LPS {ev.server} at send: (v, vhat) = {got}, schedule says "
                             f"{(ev.version, ev.base_version)}")
    elif ev.kind == "gps_apply":
      gps = servers["gps"]
      if int(gps.version) != ev.version or int(gps.steps) != ev.counted_steps:
        raise AssertionError(
            f"GPS after apply: version {int(gps.version)}, steps {int(gps.steps)}; schedule "
            f"says {ev.version}, {ev.counted_steps}")
