"""A memory plan before a run: what each device of the mesh will hold, and whether it fits.

Per device (docs/scale.md, "Memory"):

- **resident state**: the worker slots of the device (replay/layout.py: per_device slots of
  one model-sized row, the worker optimizer state and a loss; padding slots included) and the
  servers placed on it, from the shapes (`jax.eval_shape`) and the layout's placement; nothing
  is allocated;
- **a batch's inputs**: the data blocks and learning rates of the device's slots (int32 tokens);
- **one round's temporaries**: XLA's memory analysis of the compiled one-round program on the
  backend this runs on (activations, gradients, optimizer temporaries; a device walks its slots
  one round at a time, so one round's temporaries are live at once).

The peak of a device is their sum. `plan` compiles, so it costs one compilation of the round
program (seconds for the tiny model, about a minute for Pythia-410M on a CPU host).
"""
from __future__ import annotations

import collections
import dataclasses
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

GB = 1e9


def tree_bytes(tree) -> int:
  """Bytes of a tree of arrays or shapes."""
  return sum(int(np.prod(x.shape)) * jnp.dtype(x.dtype).itemsize for x in jax.tree.leaves(tree))


@dataclasses.dataclass
class MemoryPlan:
  """The plan of one config on `devices` devices (bytes)."""
  devices: int
  resident: list  # per device: worker slots + servers
  workers_per_device: int
  batch_inputs: int  # per device
  temporaries: int | None  # one round, XLA's analysis on `backend` (None: not compiled)
  backend: str
  micro_batch: int
  remat: str
  params_bytes: int = 0  # one copy of the model
  slot_bytes: int = 0  # one worker slot: row, optimizer state, loss
  servers_bytes: int = 0  # every server's state

  def peak(self, device: int) -> int:
    return self.resident[device] + self.batch_inputs + (self.temporaries or 0)

  @property
  def fullest(self) -> int:
    return max(range(self.devices), key=self.peak)

  def fits(self, device_memory: float) -> bool:
    return self.peak(self.fullest) <= device_memory


class _Placer:
  """Stands in for a Layout in `ServerRules.place`: adds up the bytes put on each device."""

  def __init__(self, servers, global_device):
    self._servers, self._global = servers, global_device
    self.bytes = collections.Counter()

  def server_device(self, server):
    return self._servers[server]

  def global_device(self):
    return self._global

  def to(self, tree, device):
    self.bytes[device] += tree_bytes(tree)
    return tree


def _model_problem(config):
  """The LM problem's pieces that shape memory (no data needed): model, loss, optimizer."""
  from halos_jax import models  # pylint: disable=g-import-not-at-top
  from halos_jax.replay import problem as problem_lib  # pylint: disable=g-import-not-at-top
  from halos_jax.replay.problem import Problem  # pylint: disable=g-import-not-at-top
  lm = models.make_language_model(problem_lib.lm_model_config(config))
  problem = Problem(name=config.model.name, init_params=lambda: lm.init(0), loss=lm.loss,
                    worker_optimizer=problem_lib.lm_worker_optimizer(config.worker, lm),
                    learning_rate=None, data=None, tokens_per_sequence=int(config.data.seq_len))
  return problem


def round_temporaries(problem, *, h_max: int, local_batch: int, seq_len: int,
                      micro_batch: int, gradient_rounds: bool) -> int | None:
  """XLA's temporaries of one worker round on this backend (None if it reports none)."""
  from halos_jax.replay import rounds  # pylint: disable=g-import-not-at-top
  m = local_batch // micro_batch
  h = 1 if gradient_rounds else h_max
  fn = rounds.make_grad_fn(problem, m) if gradient_rounds else rounds.make_round_fn(
      problem, h, m)
  x0 = jax.eval_shape(problem.init_params)
  opt0 = jax.eval_shape(problem.worker_optimizer.init, x0)
  batches = jax.ShapeDtypeStruct((h, local_batch, seq_len + 1), jnp.int32)
  lrs = jax.ShapeDtypeStruct((h,), jnp.float32)
  hs = jax.ShapeDtypeStruct((), jnp.int32)
  analysis = jax.jit(fn, donate_argnums=(0, 1)).lower(x0, opt0, batches, lrs, hs).compile()
  analysis = analysis.memory_analysis()
  return None if analysis is None else int(analysis.temp_size_in_bytes)


def plan(config, devices: int, *, problem=None, compile_round: bool = True) -> MemoryPlan:
  """The memory plan of `config` (an algorithm config, resolved or not) on `devices` devices.

  Args:
    config: the run's config.
    devices: the mesh's device count.
    problem: the run's Problem (default: the config's language model, without its data).
    compile_round: False: no temporaries (resident state and inputs only, no compilation).
  """
  from halos_jax import algorithms  # pylint: disable=g-import-not-at-top
  from halos_jax import schedule as schedule_lib  # pylint: disable=g-import-not-at-top
  from halos_jax.replay.layout import placement  # pylint: disable=g-import-not-at-top
  env = schedule_lib.load_environment(config.env)
  settings = schedule_lib.ScheduleSettings.from_config(config, default_message_bytes=1)
  sched_plan = schedule_lib.make_plan(env, settings)
  problem = problem or _model_problem(config)
  module = algorithms.get(config.algorithm)
  rules = module.server_rules(config, problem, env.num_workers, sched_plan.num_servers)
  x0 = jax.eval_shape(problem.init_params)
  opt0 = jax.eval_shape(problem.worker_optimizer.init, x0)
  w_dev, s_dev, g_dev = placement(devices, env.worker_region, sched_plan.server_region,
                                  rules.global_region)
  per_device = -(-env.num_workers // devices)
  slot = tree_bytes(x0) + tree_bytes(opt0) + 4  # row, optimizer state, loss
  placer = _Placer(s_dev, g_dev)
  rules.place(jax.eval_shape(rules.init, x0), placer)
  resident = [per_device * slot + placer.bytes.get(d, 0) for d in range(devices)]
  local_batch, seq_len = int(config.local_batch), int(config.data.seq_len)
  h_max = 1 if rules.gradient_rounds else int(np.max(sched_plan.worker_H))
  batch_inputs = per_device * (h_max * local_batch * (seq_len + 1) * 4 + h_max * 4)
  micro = int(config.get("micro_batch", None) or local_batch)
  temporaries = round_temporaries(
      problem, h_max=h_max, local_batch=local_batch, seq_len=seq_len, micro_batch=micro,
      gradient_rounds=rules.gradient_rounds) if compile_round else None
  return MemoryPlan(devices, resident, per_device, batch_inputs, temporaries,
                    jax.devices()[0].platform, micro, config.model.get("remat", "none"),
                    params_bytes=tree_bytes(x0), slot_bytes=slot,
                    servers_bytes=sum(placer.bytes.values()))


def suggestions(config, devices: int, device_memory: float, *, max_tries: int = 6):
  """(micro_batch, remat, plan) settings that fit, trying remat='block' first, then halving the
  micro-batch (each try compiles); [] when none of the tried ones fits."""
  import ml_collections  # pylint: disable=g-import-not-at-top
  local = int(config.local_batch)
  micro = int(config.get("micro_batch", None) or local)
  tries = []
  for remat in ("none", "block"):
    m = micro
    while m >= 1 and len(tries) < 2 * max_tries:
      if local % m == 0 and (m, remat) != (micro, config.model.get("remat", "none")):
        tries.append((m, remat))
      m //= 2
  tries.sort(key=lambda t: (-t[0], t[1] != "none"))  # largest micro-batch first
  for m, remat in tries[:max_tries]:
    c = ml_collections.ConfigDict(config.to_dict())
    c.micro_batch, c.model.remat = m, remat
    p = plan(c, devices)
    if p.fits(device_memory):
      return [(m, remat, p)]
  return []


def describe(p: MemoryPlan, device_memory: float | None = None) -> list[str]:
  """The plan as lines: one per device, then the verdict."""
  tmp = "n/a" if p.temporaries is None else f"{p.temporaries / GB:.2f} GB"
  lines = [f"{p.devices} devices, {p.workers_per_device} worker slot(s) per device, micro_batch "
           f"{p.micro_batch}, remat {p.remat}; one round's temporaries (XLA, {p.backend}): {tmp}"]
  lines.append(f"  {'device':>6}  {'resident':>11}  {'inputs':>9}  {'peak':>11}")
  for d in range(p.devices):
    lines.append(f"  {d:>6}  {p.resident[d] / GB:8.2f} GB  {p.batch_inputs / GB:6.2f} GB  "
                 f"{p.peak(d) / GB:8.2f} GB")
  if device_memory:
    verdict = "fits" if p.fits(device_memory) else "does NOT fit"
    lines.append(f"fullest device {p.fullest}: {p.peak(p.fullest) / GB:.2f} GB of "
                 f"{device_memory / GB:.2f} GB: {verdict}")
  return lines


def device_memory_bytes(config) -> float | None:
  """The memory a device has: config.replay.device_memory_gb, else what the device reports
  (GPU/TPU: `memory_stats()['bytes_limit']`), else None (CPU: unknown, no check)."""
  gb = float(config.replay.get("device_memory_gb", 0) or 0)
  if gb > 0:
    return gb * GB
  stats: Any = None
  try:
    stats = jax.local_devices()[0].memory_stats()
  except Exception:  # pylint: disable=broad-except
    return None
  limit = (stats or {}).get("bytes_limit")
  return float(limit) if limit else None
