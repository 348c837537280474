"""What every algorithm module's server rules share: the `ServerRules` interface.

Server rules are what an algorithm's servers do at each schedule event; the numerics live in
`halos_jax.optim`, the rules only wire them to events. The replay engine calls `on_<event
kind>` for every server-side event and never branches on the algorithm.

Server state is a pytree of FIXED structure (slots, not dicts that grow), so a checkpoint can be
restored onto a template built from the initial parameters.

This module imports no JAX (the scheduler imports the algorithm modules); the rules' JAX pieces
come from `halos_jax.replay.server_ops`, imported when rules are built.
"""
from __future__ import annotations

from typing import Any

Params = Any
Servers = dict


# The `local_H` and `rescale` of most algorithms: H and DynUpd as configured.
def configured_H(settings) -> int:
  """H as the settings give it."""
  return settings.H


def configured_rescale(settings) -> bool:
  """DynUpd when the settings ask for it (`rescale_local_steps`)."""
  return settings.rescale_local_steps


class ServerRules:
  """Base class. Subclasses implement the events their schedules contain."""
  gradient_rounds = False  # True: worker rounds return gradients (ddp)
  params_rounds = False  # True: worker rounds return the worker's model (streaming_diloco)
  global_region = None  # the region of a global server above the others (HALoS's GPS)

  def __init__(self, config, problem, num_workers: int, num_servers: int):
    self.config = config
    self.problem = problem
    self.num_workers = num_workers
    self.num_servers = num_servers
    self.layout = None  # set by `place`: where the servers live (halos_jax/replay/layout.py)

  def init(self, x0: Params) -> Servers:
    raise NotImplementedError

  def place(self, servers: Servers, layout) -> Servers:
    """`servers` on their devices (each in its region, `layout`); remembers the layout.

    By default the whole state is one server's, on the device of server 0.
    """
    self.layout = layout
    return layout.to(servers, layout.server_device(0))

  def to_server(self, tree: Params, server: int) -> Params:
    """A message arriving at server `server`: `tree` copied to its device."""
    return tree if self.layout is None else self.layout.to(tree, self.layout.server_device(server))

  def to_global(self, tree: Params) -> Params:
    """A message arriving at the global server: `tree` copied to its device."""
    return tree if self.layout is None else self.layout.to(tree, self.layout.global_device())

  def model(self, servers: Servers, server: int) -> Params:
    """The model a worker of `server` starts from (a `start` event's snapshot)."""
    raise NotImplementedError

  def start_model(self, servers: Servers, ev) -> Params:
    """The model worker `ev.worker` starts a round from (a `start` event): by default its
    server's model (`model`)."""
    return self.model(servers, ev.server)

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


class Fragmented:
  """Mixin of rules whose exchanges carry one of `self.fragments` fragments of the model
  (halos_jax/fragments.py): the fragments' boolean masks, built once from the first params."""
  fragments = 1
  _masks = None

  def masks(self, params) -> list:
    """One boolean tree per fragment, broadcastable against `params`."""
    if self._masks is None:
      from halos_jax import fragments  # pylint: disable=g-import-not-at-top  (imports JAX)
      self._masks = fragments.fragment_masks(params, self.fragments)
    return self._masks


class SingleServer(ServerRules):
  """One server holding `params` (and its optimizer state `opt`): the model every worker
  starts from and the evaluated model."""

  def model(self, servers, server):
    return servers["params"]

  def evaluated(self, servers):
    return servers["params"]


class Synchronous(SingleServer):
  """Rounds end with a `sync`: the server averages its workers' results (docs/algorithms.md
  2.3, 2.4)."""

  def on_arrive(self, servers, ev, result):
    return servers  # the update happens at the round's sync
