"""Delayed Nesterov (DN): the server optimizer of Async Local-SGD and of HALoS's LPS and GPS.

DN buffers N incoming pseudo-gradients before it refreshes its momentum. Between refreshes every
update is a plain SGD step of size lr / N (plus, when c > 0, a share c of the last momentum), so
stale, asynchronous pseudo-gradients are not amplified by a momentum that changes every step.

References:
  Liu et al., "Asynchronous Local-SGD Training for Language Modeling", 2024
  (arXiv 2401.09135): DN and its activation parameter c.
  Kim et al., "HALoS: Hierarchical Asynchronous Local SGD over Slow Networks for
  Geo-Distributed Large Language Model Training", ICML 2025 (arXiv 2506.04531).
"""
from typing import NamedTuple

import jax
import jax.numpy as jnp
import optax

from halos_jax import fields
from halos_jax.optim import _checks
from halos_jax.optim import _precision


class DelayedNesterovState(NamedTuple):
  """DN state: update counter t, momentum m and pseudo-gradient accumulator A."""
  count: jax.Array  # t, int32 scalar: pseudo-gradients received so far.
  momentum: optax.Params  # m, refreshed once per block of N, >= float32.
  accumulator: optax.Params  # A, sum of the pseudo-gradients of the current block, >= float32.


def delayed_nesterov(
    learning_rate: optax.ScalarOrSchedule,
    beta: float,
    buffer_size: int,
    c: float = 0.0,
) -> optax.GradientTransformation:
  """Delayed Nesterov momentum on pseudo-gradients g = x_start - x_end.

  For each incoming pseudo-gradient g (t counts the updates received before this one):

      A += g
      if (t + 1) % N == 0:                               # last update of a block of N
        m = beta * m + A / N
        x -= lr * ((1 - c*N + c) * beta * m + g / N)
        A = 0
      else:
        x -= lr * (c * beta * m + g / N)
      t += 1

  The returned updates are the `-lr * (...)` terms, to be added with `optax.apply_updates`.
  Identities (tested in tests/optim/delayed_nesterov_test.py): N = 1, c = 0 is
  `optax.sgd(lr, momentum=beta, nesterov=True)`; beta = 0 is SGD with step lr / N; with c = 0,
  at every block boundary DN equals Nesterov SGD applied once per block to the block mean; the
  momentum coefficients inside one block, (N - 1) * c + (1 - c*N + c), sum to 1.

  Dtypes: m and A are kept in at least float32 (bf16 parameters get float32 buffers); updates
  are returned in the dtype of the incoming pseudo-gradient (the parameter dtype).

  Args:
    learning_rate: lr, a positive float or an optax schedule evaluated at the state's count t
      (the number of updates received before this one). The reference passes lr = eta * N, see
      `delayed_nesterov_from_base_lr`.
    beta: momentum decay, 0 <= beta < 1.
    buffer_size: N, the number of pseudo-gradients per momentum refresh, an int >= 1.
    c: activation, the share of the momentum applied at each update inside a block,
      0 <= c <= 1 / N (default 0: all momentum at the block boundary).

  Returns:
    An `optax.GradientTransformation` whose state is a `DelayedNesterovState`.

  Raises:
    ValueError / TypeError: when an argument is outside the ranges above.

  References:
    Liu et al., 2024 (arXiv 2401.09135), Algorithm "Delayed Nesterov";
    Kim et al., 2025 (arXiv 2506.04531), section on the LPS/GPS optimizers.
  """
  _checks.check_learning_rate("learning_rate", learning_rate)
  N = _checks.check_int("buffer_size", buffer_size, 1)
  beta = float(_checks.check("beta", beta, fields.MOMENTUM))
  c = float(_checks.check("c", c, fields.real(0.0, 1.0 / N)))

  def init_fn(params):
    return DelayedNesterovState(
        count=jnp.zeros([], jnp.int32),
        momentum=_precision.zeros_accumulator(params),
        accumulator=_precision.zeros_accumulator(params),
    )

  def update_fn(updates, state, params=None):
    del params
    t = state.count
    lr = learning_rate(t) if callable(learning_rate) else learning_rate
    # Block boundary: this is update t + 1 and (t + 1) % N == 0.
    boundary = (t + 1) % N == 0

    # A <- A + g
    acc = jax.tree.map(lambda a, g: a + g.astype(a.dtype), state.accumulator, updates)
    # m <- beta * m + A / N at a boundary, unchanged otherwise.
    momentum = jax.tree.map(
        lambda m, a: jnp.where(boundary, beta * m + a / N, m), state.momentum, acc)
    # Momentum coefficient: (1 - c*N + c) at a boundary, c inside the block.
    coef = jnp.where(boundary, 1.0 - c * N + c, c)
    # x <- x - lr * (coef * beta * m + g / N)
    new_updates = jax.tree.map(
        lambda m, g: (-lr * (coef * beta * m + g.astype(m.dtype) / N)).astype(g.dtype),
        momentum, updates)
    # A <- 0 at a boundary.
    acc = jax.tree.map(lambda a: jnp.where(boundary, jnp.zeros_like(a), a), acc)

    return new_updates, DelayedNesterovState(
        count=optax.safe_increment(t), momentum=momentum, accumulator=acc)

  return optax.GradientTransformation(init_fn, update_fn)


def delayed_nesterov_from_base_lr(
    eta: optax.ScalarOrSchedule,
    beta: float,
    buffer_size: int,
    c: float = 0.0,
) -> optax.GradientTransformation:
  """DN with lr = eta * N, the reference parameterisation (docs/algorithms.md 2.2).

  Between momentum refreshes each update is then a plain SGD step of size eta.

  Args:
    eta: base learning rate, a positive float or an optax schedule.
    beta: momentum decay, 0 <= beta < 1.
    buffer_size: N, an int >= 1.
    c: activation, 0 <= c <= 1 / N.

  Returns:
    `delayed_nesterov(eta * buffer_size, beta, buffer_size, c)`.

  References:
    Liu et al., 2024 (arXiv 2401.09135); Kim et al., 2025 (arXiv 2506.04531).
  """
  _checks.check_learning_rate("eta", eta)
  N = _checks.check_int("buffer_size", buffer_size, 1)
  if callable(eta):
    def lr(count):
      return eta(count) * N  # lr = eta * N
  else:
    lr = eta * N  # lr = eta * N
  return delayed_nesterov(lr, beta, N, c)
