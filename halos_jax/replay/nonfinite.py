"""The non-finite policy's device-side pieces (docs/replay.md, "Faults").

A round's result gets a code: 0 if finite, +1 for a non-finite loss, +2 for a non-finite
(pseudo-)gradient. The codes stay on the device until the host reads losses anyway; policy
'stop' raises `NonFiniteError` at the first non-zero code, policy 'skip' selects the servers'
state without the update (`select_if_finite`), with no host synchronisation per event.
"""
from __future__ import annotations

import jax
import jax.numpy as jnp


class NonFiniteError(RuntimeError):
  """A round produced a non-finite loss or pseudo-gradient (policy 'stop'), or the servers'
  state became non-finite; nothing non-finite was checkpointed."""


def all_finite(tree) -> jax.Array:
  leaves = jax.tree.leaves(tree)
  if not leaves:
    return jnp.asarray(True)
  return jnp.all(jnp.stack([jnp.all(jnp.isfinite(x)) for x in leaves]))


@jax.jit
def nonfinite_code(delta, loss) -> jax.Array:
  """One round: 0 if finite, +1 for a non-finite loss, +2 for a non-finite (pseudo-)gradient.

  One program per result structure (not per batch size): a batch costs one tiny dispatch per
  round, and nothing is read on the host here."""
  return (~jnp.isfinite(loss)).astype(jnp.int32) + 2 * (~all_finite(delta)).astype(jnp.int32)


def nonfinite_codes(deltas, losses) -> list[jax.Array]:
  return [nonfinite_code(d, l) for d, l in zip(deltas, losses)]


@jax.jit
def combine_codes(codes) -> jax.Array:
  codes = jnp.stack(codes)
  return jnp.any(codes & 1).astype(jnp.int32) + 2 * jnp.any(codes & 2).astype(jnp.int32)


@jax.jit
def select_if_finite(code, new, old):
  """`new` where code == 0 else `old`, leaf by leaf (exactly `new` when finite)."""
  return jax.tree.map(lambda a, b: jnp.where(code == 0, a, b), new, old)


all_finite_jit = jax.jit(all_finite)


def describe(code: int, gradient: bool = False) -> str:
  grad = "gradient" if gradient else "pseudo-gradient"
  return {1: "loss", 2: grad, 3: f"loss and {grad}"}[int(code)]
