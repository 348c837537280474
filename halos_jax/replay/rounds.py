"""Worker rounds: H_w local steps from a server snapshot, one jitted call, batched on a mesh.

A worker round is a pure function of (start snapshot, the worker's optimizer state, its data
block, its learning rates). Rounds whose snapshots are known are independent, so the replay hands
them over together: `RoundRunner.run` lays them out along the mesh axis 'workers' with
`jax.shard_map`, and each device walks its share with `lax.map` (a loop, not `vmap`): every
round then runs exactly the arithmetic of the one-round program, so parallel and sequential replay
agree bit for bit (tests/replay/parallel_test.py). Sequential replay (the reference) sends one
round per call through the same program: with several CPU devices XLA compiles a program for a
device differently from a program for the whole process (its thread pool is split), so a
separate one-round program would differ in the last bits.

Rounds of different lengths share one program: steps are scanned up to `H_max` and step i runs
under `lax.cond(i < H_w, ...)`, a real branch on CPU/GPU/TPU inside `lax.map`, so a short round
costs only its own steps. Every batch is padded to one fixed size (the number of workers,
rounded up to a multiple of the device count) with free slots of H_w = 0 that cost no steps,
so the round program compiles once.

Several processes (multi-controller JAX, docs/scale.md): the mesh spans every process's devices;
each process holds the same whole batch, supplies the slots of its own devices
(`distributed.global_batch`), and gets every result back through an all-gather
(`distributed.gatherer`, `local_copy`), so all processes keep an identical simulation state.
The per-device program is the one a single process with as many devices runs, hence the same
bits.

jax 0.12 note: the gradient of Pythia's exact GELU inside `shard_map` trips the varying-manual-
axes consistency check, so the mesh program is built with `check_vma=False` (docs/models.md).
"""
from __future__ import annotations

import functools
from typing import Any, NamedTuple, Sequence

import jax
import jax.numpy as jnp
import numpy as np
import optax
from jax import lax
from jax.sharding import Mesh, NamedSharding, PartitionSpec as P

from halos_jax import distributed
from halos_jax import optim
from halos_jax.replay.problem import Problem

Params = Any
OptState = Any


class RoundSpec(NamedTuple):
  """What one worker round needs besides its snapshot and optimizer state (from a start event)."""
  round: int
  worker: int
  H: int
  data_start: int
  data_end: int
  lr_offset: int


class RoundResult(NamedTuple):
  """A finished round: what its arrival delivers, and the worker's new optimizer state.

  For local-SGD rounds `delta` is the pseudo-gradient x_start - x_end; for gradient rounds
  (synchronous data parallel) it is the gradient of the step's loss.
  """
  delta: Params
  opt_state: OptState
  loss: jax.Array  # mean training loss over the round's steps


def _tree_sub(a, b):
  return jax.tree.map(lambda x, y: (x - y).astype(x.dtype), a, b)


def make_round_fn(problem: Problem, h_max: int):
  """Returns round(params0, opt_state, batches_HxBx..., lrs_H, h) -> (pseudo_grad, state, loss).

  Step i (0-based) runs when i < h: loss and gradient of batches[i], then the worker optimizer
  with learning rate lrs[i]. The pseudo-gradient is params0 - params_after (docs/algorithms.md 2).
  """
  opt = problem.worker_optimizer
  value_and_grad = jax.value_and_grad(problem.loss)

  def round_fn(params0, opt_state, batches, lrs, h):
    def step(carry, inputs):
      i, batch, lr = inputs

      def run(c):
        params, state, loss_sum = c
        loss, grads = value_and_grad(params, batch)
        updates, state = opt.update(grads, state, params, learning_rate=lr)
        return optax.apply_updates(params, updates), state, loss_sum + loss.astype(jnp.float32)

      return lax.cond(i < h, run, lambda c: c, carry), None

    init = (params0, opt_state, jnp.zeros((), jnp.float32))
    (params, state, loss_sum), _ = lax.scan(
        step, init, (jnp.arange(h_max), batches, lrs))
    mean_loss = loss_sum / jnp.maximum(h, 1).astype(jnp.float32)
    return _tree_sub(params0, params), state, mean_loss

  return round_fn


def make_grad_fn(problem: Problem):
  """Returns grad(params, opt_state, batches_1xBx..., lrs, h) -> (gradient, opt_state, loss).

  The one-step round of synchronous data parallel: the worker only computes a gradient; the
  optimizer step happens at the server after averaging. Same signature as a round so both run
  through the same batching.
  """
  value_and_grad = jax.value_and_grad(problem.loss)

  def grad_fn(params0, opt_state, batches, lrs, h):
    del lrs
    loss, grads = lax.cond(
        h > 0, lambda p: value_and_grad(p, batches[0]),
        lambda p: (jnp.zeros((), jnp.float32), jax.tree.map(jnp.zeros_like, p)), params0)
    return grads, opt_state, loss.astype(jnp.float32)

  return grad_fn


@jax.jit
def _stack(trees):
  """One program per batch size (not one eager op per leaf): list of trees -> stacked tree."""
  return jax.tree.map(lambda *xs: jnp.stack(xs), *trees)


@jax.jit
def _unstack(tree):
  """Stacked tree -> list of trees, one program per batch size."""
  n = jax.tree.leaves(tree)[0].shape[0]
  return [jax.tree.map(lambda x, i=i: x[i], tree) for i in range(n)]


class RoundRunner:
  """Runs batches of worker rounds, sequentially or laid out over a device mesh.

  Args:
    problem: what to train.
    h_max: the longest round of the schedule (steps are padded to it and skipped by cond).
    local_batch: sequences per local step.
    max_rounds: the most rounds ever in flight together (the number of workers).
    gradient_rounds: True for synchronous data parallel (rounds return a gradient).
    parallel: batch rounds over the mesh; False runs one round per call (the reference).
    devices: the mesh's devices (default: all devices of all processes).
  """

  def __init__(self, problem: Problem, *, h_max: int, local_batch: int, max_rounds: int,
               gradient_rounds: bool = False, parallel: bool = True,
               devices: Sequence[jax.Device] | None = None):
    self.problem = problem
    self.h_max = 1 if gradient_rounds else int(h_max)
    self.local_batch = int(local_batch)
    self.parallel = parallel
    fn = make_grad_fn(problem) if gradient_rounds else make_round_fn(problem, self.h_max)
    devices = list(devices if devices is not None else distributed.mesh_devices())
    self.num_devices = len(devices)
    self.mesh = Mesh(np.asarray(devices), ("workers",))
    self._sharding = NamedSharding(self.mesh, P("workers"))
    # Several processes: inputs are assembled per process and outputs all-gathered.
    self.multiprocess = not self._sharding.is_fully_addressable
    self._gather = distributed.gatherer(devices) if self.multiprocess else None
    # Every batch is padded to this many slots (a multiple of the device count).
    self.batch_size = -(-int(max_rounds) // self.num_devices) * self.num_devices
    # Results live on this process's first mesh device, like the servers' state.
    self._home = distributed.home_device(devices)

    def local_rounds(params0, opt_state, batches, lrs, h):
      # One device's share: a loop over its rounds, each the one-round program.
      return lax.map(lambda args: fn(*args), (params0, opt_state, batches, lrs, h))

    self._batched = jax.jit(jax.shard_map(
        local_rounds, mesh=self.mesh, in_specs=P("workers"), out_specs=P("workers"),
        check_vma=False))
    # The round's learning rates, schedule(lr_offset + 1 ... lr_offset + h_max) (docs/
    # algorithms.md 2.1: the first step uses lr_offset + 1); steps past H_w are not run.
    self._lrs = jax.jit(functools.partial(
        optim.round_learning_rates, problem.learning_rate, H=self.h_max))
    self.rounds_computed = 0
    self.batches_dispatched = 0

  # -- inputs ----------------------------------------------------------------------------------

  def _inputs(self, spec: RoundSpec):
    """Host-side data block and learning rates of one round, padded to h_max steps."""
    n = self.local_batch
    block = np.asarray(self.problem.data.block(spec.data_start, spec.data_end))
    if block.shape[0] != spec.H * n:
      raise ValueError(
          f"round {spec.round}: data block [{spec.data_start}, {spec.data_end}) holds "
          f"{block.shape[0]} sequences, expected H_w * local_batch = {spec.H} * {n}")
    batches = np.zeros((self.h_max, n) + block.shape[1:], block.dtype)
    batches[:spec.H] = block.reshape((spec.H, n) + block.shape[1:])
    return batches, np.asarray(self._lrs(spec.lr_offset), np.float32)

  # -- execution -------------------------------------------------------------------------------

  def run(self, specs: Sequence[RoundSpec], snapshots: Sequence[Params],
          opt_states: Sequence[OptState]) -> list[RoundResult]:
    """Computes the given rounds; results in the same order as `specs`."""
    if not specs:
      return []
    if not self.parallel:  # the reference: one round per call, through the same program
      out = []
      for i in range(len(specs)):
        out += self._run_batch(specs[i:i + 1], snapshots[i:i + 1], opt_states[i:i + 1])
      return out
    return self._run_batch(specs, snapshots, opt_states)

  def _run_batch(self, specs, snapshots, opt_states):
    inputs = [self._inputs(s) for s in specs]
    self.rounds_computed += len(specs)
    k = len(specs)
    # Pad to one fixed batch size (enough slots for every worker): one compilation.
    g = self.batch_size
    pad = g - k
    snaps = list(snapshots) + [snapshots[0]] * pad
    states = list(opt_states) + [opt_states[0]] * pad
    batches = np.stack([b for b, _ in inputs] + [np.zeros_like(inputs[0][0])] * pad)
    lrs = np.stack([l for _, l in inputs] + [inputs[0][1]] * pad)
    h = np.asarray([s.H for s in specs] + [0] * pad, np.int32)  # H_w = 0: a free slot
    if self.multiprocess:
      args = distributed.global_batch(
          self._sharding, g,
          lambda s: (_stack(snaps[s]), _stack(states[s]), batches[s], lrs[s], h[s]))
      outs = distributed.local_copy(self._gather(self._batched(*args)), self._home)
    else:
      args = jax.device_put(
          (_stack(snaps), _stack(states), batches, lrs, h), self._sharding)
      outs = jax.device_put(self._batched(*args), self._home)
    deltas, new_states, losses = outs
    self.batches_dispatched += 1
    out = _unstack((deltas, new_states, losses))
    return [RoundResult(*out[i]) for i in range(k)]
