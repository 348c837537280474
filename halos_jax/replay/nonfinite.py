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


def code_of(delta, loss) -> jax.Array:
  """One round: 0 if finite, +1 for a non-finite loss, +2 for a non-finite (pseudo-)gradient
  (traceable: the round program computes it on the worker's device)."""
  return (~jnp.isfinite(loss)).astype(jnp.int32) + 2 * (~all_finite(delta)).astype(jnp.int32)


# One program per result structure: a round's code read where its message arrives.
nonfinite_code = jax.jit(code_of)


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


def all_finite_per_device(tree) -> bool:
  """Whether every leaf of `tree` is finite, its leaves living on several devices (the servers
  of a hierarchy): one program per device, one host read."""
  groups = {}
  for leaf in jax.tree.leaves(tree):
    key = tuple(sorted(d.id for d in leaf.sharding.device_set)) if isinstance(
        leaf, jax.Array) else ()
    groups.setdefault(key, []).append(leaf)
  return all(bool(f) for f in jax.device_get([all_finite_jit(g) for g in groups.values()]))


def round_message(code: int, spec, gradient: bool, last_good: str, arrival=None) -> str:
  """The NonFiniteError message of a round (policy 'stop'); arrival: (event, t_ms) or None."""
  where = ("" if arrival is None else
           f", arriving at event {arrival[0]} (simulated time {arrival[1] / 1e3:.3f} s)")
  return (f"non-finite {describe(code, gradient)} in round {spec.round} of worker {spec.worker} "
          f"({spec.H} local steps on sequences [{spec.data_start}, {spec.data_end}){where}); "
          f"stopped before applying or saving it, {last_good}; --config.nonfinite=skip skips "
          "such updates instead")


def skip_message(code: int, info: dict) -> str:
  """The log line of a skipped server update (`info`: event, kind, t_ms, rounds, workers)."""
  rounds = ", ".join(f"round {r} of worker {w}" for r, w in zip(info["rounds"], info["workers"]))
  return (f"[replay] skipped the server update at event {info['event']} ({info['kind']}, "
          f"simulated time {info['t_ms'] / 1e3:.3f} s): non-finite "
          f"{describe(code, info['gradient'])} ({rounds})")


def describe(code: int, gradient: bool = False) -> str:
  grad = "gradient" if gradient else "pseudo-gradient"
  return {1: "loss", 2: grad, 3: f"loss and {grad}"}[int(code)]
