"""DiLoCo's outer optimizer and the pseudo-gradient helpers every server uses.

Convention: a worker that starts from x_start and ends at x_end produces the pseudo-gradient
g = x_start - x_end, a descent direction; server transforms return updates to ADD
(`optax.apply_updates`), i.e. they take a descent step on g.

References:
  Douillard et al., "DiLoCo: Distributed Low-Communication Training of Language Models", 2023
  (arXiv 2311.08105): outer Nesterov SGD on the mean pseudo-gradient.
  Kim et al., "HALoS", ICML 2025 (arXiv 2506.04531): the DiLoCo baseline (lr 0.7, momentum 0.9).
"""
from collections.abc import Sequence

import jax
import jax.numpy as jnp
import optax

from halos_jax import fields
from halos_jax.optim import _checks
from halos_jax.optim import _precision


def diloco_outer(
    learning_rate: optax.ScalarOrSchedule = 0.7,
    momentum: float = 0.9,
) -> optax.GradientTransformationExtraArgs:
  """Nesterov SGD (dampening 0) for the mean pseudo-gradient g of a DiLoCo round.

      m = momentum * m + g
      x -= lr * (g + momentum * m)

  This is `optax.sgd(learning_rate, momentum=momentum, nesterov=True)` run with its momentum
  in at least float32 (bf16 parameters get a float32 trace); updates come back in the dtype of
  g. For float32 parameters it is that optax transform exactly. `momentum=0` keeps the same
  state layout (a trace that is never used) so configs and checkpoints do not change shape.

  Args:
    learning_rate: lr, a positive float or an optax schedule (reference 0.7).
    momentum: 0 <= momentum < 1 (reference 0.9).

  Returns:
    An optax transformation; feed it `mean_pseudo_gradient(...)` of the round.

  References:
    Douillard et al., 2023 (arXiv 2311.08105); Kim et al., 2025 (arXiv 2506.04531).
  """
  _checks.check_learning_rate("learning_rate", learning_rate)
  momentum = float(_checks.check("momentum", momentum, fields.MOMENTUM))
  return _precision.with_fp32_compute(
      optax.sgd(learning_rate, momentum=momentum, nesterov=True))


def pseudo_gradient(x_start, x_end):
  """g = x_start - x_end, leaf by leaf (a descent direction), in the parameter dtype.

  Args:
    x_start: the model a worker (or server) started from.
    x_end: the model it ended with; same tree structure and shapes.

  Returns:
    The pseudo-gradient tree.
  """
  _checks.check_like(x_end, x_start, "x_end", "x_start")
  return jax.tree.map(lambda a, b: jnp.asarray(a - b, jnp.result_type(a)), x_start, x_end)


def mean_over_leading_axis(stacked_tree):
  """Equal-weight mean over axis 0 of every leaf (the worker axis), in the leaf dtype.

  The sum runs in at least float32 (bf16 leaves are upcast) and is cast back once.

  Args:
    stacked_tree: a tree whose leaves have a leading worker axis of the same length W >= 1.

  Returns:
    The tree of means, leaves without the leading axis.
  """
  leaves = jax.tree.leaves(stacked_tree)
  sizes = {jnp.shape(x)[0] if jnp.ndim(x) else None for x in leaves}
  if None in sizes or len(sizes) > 1 or 0 in sizes:
    raise ValueError("mean_over_leading_axis needs every leaf to have the same leading "
                     f"(worker) axis of length >= 1; got leading sizes {sorted(map(str, sizes))}")
  # g_mean = (1 / W) * sum_w g_w
  return jax.tree.map(
      lambda x: jnp.mean(_precision.upcast(x), axis=0).astype(jnp.result_type(x)), stacked_tree)


def mean_pseudo_gradient(trees: Sequence):
  """Equal-weight mean of a sequence of pseudo-gradient trees (DiLoCo's all-reduce).

  Args:
    trees: a non-empty sequence of trees with one structure and shapes (one per worker).

  Returns:
    (1 / W) * sum_w trees[w], in the leaf dtype (the sum runs in at least float32).
  """
  trees = list(trees)
  if not trees:
    raise ValueError("mean_pseudo_gradient needs at least one tree; got an empty sequence")
  for i, tree in enumerate(trees[1:], start=1):
    _checks.check_like(tree, trees[0], f"trees[{i}]", "trees[0]")
  stacked = jax.tree.map(lambda *xs: jnp.stack(xs), *trees)
  return mean_over_leading_axis(stacked)
