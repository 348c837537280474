"""Streaming HALoS: HALoS whose LPS <-> GPS exchanges stream the model in P fragments.

The hierarchical form of Streaming DiLoCo (halos_jax/algorithms/streaming_diloco.py): workers
and LPS run exactly as in HALoS (halos.py), but an exchange carries one fragment of the model
(strided layers, halos_jax/fragments.py) instead of all of it. LPS l sends every K / P
updates counted from its last merge (still at most one exchange in flight), its fragments in
turn (exchange n of LPS l carries fragment n mod P), so each fragment travels about every K
updates as in HALoS, with 1/P of the bytes per message:

    send (fragment p):   Delta_p = xhat_{l,p} - x_{l,p}   (xhat_{l,p}: x_{l,p} after the last
                                                           merge of fragment p)
    GPS:                 x_{G,p} = DN_{g,p}(x_{G,p}, Delta_p)   one DN_g state per fragment;
                         counts the local steps the Delta reports
    merge (fragment p):  x_{l,p} = (1 - alpha) x_{l,p} + alpha x_{G,p};  xhat_{l,p} = x_{l,p};
                         vhat_l = v_l

The LPS never waits for the GPS, so the exchange already overlaps the workers' compute: there is
no tau here. With P = 1 it is HALoS exactly (tests/algorithms/streaming_halos_test.py).
docs/algorithms.md 2.8.

References:
  Kim et al., ICML 2025 (arXiv 2506.04531) for HALoS; Douillard et al., 2025 (arXiv 2501.18512)
  for streaming fragments.
"""
from __future__ import annotations

import numpy as np

from halos_jax.algorithms import base
from halos_jax.algorithms import halos
from halos_jax.schedule import events as ev
from halos_jax.schedule import plan as plan_lib
from halos_jax.schedule.environment import Environment
from halos_jax.schedule.settings import InvalidSettings, ScheduleSettings

SYNCHRONOUS = False
REQUIRED_SETTINGS = ("K", "workers_per_lps", "fragments")
CONFIG_BLOCKS = halos.CONFIG_BLOCKS
EVALUATED_MODEL = halos.EVALUATED_MODEL
LABELS = {"server_updates": "GPS fragment updates", "server": "LPS"}
PAPER_SPEEDUP = None  # not in the HALoS paper
COMPARISON_REFERENCE = False

local_H = base.configured_H
rescale = base.configured_rescale


def make_plan(env: Environment, settings: ScheduleSettings) -> plan_lib.Plan:
  """HALoS's plan; K must be a multiple of P."""
  p = settings.fragments
  if settings.K % p:
    raise InvalidSettings(f"fragments={p} must divide K={settings.K} (an LPS sends one fragment "
                          f"every K / fragments updates)", field="fragments")
  if settings.fragment_bytes is not None and len(settings.fragment_bytes) != p:
    raise InvalidSettings(f"fragment_bytes has {len(settings.fragment_bytes)} sizes for "
                          f"fragments={p}", field="fragment_bytes")
  return halos.make_plan(env, settings)


def build(env: Environment, settings: ScheduleSettings) -> ev.Schedule:
  """The streaming HALoS schedule: HALoS's event loops with an exchange every K / P updates."""
  return halos.build_from_plan(env, settings, make_plan(env, settings))


def fragment_sizes(settings: ScheduleSettings) -> list[int]:
  """Bytes of each fragment's Delta (halos.exchange_sizes)."""
  return halos.exchange_sizes(settings)[0]


def exchange_bytes(schedule, kind: int) -> np.ndarray:
  """Bytes of each `gps_apply` (the Delta) or `merge` (the global model) event, in order."""
  delta, glob = halos.exchange_sizes(schedule.settings)
  c = schedule.columns
  f = c["fragment"][c["kind"] == kind]
  return np.asarray(delta if kind == ev.GPS_APPLY else glob, dtype=np.float64)[f]


class StreamingHALoSRules(base.Fragmented, halos.HALoSRules):
  """HALoS's servers, each exchange restricted to its fragment (one DN_g state per fragment)."""

  def __init__(self, config, problem, num_workers, num_servers):
    super().__init__(config, problem, num_workers, num_servers)
    import jax  # pylint: disable=g-import-not-at-top
    import jax.numpy as jnp  # pylint: disable=g-import-not-at-top
    from halos_jax import optim  # pylint: disable=g-import-not-at-top
    if self.codec is not None:
      raise ValueError("exchange.global_codec: streaming_halos does not take an LPS -> GPS codec "
                       "yet; use 'none'")
    self.fragments = int(config.fragments)
    K = int(config.K) // self.fragments  # pylint: disable=invalid-name
    lps_opt, gps_opt = self.lps_opt, self.gps_opt

    @jax.jit
    def receive(lps, g, steps):  # a send is due every K / P updates
      return optim.lps_receive(lps, g, steps, optimizer=lps_opt, K=K)[0]

    @jax.jit
    def delta(lps, mask):
      d = optim.lps_delta(lps)
      return jax.tree.map(lambda m, x: jnp.where(m, x, jnp.zeros_like(x)), mask, d)

    @jax.jit
    def gps_apply(gps, delta, steps, opt_state, mask):
      new = optim.gps_apply(gps._replace(opt_state=opt_state), delta, steps, optimizer=gps_opt)
      return new._replace(params=jax.tree.map(jnp.where, mask, new.params, gps.params),
                          opt_state=gps.opt_state), new.opt_state

    @jax.jit
    def merge(merged, lps, mask):  # the merged state where `mask`, the LPS's elsewhere
      pick = lambda a, b: jax.tree.map(jnp.where, mask, a, b)  # noqa: E731
      return merged._replace(params=pick(merged.params, lps.params),
                             merge_params=pick(merged.params, lps.merge_params))

    self._receive, self._fdelta, self._fgps_apply, self._fmerge = receive, delta, gps_apply, merge

  def init(self, x0):
    servers = super().init(x0)
    self.masks(x0)
    gps = servers["gps"]  # one DN_g state per fragment
    servers["gps"] = gps._replace(opt_state=[gps.opt_state] + [
        self.gps_opt.init(x0) for _ in range(self.fragments - 1)])
    return servers

  def on_send(self, servers, ev):  # pylint: disable=redefined-outer-name
    lps = servers["lps"][ev.server]
    mask = self.masks(lps.params)[ev.fragment]
    return self._set(servers, "outbox", ev.server, self._fdelta(lps, mask))

  def on_gps_apply(self, servers, ev):  # pylint: disable=redefined-outer-name
    delta = self.to_global(servers["outbox"][ev.server])
    gps = servers["gps"]
    states = list(gps.opt_state)
    gps, states[ev.fragment] = self._fgps_apply(
        gps, delta, np.int32(ev.steps), states[ev.fragment],
        self.masks(gps.params)[ev.fragment])
    servers = {**servers, "gps": gps._replace(opt_state=states)}
    return self._set(servers, "outbox", ev.server, self.to_server(gps.params, ev.server))

  def on_merge(self, servers, ev):  # pylint: disable=redefined-outer-name
    lps = servers["lps"][ev.server]
    # HALoS's merge (its own program: fused with the selection, XLA may round the blend
    # differently), then only the fragment's entries are kept.
    merged = self._merge(lps, servers["outbox"][ev.server])
    lps = self._fmerge(merged, lps, self.masks(lps.params)[ev.fragment])
    return self._set(servers, "lps", ev.server, lps)


def server_rules(config, problem, num_workers: int, num_servers: int) -> base.ServerRules:
  return StreamingHALoSRules(config, problem, num_workers, num_servers)
