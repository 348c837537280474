"""Argument validation shared by `halos_jax.optim` (private helpers).

Every check raises one ValueError/TypeError whose message names the argument, the value received
and what is allowed. The rules are halos_jax/fields.py's, the same a config's validation uses for
the config field that feeds the argument (e.g. `fields.MOMENTUM` for `worker.b1` and `b1`).
Arrays (JAX, possibly traced, or numpy) get a dtype check only: their values can only be
validated by the caller who knows their concrete values.
"""
import jax
import jax.numpy as jnp
import numpy as np

from halos_jax import fields


def check(name: str, value, rule: fields.Rule):
  """`value` if it passes `rule` (halos_jax/fields.py: the rule a config field of the same value
  is checked with); TypeError for a value that is no real number, else ValueError."""
  ok, allowed = rule
  if ok(value):
    return value
  if not fields.is_real(value):
    raise TypeError(f"{name} must be {allowed}; got {value!r} of type {type(value).__name__}")
  raise ValueError(f"{name} must be {allowed}; got {value}")


def check_int(name: str, value, minimum: int) -> int:
  """Returns `value` as an int, requiring a Python/numpy integer >= minimum."""
  ok, allowed = fields.integer(minimum)
  if not fields.is_int(value):
    raise TypeError(f"{name} must be {allowed}; got {value!r} of type {type(value).__name__}")
  if not ok(value):
    raise ValueError(f"{name} must be {allowed}; got {value}")
  return int(value)


def check_int_or_array(name: str, value, minimum: int) -> None:
  """Checks an integer that may also be an integer array (JAX, maybe traced: left unchecked)."""
  if isinstance(value, (jax.Array, np.ndarray)) or hasattr(value, "aval"):
    if not jnp.issubdtype(jnp.result_type(value), jnp.integer):
      raise TypeError(f"{name} must be an integer; got an array of dtype "
                      f"{jnp.result_type(value)}")
    return
  check_int(name, value, minimum)


def check_or_array(name: str, value, rule: fields.Rule) -> None:
  """`check` for a number that may also be an array (JAX, maybe traced: left unchecked)."""
  if isinstance(value, (jax.Array, np.ndarray)) or hasattr(value, "aval"):
    return
  check(name, value, rule)


def check_learning_rate(name: str, value) -> None:
  """A learning rate is a positive real number or a callable schedule count -> value."""
  if callable(value):
    return
  check(name, value, fields.POSITIVE)


def check_like(tree, reference, name: str, reference_name: str) -> None:
  """Raises ValueError if `tree` does not have the structure and leaf shapes of `reference`."""
  s, r = jax.tree.structure(tree), jax.tree.structure(reference)
  if s != r:
    raise ValueError(f"{name} must have the tree structure of {reference_name}; "
                     f"got {s}, expected {r}")
  for (path, leaf), ref_leaf in zip(jax.tree.leaves_with_path(tree), jax.tree.leaves(reference)):
    if jnp.shape(leaf) != jnp.shape(ref_leaf):
      raise ValueError(f"{name}{jax.tree_util.keystr(path)} has shape {jnp.shape(leaf)}, "
                       f"expected {jnp.shape(ref_leaf)} (the shape in {reference_name})")
