"""The JAX pieces that algorithm modules' server rules are built from (jitted, pure)."""
from __future__ import annotations

import jax
import optax

from halos_jax import optim


@jax.jit
def mean(trees):
  """Equal-weight mean of the round results of a sync (the all-reduce)."""
  return optim.mean_pseudo_gradient(trees)


def jit_apply(opt):
  """jit(params, opt_state, g) -> (params, opt_state) for a server transform."""
  @jax.jit
  def step(params, state, g):
    updates, state = opt.update(g, state, params)
    return optax.apply_updates(params, updates), state
  return step
