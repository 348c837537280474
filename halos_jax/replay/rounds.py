"""Worker rounds: H_w local steps from a server snapshot, run in place on the devices of the mesh.

A worker round is a pure function of (start snapshot, the worker's optimizer state, its data
block, its learning rates). The worker state is resident (layout.py): stacked along a worker axis
of `slots` rows and sharded over the mesh axis 'workers', worker w in slot w. Rounds whose
snapshots are known are independent, so the replay hands them over together: `RoundRunner.run`
calls one `jax.shard_map` program on the whole stacked state, each device walking its own slots
with `lax.map` (a loop, not `vmap`): every round runs exactly the arithmetic of the one-round
program, so parallel and sequential replay agree bit for bit (tests/replay/end_to_end_test.py,
replay_mesh_test.py). A slot without a round in this batch (h = 0) keeps its row, optimizer
state and loss; the state arrays are donated, so a batch updates them in place. Sequential
replay (the reference) sends one round per call through the same program (with several CPU
devices XLA compiles a program for a device differently from a program for the whole process,
its thread pool being split, so a separate one-round program would differ in the last bits).

Rounds of different lengths share one program: steps are scanned up to `H_max` and step i runs
under `lax.cond(i < H_w, ...)`, a real branch on CPU/GPU/TPU inside `lax.map`, so a short round
costs only its own steps and an idle slot none.

Micro-batches (`micro_batch` < `local_batch`): a local step scans over the micro-batches,
summing loss and gradients in fp32, and applies one optimizer step to their mean (equal to the
whole-batch step up to fp32 summation order; tests/replay/micro_batch_test.py).

Several processes (multi-controller JAX, docs/scale.md): the mesh spans every process's devices
and each process holds, builds the inputs of and computes only the slots of its own devices.

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
from jax.sharding import PartitionSpec as P

from halos_jax import optim
from halos_jax.replay import nonfinite
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


def accumulated_value_and_grad(loss_fn, micro_batches: int):
  """value_and_grad of `loss_fn(params, batch)` averaged over `micro_batches` equal parts.

  One part: exactly `jax.value_and_grad(loss_fn)`. Otherwise the batch's leading axis is split
  into `micro_batches` parts scanned one after another (only one part's activations are live),
  loss and gradients summed in fp32 and divided by the count: the mean over equal parts is the
  whole batch's mean loss and its gradient, up to the order of the fp32 sums.
  """
  value_and_grad = jax.value_and_grad(loss_fn)
  m = int(micro_batches)
  if m == 1:
    return value_and_grad

  def accumulated(params, batch):
    parts = batch.reshape((m, batch.shape[0] // m) + batch.shape[1:])

    def add(carry, part):
      loss_sum, grad_sum = carry
      loss, grads = value_and_grad(params, part)
      grad_sum = jax.tree.map(lambda a, g: a + g.astype(jnp.float32), grad_sum, grads)
      return (loss_sum + loss.astype(jnp.float32), grad_sum), None

    zeros = jax.tree.map(lambda p: jnp.zeros(jnp.shape(p), jnp.float32), params)
    (loss_sum, grad_sum), _ = lax.scan(add, (jnp.zeros((), jnp.float32), zeros), parts)
    scale = jnp.float32(1.0 / m)
    grads = jax.tree.map(lambda g, p: (g * scale).astype(jnp.result_type(p)), grad_sum, params)
    return loss_sum * scale, grads

  return accumulated


def make_round_fn(problem: Problem, h_max: int, micro_batches: int = 1,
                  return_params: bool = False):
  """Returns round(params0, opt_state, batches_HxBx..., lrs_H, h) -> (pseudo_grad, state, loss).

  Step i (0-based) runs when i < h: loss and gradient of batches[i] (accumulated over
  `micro_batches` parts), then the worker optimizer with learning rate lrs[i]. The
  pseudo-gradient is params0 - params_after (docs/algorithms.md 2); with `return_params` the
  round returns params_after itself (algorithms whose workers keep their own models).
  """
  opt = problem.worker_optimizer
  value_and_grad = accumulated_value_and_grad(problem.loss, micro_batches)

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
    if return_params:
      return params, state, mean_loss
    return _tree_sub(params0, params), state, mean_loss

  return round_fn


def make_grad_fn(problem: Problem, micro_batches: int = 1):
  """Returns grad(params, opt_state, batches_1xBx..., lrs, h) -> (gradient, opt_state, loss).

  The one-step round of synchronous data parallel: the worker only computes a gradient; the
  optimizer step happens at the server after averaging. Same signature as a round so both run
  through the same batching.
  """
  value_and_grad = accumulated_value_and_grad(problem.loss, micro_batches)

  def grad_fn(params0, opt_state, batches, lrs, h):
    del lrs
    loss, grads = lax.cond(
        h > 0, lambda p: value_and_grad(p, batches[0]),
        lambda p: (jnp.zeros((), jnp.float32), jax.tree.map(jnp.zeros_like, p)), params0)
    return grads, opt_state, loss.astype(jnp.float32)

  return grad_fn


def _select(pred, a, b):
  return jax.tree.map(lambda x, y: jnp.where(pred, x, y), a, b)


class RoundRunner:
  """Runs batches of worker rounds in place on the resident, sharded worker state.

  Args:
    problem: what to train.
    layout: where the worker slots live (layout.Layout).
    h_max: the longest round of the schedule (steps are padded to it and skipped by cond).
    local_batch: sequences per local step.
    micro_batch: sequences per micro-batch (a divisor of local_batch; None: local_batch).
    gradient_rounds: True for synchronous data parallel (rounds return a gradient).
    params_rounds: True when rounds return the worker's model instead of a pseudo-gradient
      (`ServerRules.params_rounds`, streaming_diloco).
    parallel: batch rounds over the mesh; False runs one round per call (the reference).
    skip_nonfinite: a round whose result is not finite leaves the worker's optimizer state as
      it was (config nonfinite='skip').
    codec: the worker -> server codec (halos_jax.codecs; None: the result travels as is): a
      round's result is encoded on its device and replaced by what the server decodes; the
      codec's state (an error-feedback residual) lives in the worker's slot.
  """

  def __init__(self, problem: Problem, layout, *, h_max: int, local_batch: int,
               micro_batch: int | None = None, gradient_rounds: bool = False,
               params_rounds: bool = False, parallel: bool = True,
               skip_nonfinite: bool = False, codec=None):
    self.problem = problem
    self.layout = layout
    self.h_max = 1 if gradient_rounds else int(h_max)
    self.local_batch = int(local_batch)
    self.micro_batch = int(micro_batch or local_batch)
    if self.micro_batch < 1 or self.local_batch % self.micro_batch:
      raise ValueError(f"micro_batch={self.micro_batch} must divide local_batch="
                       f"{self.local_batch}")
    m = self.local_batch // self.micro_batch
    self.parallel = parallel
    fn = make_grad_fn(problem, m) if gradient_rounds else make_round_fn(
        problem, self.h_max, m, return_params=params_rounds)
    self.num_devices = layout.num_devices
    self.mesh = layout.mesh
    self.batch_size = layout.slots

    self.codec = codec

    def one(args):
      x, opt_state, loss, batches, lrs, h, sent_state = args
      delta, new_state, new_loss = fn(x, opt_state, batches, lrs, h)
      new_sent = sent_state
      if codec is not None:  # what the server will receive (docs/codecs.md)
        payload, new_sent = codec.encode(delta, sent_state)
        delta = codec.decode(payload, delta)
      code = nonfinite.code_of(delta, new_loss)
      if skip_nonfinite:  # a skipped round must not leave a non-finite optimizer state
        new_state = _select(code == 0, new_state, opt_state)
        new_sent = _select(code == 0, new_sent, sent_state)
      active = h > 0
      return (_select(active, delta, x), _select(active, new_state, opt_state),
              jnp.where(active, new_loss, loss), jnp.where(active, code, 0),
              _select(active, new_sent, sent_state))

    def local_rounds(x, opt_state, loss, batches, lrs, h, sent_state):
      # One device's slots: a loop over them, each the one-round program.
      return lax.map(one, (x, opt_state, loss, batches, lrs, h, sent_state))

    spec = P("workers")
    self._batched = jax.jit(jax.shard_map(
        local_rounds, mesh=self.mesh, in_specs=spec, out_specs=spec, check_vma=False),
        donate_argnums=(0, 1, 2, 6))
    self._codes_home = jax.jit(lambda c: c, out_shardings=layout.replicated)
    # The round's learning rates, schedule(lr_offset + 1 ... lr_offset + h_max) (docs/
    # algorithms.md 2.1: the first step uses lr_offset + 1); steps past H_w are not run.
    self._lrs = jax.jit(functools.partial(
        optim.round_learning_rates, problem.learning_rate, H=self.h_max))
    self.rounds_computed = 0
    self.batches_dispatched = 0

  # -- state -----------------------------------------------------------------------------------

  def init_workers(self, x0: Params, opt0: OptState) -> dict:
    """The resident worker state: every slot holds x0, opt0 and a zero loss."""
    workers = {"x": x0, "opt": opt0, "loss": jnp.zeros((), jnp.float32)}
    if self.codec is not None:  # the sender's codec state (e.g. an error-feedback residual)
      workers["codec"] = self.codec.init(x0)
    return self.layout.stacked(workers)

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

  def _global_inputs(self, specs: Sequence[RoundSpec]):
    """(batches, lrs, h) as global arrays over the slots; each device gets only its slots."""
    by_slot = {s.worker: s for s in specs}
    cache = {}

    def rows(idx):
      out = []
      for slot in range(*idx[0].indices(self.batch_size)):
        if slot not in cache:
          cache[slot] = self._inputs(by_slot[slot]) if slot in by_slot else None
        out.append(cache[slot])
      return out

    template = self._inputs(specs[0])
    sharding = self.layout.sharding

    def build(k, shape, dtype):
      def part(idx):
        got = rows(idx)
        return np.stack([np.zeros(shape, dtype) if r is None else r[k] for r in got])
      return jax.make_array_from_callback((self.batch_size,) + shape, sharding, part)

    batches = build(0, template[0].shape, template[0].dtype)
    lrs = build(1, template[1].shape, np.float32)
    h = np.zeros(self.batch_size, np.int32)
    for s in specs:
      h[s.worker] = s.H
    h = jax.make_array_from_callback((self.batch_size,), sharding, lambda idx: h[idx])
    return batches, lrs, h

  # -- execution -------------------------------------------------------------------------------

  def run(self, workers: dict, specs: Sequence[RoundSpec]) -> tuple[dict, list]:
    """Computes the rounds `specs` (one per worker, in slot `spec.worker`) in place.

    Returns the new worker state (the old one is donated) and a list of (codes, specs): the
    non-finite codes of the slots (an int32 array on this process's first device, not read
    here) for the rounds of each program call.
    """
    checks = []
    if not specs:
      return workers, checks
    groups = [list(specs)] if self.parallel else [[s] for s in specs]
    for group in groups:
      batches, lrs, h = self._global_inputs(group)
      x, opt_state, loss, codes, sent = self._batched(
          workers["x"], workers["opt"], workers["loss"], batches, lrs, h,
          workers.get("codec", ()))
      workers = {"x": x, "opt": opt_state, "loss": loss}
      if self.codec is not None:
        workers["codec"] = sent
      codes = self._codes_home(codes)
      checks.append(({s.device: s.data for s in codes.addressable_shards}[self.layout.home],
                     group))
      self.rounds_computed += len(group)
      self.batches_dispatched += 1
    return workers, checks
