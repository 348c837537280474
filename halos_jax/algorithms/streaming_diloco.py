"""Streaming DiLoCo: DiLoCo whose model is synchronised in P fragments, in turn, overlapped.

Every worker keeps its own model for the whole run. The model is cut into P fragments (strided
layers, `fragment_of`); every S = H / P local steps one fragment, in turn (p = k mod P after
sub-round k), is all-reduced: the server applies the outer optimizer (DiLoCo's Nesterov SGD,
one state per fragment) to that fragment of the global model,

    g_p = mean_w (x_p - y_{w,p}),   x_p <- OuterOpt_p(x_p, g_p),

and, tau local steps later (the all-reduce runs while the workers compute them), every worker
mixes the new fragment into its own model:  y_{w,p} <- (1 - alpha) y_{w,p} + alpha x_p.
With P = 1, tau = 0 and alpha = 1 this is DiLoCo exactly (tests/algorithms/
streaming_diloco_test.py). docs/algorithms.md 2.7 has the rule, the timing and the reference.

Timing (halos_jax/schedule, reference network or latency): all W workers run each segment of
local steps together; a segment of L steps takes max_w step_time_ms * L / s_w. With tau = 0 a
sub-round ends after its S steps and the all-reduce of its fragment (the workers wait, as in
DiLoCo, for 1/P of the bytes). With tau > 0 the all-reduce of fragment p starts when sub-round
k ends and the workers go on for tau steps; the mix happens at
    max(end of the tau steps, end of the all-reduce)
(the workers wait only for the part of the all-reduce that tau steps do not cover), then the
sub-round's remaining S - tau steps follow.

Events per segment: W `start`, W `arrive`, one `sync` (the server records the workers' models
of those rounds; `fragment` >= 0 when the sub-round ends here and that fragment takes its outer
step), and a `merge` (`fragment`: the one the workers mix in) when a mix is due.

References:
  Douillard et al., "Streaming DiLoCo with overlapping communication: Towards a Distributed
  Free Lunch", 2025 (arXiv 2501.18512).
"""
from __future__ import annotations


import numpy as np

from halos_jax import fragments as fragments_lib
from halos_jax import network
from halos_jax.algorithms import base
from halos_jax.schedule import _assemble
from halos_jax.schedule import events as ev
from halos_jax.schedule import plan as plan_lib
from halos_jax.schedule.environment import Environment
from halos_jax.schedule.settings import InvalidSettings, ScheduleSettings

SYNCHRONOUS = True
REQUIRED_SETTINGS = ("fragments", "overlap_steps")
CONFIG_BLOCKS = {"outer": "outer_nesterov"}  # one Nesterov outer optimizer per fragment
EVALUATED_MODEL = "the server's global model (every fragment as of its last outer step)"
LABELS = {"server_updates": "fragment syncs", "server": "server"}
PAPER_SPEEDUP = None  # not in the HALoS paper
COMPARISON_REFERENCE = False

local_H = base.configured_H


def rescale(settings: ScheduleSettings) -> bool:
  """Never: all workers run every segment together (rescale_local_steps is refused)."""
  del settings
  return False


# ------------------------------------------------------------------------------------------------
# Fragments (halos_jax/fragments.py says which entries of the model each one holds)
# ------------------------------------------------------------------------------------------------


def fragment_sizes(settings: ScheduleSettings) -> list[int]:
  """Bytes all-reduced for each fragment: `fragment_bytes`, or the upload split evenly."""
  if settings.fragment_bytes is not None:
    return list(settings.fragment_bytes)
  return fragments_lib.even_split(settings.bytes_of("upload"), settings.fragments)


# ------------------------------------------------------------------------------------------------
# Schedule
# ------------------------------------------------------------------------------------------------


def _check(env: Environment, settings: ScheduleSettings) -> tuple[int, int, int]:
  """(P, tau, S) after checking that they fit H and the environment."""
  p, tau, h = settings.fragments, settings.overlap_steps, settings.H
  if settings.rescale_local_steps:
    raise InvalidSettings("rescale_local_steps=True: streaming_diloco runs every segment on all "
                          "workers together (no DynUpd); set it to False",
                          field="rescale_local_steps")
  if h % p:
    raise InvalidSettings(f"fragments={p} must divide H={h} (a fragment is synchronised every "
                          f"H / fragments local steps)", field="fragments")
  s = h // p
  if not 0 <= tau < s:
    raise InvalidSettings(f"overlap_steps={tau}: must be in [0, H / fragments) = [0, {s})",
                          field="overlap_steps")
  if settings.fragment_bytes is not None and len(settings.fragment_bytes) != p:
    raise InvalidSettings(f"fragment_bytes has {len(settings.fragment_bytes)} sizes for "
                          f"fragments={p}", field="fragment_bytes")
  if env.compute_jitter is not None or hasattr(network.from_environment(env), "transfer_end_ms"):
    raise InvalidSettings("streaming_diloco is timed on fixed bandwidths and speeds: the "
                          "environment's compute_jitter / bandwidth_traces / bandwidth_jitter "
                          "are not supported for it yet", field="algorithm")
  return p, tau, s


def make_plan(env: Environment, settings: ScheduleSettings) -> plan_lib.Plan:
  """DiLoCo's plan for one sub-round of S steps; `allreduce_ms` is the longest fragment's."""
  p, _, s = _check(env, settings)
  net = network.from_environment(env)
  base_plan = plan_lib.synchronous_plan(env, settings, net)
  ar = max(net.allreduce_ms(b, env.num_workers) for b in fragment_sizes(settings))
  compute = np.array([plan_lib.compute_ms(settings.step_time_ms, s, float(v))
                      for v in env.worker_speed], dtype=np.float64)
  return base_plan._replace(compute_ms=compute, round_ms=np.full(env.num_workers,
                                                                 float(compute.max()) + ar),
                            allreduce_ms=ar, uniform_H=0 if p > 1 else base_plan.uniform_H)


def segments(env: Environment, settings: ScheduleSettings) -> list[tuple]:
  """The run as segments of local steps all workers run together (see the module docstring):
  (steps L, start, end = the boundary's time, fragment stepped there or -1, fragment mixed
  there or -1), until the local steps at an outer step reach total_local_steps."""
  p, tau, s = _check(env, settings)
  net = network.from_environment(env)
  w_count = env.num_workers
  ar = [net.allreduce_ms(b, w_count) for b in fragment_sizes(settings)]
  speeds = [float(v) for v in env.worker_speed]

  def compute(steps: int) -> float:
    return max(plan_lib.compute_ms(settings.step_time_ms, steps, v) for v in speeds)

  c_s, c_tau, c_rest = compute(s), compute(tau), compute(s - tau)
  total = settings.total_local_steps
  out, t, counted, k, pending = [], 0.0, 0, 0, None
  while True:
    if pending is not None:  # tau > 0: the first tau steps, then the mix of fragment q
      q, ready = pending
      end = max(t + c_tau, ready)
      out.append((tau, t, end, -1, q))
      counted += w_count * tau
      t, pending = end, None
      steps, c = s - tau, c_rest
    else:
      steps, c = s, c_s
    frag = k % p
    k += 1
    if tau == 0:  # the workers wait for the all-reduce, then mix at once (DiLoCo's round)
      end = t + (c + ar[frag])
      out.append((steps, t, end, frag, frag))
    else:
      end = t + c
      out.append((steps, t, end, frag, -1))
      pending = (frag, end + ar[frag])
    counted += w_count * steps
    t = end
    if counted >= total:
      break
  return out


def build(env: Environment, settings: ScheduleSettings) -> ev.Schedule:
  """The Streaming DiLoCo schedule of (env, settings)."""
  if env.has_failures:  # (build_schedule says so first; a direct call too)
    raise InvalidSettings("algorithm 'streaming_diloco' does not support the environment's "
                          "failures (failures / failure_rate)", field="algorithm")
  plan = make_plan(env, settings)
  segs = segments(env, settings)
  w_count = env.num_workers
  # Per segment: W starts, W arrivals, the sync, and the merge when one is due.
  kinds, idx, frag, seg_of = [], [], [], []
  for j, (_, _, _, outer, mixed) in enumerate(segs):
    kinds += [ev.START] * w_count + [ev.ARRIVE] * w_count + [ev.SYNC]
    idx += list(range(j * w_count, (j + 1) * w_count)) * 2 + [j]
    frag += [-1] * (2 * w_count) + [outer]
    seg_of += [j] * (2 * w_count + 1)
    if mixed >= 0:
      kinds.append(ev.MERGE)
      idx.append(j)
      frag.append(mixed)
      seg_of.append(j)
  n = len(kinds) + 1
  cols = ev.empty_columns(n)
  kind = np.asarray(kinds + [ev.STOP], dtype=np.int8)
  cols["kind"][:] = kind
  idx = np.asarray(idx + [0], dtype=np.int64)
  seg_of = np.asarray(seg_of, dtype=np.int64)
  steps = np.array([x[0] for x in segs], dtype=np.int64)
  t_begin = np.array([x[1] for x in segs])
  t_end = np.array([x[2] for x in segs])
  num_rounds = len(segs) * w_count
  round_worker = np.tile(np.arange(w_count), len(segs))
  round_H = np.repeat(steps, w_count)
  uniform = int(steps[0]) if np.all(steps == steps[0]) else 0
  data_start, data_end, lr_offset = _assemble.data_blocks(
      round_H, settings.local_batch, settings.global_batch, uniform)
  if not uniform:  # every round of a segment starts at the segment's LR position
    lr_offset = np.repeat(data_start[::w_count] // settings.global_batch, w_count)
  body = {key: col[:-1] for key, col in cols.items()}
  body_kind = kind[:-1]
  st, _ = _assemble.fill_rounds(
      body, body_kind, idx[:-1], round_worker=round_worker, round_H=round_H,
      t_start=np.repeat(t_begin, w_count), t_arrive=np.repeat(t_end, w_count),
      data_start=data_start, data_end=data_end, lr_offset=lr_offset,
      worker_server=plan.worker_server)
  # Versions: the outer steps taken so far (a start's snapshot, after a sync or a merge).
  outer_after = np.cumsum([x[3] >= 0 for x in segs])  # after each segment's sync
  outer_before = outer_after - np.array([x[3] >= 0 for x in segs])
  counted = np.cumsum(steps * w_count)
  body["version"][st] = outer_before[seg_of[st]]
  for code in (ev.SYNC, ev.MERGE):
    sel = body_kind == code
    j = seg_of[sel]
    body["t"][sel] = t_end[j]
    body["server"][sel] = 0
    body["version"][sel] = outer_after[j]
    body["fragment"][sel] = np.asarray(frag)[sel]
  sy = body_kind == ev.SYNC
  body["steps"][sy] = steps * w_count
  # The global model counts the local steps at its outer steps (the run ends at one).
  outer = sy & (body["fragment"] >= 0)
  body["counted_steps"][outer] = counted[seg_of[outer]]
  cols["t"][-1] = t_end[-1]
  cols["version"][-1] = outer_after[-1]
  cols["counted_steps"][-1] = counted[-1]
  # sync j records rounds [j * W, (j + 1) * W): CSR pointers over all events.
  counts = np.zeros(n + 1, dtype=np.int64)
  counts[1:-1][sy] = w_count
  rounds_flat = np.arange(num_rounds, dtype=np.int32)
  return ev.Schedule(settings, env, plan, _assemble.finish(cols), np.cumsum(counts),
                     rounds_flat)


# -- what the analysis asks of a synchronous algorithm whose all-reduces are fragments ----------


def allreduced_bytes(schedule) -> float:
  """Bytes all-reduced by the stop: the fragment of every outer step."""
  sizes = fragment_sizes(schedule.settings)
  c = schedule.columns
  f = c["fragment"][(c["kind"] == ev.SYNC) & (c["fragment"] >= 0)]
  return float(sum(sizes[i] for i in f.tolist()))


def communication(schedule) -> tuple[np.ndarray, np.ndarray]:
  """(starts, ends) of the fragments' all-reduces (every worker takes part in each)."""
  c = schedule.columns
  sel = (c["kind"] == ev.SYNC) & (c["fragment"] >= 0)
  net = network.from_environment(schedule.env)
  sizes = fragment_sizes(schedule.settings)
  ar = np.array([net.allreduce_ms(sizes[f], schedule.env.num_workers)
                 for f in c["fragment"][sel].tolist()])
  t = c["t"][sel]
  if schedule.settings.overlap_steps == 0:  # the sync is at the all-reduce's end
    return t - ar, t
  return t, t + ar  # it starts at the sync and overlaps the next tau steps


# ------------------------------------------------------------------------------------------------
# Server rules
# ------------------------------------------------------------------------------------------------


class StreamingDiLoCoRules(base.Fragmented, base.Synchronous):
  """The global model with one outer optimizer state per fragment, and every worker's model.

  Rounds deliver the worker's model (`params_rounds`); the server keeps the latest one of each
  worker ("locals", on the server's device), takes the outer step of a fragment at a `sync`
  that names it and mixes a fragment into every worker's model at a `merge`; a `start` hands a
  worker its own model back.
  """
  params_rounds = True

  def __init__(self, config, problem, num_workers, num_servers):
    super().__init__(config, problem, num_workers, num_servers)
    import jax  # pylint: disable=g-import-not-at-top
    import jax.numpy as jnp  # pylint: disable=g-import-not-at-top
    import optax  # pylint: disable=g-import-not-at-top
    from halos_jax import codecs  # pylint: disable=g-import-not-at-top
    from halos_jax import optim  # pylint: disable=g-import-not-at-top
    from halos_jax.replay import server_ops  # pylint: disable=g-import-not-at-top
    ex = config.get("exchange")
    for key in ("codec", "model_codec", "global_codec"):
      if codecs.from_config(ex, key) is not None:
        raise ValueError(f"exchange.{key}={ex[key]!r}: streaming_diloco does not take codecs "
                         f"yet (its workers keep their own models); use 'none'")
    self.fragments = int(config.fragments)
    self.alpha = float(config.alpha)
    self.opt = optim.diloco_outer(config.outer.lr, config.outer.momentum)
    self._mean = server_ops.mean
    self._plain_step = server_ops.jit_apply(self.opt)  # P = 1: DiLoCo's outer step itself
    opt, alpha = self.opt, self.alpha

    @jax.jit
    def step(params, state, g, mask):
      updates, state = opt.update(g, state, params)
      new = optax.apply_updates(params, updates)
      return jax.tree.map(jnp.where, mask, new, params), state

    @jax.jit
    def pseudo_gradients(x, models):
      return [jax.tree.map(lambda a, b: (a - b).astype(a.dtype), x, y) for y in models]

    @jax.jit
    def mix(models, x, mask):
      def one(y, g, m):
        if alpha == 1.0:  # the worker takes the global fragment as is
          return jnp.where(m, g, y)
        y32, g32 = y.astype(jnp.float32), g.astype(jnp.float32)
        return jnp.where(m, ((1 - alpha) * y32 + alpha * g32).astype(y.dtype), y)
      return [jax.tree.map(one, y, x, mask) for y in models]

    self._step, self._pseudo_gradients, self._mix = step, pseudo_gradients, mix

  def init(self, x0):
    self.masks(x0)
    return {"params": x0, "opt": [self.opt.init(x0) for _ in range(self.fragments)],
            "locals": [x0 for _ in range(self.num_workers)]}

  def start_model(self, servers, ev):  # pylint: disable=redefined-outer-name
    return servers["locals"][ev.worker]

  def on_sync(self, servers, ev, results, specs):  # pylint: disable=redefined-outer-name
    models = [r.delta for r in results]  # params rounds: each worker's model
    local = list(servers["locals"])
    for spec, y in zip(specs, models):
      local[spec.worker] = y
    servers = {**servers, "locals": local}
    p = ev.fragment
    if p < 0:
      return servers
    g = self._mean(self._pseudo_gradients(servers["params"], models))
    opt = list(servers["opt"])
    if self.fragments == 1:
      params, opt[p] = self._plain_step(servers["params"], opt[p], g)
    else:
      params, opt[p] = self._step(servers["params"], opt[p], g,
                                  self.masks(servers["params"])[p])
    return {**servers, "params": params, "opt": opt}

  def on_merge(self, servers, ev):  # pylint: disable=redefined-outer-name
    mask = self.masks(servers["params"])[ev.fragment]
    return {**servers, "locals": self._mix(servers["locals"], servers["params"], mask)}


def server_rules(config, problem, num_workers: int, num_servers: int) -> base.ServerRules:
  return StreamingDiLoCoRules(config, problem, num_workers, num_servers)
