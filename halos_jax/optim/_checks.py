"""Argument validation shared by `halos_jax.optim` (private helpers).

Every check raises one ValueError/TypeError whose message names the argument, the value received
and what is allowed. Arrays (JAX, possibly traced, or numpy) get a dtype check only: their values
can only be validated by the caller who knows their concrete values.
"""
import math
import numbers

import jax
import jax.numpy as jnp
import numpy as np


def is_concrete_number(x) -> bool:
  """True for Python / numpy real numbers (not bools), False for JAX arrays."""
  return isinstance(x, numbers.Real) and not isinstance(x, bool)


def check_int(name: str, value, minimum: int) -> int:
  """Returns `value` as an int, requiring a Python/numpy integer >= minimum."""
  if isinstance(value, bool) or not isinstance(value, numbers.Integral):
    raise TypeError(f"{name} must be an integer >= {minimum}; got {value!r} "
                    f"of type {type(value).__name__}")
  if value < minimum:
    raise ValueError(f"{name} must be an integer >= {minimum}; got {value}")
  return int(value)


def check_int_or_array(name: str, value, minimum: int) -> None:
  """Checks an integer that may also be an integer array (JAX, maybe traced: left unchecked)."""
  if isinstance(value, (jax.Array, np.ndarray)) or hasattr(value, "aval"):
    if not jnp.issubdtype(jnp.result_type(value), jnp.integer):
      raise TypeError(f"{name} must be an integer; got an array of dtype "
                      f"{jnp.result_type(value)}")
    return
  check_int(name, value, minimum)


def check_real(name: str, value, low: float, high: float, *, low_open: bool = False,
               high_open: bool = False) -> float:
  """Returns `value` as a float, requiring a real number in the given interval."""
  if not is_concrete_number(value):
    raise TypeError(f"{name} must be a real number; got {value!r} of type "
                    f"{type(value).__name__}")
  lo_ok = value > low if low_open else value >= low
  hi_ok = value < high if high_open else value <= high
  if not (lo_ok and hi_ok):
    interval = ("(" if low_open else "[") + f"{low}, {high}" + (")" if high_open else "]")
    raise ValueError(f"{name} must be in {interval}; got {value}")
  return float(value)


def check_real_or_array(name: str, value, low: float, high: float) -> None:
  """Checks a number in [low, high] that may also be an array (JAX, maybe traced: unchecked)."""
  if isinstance(value, (jax.Array, np.ndarray)) or hasattr(value, "aval"):
    return
  check_real(name, value, low, high)


def check_learning_rate(name: str, value) -> None:
  """A learning rate is a positive real number or a callable schedule count -> value."""
  if callable(value):
    return
  if not is_concrete_number(value):
    raise TypeError(f"{name} must be a positive float or an optax schedule (a callable); "
                    f"got {value!r} of type {type(value).__name__}")
  if not (value > 0 and math.isfinite(value)):
    raise ValueError(f"{name} must be a finite float > 0 (or an optax schedule); got {value}")


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
