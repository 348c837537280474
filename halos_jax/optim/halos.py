"""HALoS servers as pure state machines: the local (LPS) and global (GPS) parameter servers.

No time and no messages here: the caller (the replay) decides when a pseudo-gradient reaches an
LPS, when a Delta reaches the GPS and when the global model reaches the LPS back. These functions
only say what each server does with what it receives, and are jittable (pass `optimizer` and `K`
as static values, e.g. through `functools.partial`).

LPS l (docs/algorithms.md 2.6), with model x_l, DN_l, version v_l, merge version vhat_l, merge
model xhat_l:

    on pseudo-gradient g:   x_l = DN_l(x_l, g); v_l += 1
                            if v_l == vhat_l + K: send Delta = xhat_l - x_l to the GPS
    on global model x_G:    x_l = (1 - alpha) * x_l + alpha * x_G; xhat_l = x_l; vhat_l = v_l
                            (the DN state m, A, t is NOT reset)
    GPS on Delta:           x_G = DN_g(x_G, Delta); count the local steps Delta reports

References:
  Kim et al., "HALoS: Hierarchical Asynchronous Local SGD over Slow Networks for
  Geo-Distributed Large Language Model Training", ICML 2025 (arXiv 2506.04531).
  Liu et al., 2024 (arXiv 2401.09135) for the DN optimizer both servers use.
"""
from typing import NamedTuple

import jax
import jax.numpy as jnp
import optax

from halos_jax import fields
from halos_jax.optim import _checks
from halos_jax.optim import _precision


class LPSState(NamedTuple):
  """One local parameter server: model, optimizer state, versions, merge model, pending steps."""
  params: optax.Params  # x_l, the LPS model (workers restart from it).
  opt_state: optax.OptState  # DN_l state (m, A, t); never reset by a merge.
  version: jax.Array  # v_l, int32: pseudo-gradients applied so far.
  merge_version: jax.Array  # vhat_l, int32: v_l at the last merge (0 at start).
  merge_params: optax.Params  # xhat_l: x_l right after the last merge (x0 at start).
  pending_steps: jax.Array  # int32: local steps received since the last send to the GPS.


class GPSState(NamedTuple):
  """The global parameter server: model, optimizer state, Deltas applied, local steps counted."""
  params: optax.Params  # x_G, the evaluated model.
  opt_state: optax.OptState  # DN_g state.
  version: jax.Array  # int32: Deltas applied so far.
  steps: jax.Array  # int32: local steps reported by all Deltas applied so far.


def lps_init(params, optimizer: optax.GradientTransformation) -> LPSState:
  """A fresh LPS at x0: versions 0, xhat = x0, nothing pending.

  Args:
    params: x0, the initial model.
    optimizer: DN_l (any optax transformation on pseudo-gradients).

  Returns:
    The initial `LPSState`.
  """
  return LPSState(
      params=params,
      opt_state=optimizer.init(params),
      version=jnp.zeros([], jnp.int32),
      merge_version=jnp.zeros([], jnp.int32),
      merge_params=params,
      pending_steps=jnp.zeros([], jnp.int32),
  )


def lps_receive(
    state: LPSState,
    pseudo_grad,
    steps,
    *,
    optimizer: optax.GradientTransformation,
    K,
) -> tuple[LPSState, jax.Array, optax.Params, jax.Array]:
  """Applies one worker's pseudo-gradient to the LPS and says whether a Delta is due.

  Args:
    state: the LPS state.
    pseudo_grad: g = x_start - x_end from one worker, shaped like `state.params`.
    steps: the number of local steps that produced g (an int or an int32 scalar).
    optimizer: the LPS optimizer DN_l (the one `state` was initialised with).
    K: updates between exchanges, counted from the last merge (an int >= 1).

  Returns:
    `(state, send_due, delta, reported_steps)`: the new state; `send_due`, a bool scalar, True
    iff v_l == vhat_l + K after this update (an equality, so while an exchange is in flight no
    second one starts); `delta = xhat_l - x_l` after the update (always computed; meaningful only
    when `send_due`); `reported_steps`, an int32 scalar, the steps pending since the last send
    when `send_due` (the pending count then restarts at 0), else 0.
  """
  _checks.check_int_or_array("K", K, 1)
  _checks.check_int_or_array("steps", steps, 0)
  _checks.check_like(pseudo_grad, state.params, "pseudo_grad", "state.params")
  # x_l = DN_l(x_l, g)
  updates, opt_state = optimizer.update(pseudo_grad, state.opt_state, state.params)
  params = optax.apply_updates(state.params, updates)
  # v_l += 1
  version = state.version + 1
  pending = state.pending_steps + jnp.asarray(steps, jnp.int32)
  # Send iff v_l == vhat_l + K (equality: at most one exchange in flight).
  send_due = version == state.merge_version + K
  # Delta = xhat_l - x_l
  delta = lps_delta(state._replace(params=params))
  reported_steps = jnp.where(send_due, pending, 0)
  pending = jnp.where(send_due, 0, pending)
  new_state = state._replace(
      params=params, opt_state=opt_state, version=version, pending_steps=pending)
  return new_state, send_due, delta, reported_steps


def lps_delta(state: LPSState):
  """Delta = xhat_l - x_l: what the LPS has moved since its last merge (what it sends)."""
  return jax.tree.map(
      lambda xhat, x: jnp.asarray(xhat - x, jnp.result_type(x)), state.merge_params,
      state.params)


def lps_merge(state: LPSState, global_params, alpha) -> LPSState:
  """Merges the global model x_G into the LPS model; alpha weights the GLOBAL model.

      x_l = (1 - alpha) * x_l + alpha * x_G;  xhat_l = x_l;  vhat_l = v_l

  The optimizer state and the pending step count are untouched. The blend runs in at least
  float32 and is rounded once to the parameter dtype, so alpha = 0 returns x_l and alpha = 1
  returns x_G exactly.

  Args:
    state: the LPS state.
    global_params: x_G, shaped like `state.params`.
    alpha: the weight of the global model, 0 <= alpha <= 1 (a float or a float scalar array).

  Returns:
    The merged `LPSState`.
  """
  _checks.check_or_array("alpha", alpha, fields.UNIT)
  _checks.check_like(global_params, state.params, "global_params", "state.params")

  def blend(x, xg):
    x32, xg32 = _precision.upcast(x), _precision.upcast(xg)
    a = jnp.asarray(alpha, x32.dtype)
    # x_l = (1 - alpha) * x_l + alpha * x_G
    return ((1 - a) * x32 + a * xg32).astype(jnp.result_type(x))

  params = jax.tree.map(blend, state.params, global_params)
  return state._replace(params=params, merge_params=params, merge_version=state.version)


def gps_init(params, optimizer: optax.GradientTransformation) -> GPSState:
  """A fresh GPS at x0.

  Args:
    params: x0, the initial model.
    optimizer: DN_g (any optax transformation on Deltas).

  Returns:
    The initial `GPSState`.
  """
  return GPSState(
      params=params,
      opt_state=optimizer.init(params),
      version=jnp.zeros([], jnp.int32),
      steps=jnp.zeros([], jnp.int32),
  )


def gps_apply(state: GPSState, delta, steps, *, optimizer: optax.GradientTransformation
              ) -> GPSState:
  """Applies one LPS's Delta to the global model and counts the steps it reports.

      x_G = DN_g(x_G, Delta); version += 1; steps += reported steps

  The caller then sends a copy of `state.params` back to that LPS (`lps_merge`).

  Args:
    state: the GPS state.
    delta: Delta = xhat_l - x_l from `lps_receive`, shaped like `state.params`.
    steps: the local steps that Delta reports (`reported_steps` of `lps_receive`).
    optimizer: DN_g (the one `state` was initialised with).

  Returns:
    The new `GPSState`.
  """
  _checks.check_int_or_array("steps", steps, 0)
  _checks.check_like(delta, state.params, "delta", "state.params")
  updates, opt_state = optimizer.update(delta, state.opt_state, state.params)
  return GPSState(
      params=optax.apply_updates(state.params, updates),
      opt_state=opt_state,
      version=state.version + 1,
      steps=state.steps + jnp.asarray(steps, jnp.int32),
  )
