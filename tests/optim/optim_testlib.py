"""Shared helpers for tests/optim: random pytrees, hypothesis strategies, tree assertions.

Values come from a numpy Generator seeded by hypothesis (fast for arrays); hypothesis draws the
tree structure, hyper-parameters and sequence lengths. Leaf shapes come from a small set so that
eager op compilations are shared across examples.
"""
import jax
import jax.numpy as jnp
import numpy as np
from hypothesis import strategies as st

EPS32 = float(np.finfo(np.float32).eps)  # 2^-23, one float32 ulp at 1.0
SHAPES = ((), (3,), (2, 3))


@st.composite
def tree_specs(draw):
  """A pytree spec: dict of 1-3 leaf shapes, optionally with a nested (tuple) branch."""
  shapes = draw(st.lists(st.sampled_from(SHAPES), min_size=1, max_size=3))
  spec = {f"w{i}": s for i, s in enumerate(shapes)}
  if draw(st.booleans()):
    spec["nested"] = (draw(st.sampled_from(SHAPES)), draw(st.sampled_from(SHAPES)))
  return spec


def make_tree(spec, rng, dtype=jnp.float32, low=-1.0, high=1.0, integer=False):
  """A tree shaped by `spec` with uniform values in [low, high] (integers if `integer`)."""
  def leaf(shape):
    if integer:
      x = rng.integers(int(low), int(high) + 1, size=shape)
    else:
      x = rng.uniform(low, high, size=shape)
    return jnp.asarray(x, dtype)
  return jax.tree.map(leaf, spec, is_leaf=lambda s: isinstance(s, tuple) and all(
      isinstance(d, int) for d in s))


def seeds():
  return st.integers(0, 2**32 - 1)


def max_abs(tree) -> float:
  leaves = [np.max(np.abs(np.asarray(x, np.float64)), initial=0.0) for x in jax.tree.leaves(tree)]
  return float(max(leaves, default=0.0))


def assert_trees_equal(a, b):
  """Exact equality of structure, dtypes and values (NaN never expected here)."""
  assert jax.tree.structure(a) == jax.tree.structure(b), (jax.tree.structure(a),
                                                           jax.tree.structure(b))
  for x, y in zip(jax.tree.leaves(a), jax.tree.leaves(b)):
    assert jnp.result_type(x) == jnp.result_type(y), (jnp.result_type(x), jnp.result_type(y))
    np.testing.assert_array_equal(np.asarray(x), np.asarray(y))


def assert_trees_close(a, b, *, rtol=0.0, atol=0.0):
  """Leafwise |a - b| <= atol + rtol * |b|, compared in float64."""
  assert jax.tree.structure(a) == jax.tree.structure(b)
  for x, y in zip(jax.tree.leaves(a), jax.tree.leaves(b)):
    np.testing.assert_allclose(np.asarray(x, np.float64), np.asarray(y, np.float64),
                               rtol=rtol, atol=atol)


def tree_sum(trees):
  """Sum of a list of trees in float64 numpy (an exact reference for small integers)."""
  return jax.tree.map(lambda *xs: np.sum([np.asarray(x, np.float64) for x in xs], axis=0), *trees)
