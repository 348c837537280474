"""The worker (inner) optimizer of every algorithm: AdamW, a plain-SGD variant, the LR schedule.

A worker round runs H local steps from its server's model. Step i = 1..H of a round whose
schedule position is `lr_offset` uses the learning rate schedule(lr_offset + i), so the very first
step of a run uses lr(1), not lr(0) (docs/algorithms.md 2.1). The learning rate is therefore passed
to every update as a keyword (`learning_rate=`), computed by the caller from
`round_learning_rates`. The AdamW state persists across a worker's rounds; only the parameters are
replaced by the snapshot.

References:
  Loshchilov & Hutter, "Decoupled Weight Decay Regularization", ICLR 2019 (arXiv 1711.05101).
  Kim et al., "HALoS", ICML 2025 (arXiv 2506.04531): worker settings (AdamW (0.9, 0.95), eps 1e-8,
  weight decay 0.1 on the weight matrices and embeddings, clipping 1.0, warmup + cosine to
  0.1 * max).
"""
import jax
import jax.numpy as jnp
import optax

from halos_jax import fields
from halos_jax.optim import _checks
from halos_jax.optim import _precision


def warmup_cosine_schedule(
    max_lr: float,
    t_warmup: int,
    t_max: int,
    min_lr_ratio: float = 0.1,
) -> optax.Schedule:
  """Linear warmup from 0 to max_lr, cosine decay to min_lr at t_max, min_lr after.

      min_lr = min_lr_ratio * max_lr
      lr(t) = max_lr * t / t_warmup                                   t < t_warmup
      lr(t) = max_lr - (max_lr - min_lr) * (1 - cos(pi * p)) / 2,     t_warmup <= t < t_max,
              p = (t - t_warmup) / (t_max - t_warmup)
      lr(t) = min_lr                                                  t >= t_max

  Written so that lr(0) = 0, lr(t_warmup) = max_lr and lr(t >= t_max) = min_lr hold exactly in
  float32 (with t_warmup = 0 there is no warmup and lr(0) = max_lr).

  Args:
    max_lr: peak learning rate, > 0 (reference 1e-3).
    t_warmup: warmup length in global iterations, an int >= 0 (reference 300).
    t_max: end of the cosine in global iterations, an int > t_warmup (reference 6144).
    min_lr_ratio: min_lr / max_lr, in [0, 1] (reference 0.1).

  Returns:
    A schedule: int count (scalar or array) -> float32 learning rate.
  """
  _checks.check_learning_rate("max_lr", max_lr)
  if callable(max_lr):
    raise TypeError("max_lr must be a float, not a schedule")
  t_warmup = _checks.check_int("t_warmup", t_warmup, 0)
  t_max = _checks.check_int("t_max", t_max, t_warmup + 1)
  min_lr_ratio = float(_checks.check("min_lr_ratio", min_lr_ratio, fields.UNIT))
  min_lr = min_lr_ratio * max_lr

  def schedule(count):
    t = jnp.asarray(count, jnp.float32)
    warmup = max_lr * (t / max(t_warmup, 1))
    p = (t - t_warmup) / (t_max - t_warmup)
    cosine = max_lr - (max_lr - min_lr) * (0.5 * (1.0 - jnp.cos(jnp.pi * p)))
    return jnp.where(t < t_warmup, warmup, jnp.where(t < t_max, cosine, min_lr))

  return schedule


def round_learning_rates(schedule: optax.Schedule, lr_offset, H: int) -> jax.Array:
  """The learning rates of the H steps of one round: schedule(lr_offset + 1 ... lr_offset + H).

  Args:
    schedule: a schedule, e.g. `warmup_cosine_schedule(...)`.
    lr_offset: the round's schedule position, floor(first_sequence_index / global_batch)
      (rounded down to a multiple of H in synchronous runs); an int or an int32 scalar.
    H: the number of local steps of the round, a Python int >= 1 (it sets the shape).

  Returns:
    A float array of shape (H,).
  """
  H = _checks.check_int("H", H, 1)
  _checks.check_int_or_array("lr_offset", lr_offset, 0)
  counts = jnp.asarray(lr_offset, jnp.int32) + jnp.arange(1, H + 1, dtype=jnp.int32)
  return jax.vmap(schedule)(counts)


def rank_decay_mask(params):
  """The reference's rule for a tree whose every leaf is one parameter: decay where ndim >= 2.

  Right for unstacked trees only: a tree that stacks layers along a leading axis stores each
  layer's bias and LayerNorm vectors with ndim 2, and this rule would decay them. Models with
  stacked layers pass their own mask (`models.LanguageModel.decay_mask`).
  """
  return jax.tree.map(lambda p: jnp.ndim(p) >= 2, params)


def worker_adamw(
    *,
    b1: float = 0.9,
    b2: float = 0.95,
    eps: float = 1e-8,
    weight_decay: float = 0.1,
    clip_norm: float = 1.0,
    decay_mask=None,
) -> optax.GradientTransformationExtraArgs:
  """Global-norm clipping, then AdamW with decoupled weight decay on the masked leaves.

      g = g * min(1, clip_norm / ||g||)                  (global norm over all leaves)
      m = b1 * m + (1 - b1) * g;   v = b2 * v + (1 - b2) * g^2;   k += 1
      m_hat = m / (1 - b1^k);      v_hat = v / (1 - b2^k)
      x -= lr * (m_hat / (sqrt(v_hat) + eps) + wd * x)  (wd only where decay_mask is True)

  `update(grads, state, params, *, learning_rate)` takes THIS step's learning rate lr (a float
  or a scalar array, see `round_learning_rates`). The state (k, m, v) belongs to the worker and is
  carried across its rounds; bias correction uses its own count k. m and v are kept in at least
  float32; updates are returned in the gradient dtype.

  Args:
    b1: first-moment decay, in [0, 1) (reference 0.9).
    b2: second-moment decay, in [0, 1) (reference 0.95).
    eps: added to sqrt(v_hat), >= 0 (reference 1e-8).
    weight_decay: wd, decoupled, >= 0 (reference 0.1).
    clip_norm: global-norm clipping threshold, > 0 (reference 1.0).
    decay_mask: which leaves decay: a tree of bools with the params' structure, or a function
      params -> such a tree. The reference decays weight matrices and embeddings, never biases
      or normalisation parameters; for the Pythia models pass `LanguageModel.decay_mask`.
      None: `rank_decay_mask` (ndim >= 2), which is that rule only for trees without stacked
      layers.

  Returns:
    An `optax.GradientTransformationExtraArgs`; its update needs `params` and `learning_rate`.

  References:
    Loshchilov & Hutter, 2019 (arXiv 1711.05101); Kim et al., 2025 (arXiv 2506.04531).
  """
  b1 = float(_checks.check("b1", b1, fields.MOMENTUM))
  b2 = float(_checks.check("b2", b2, fields.MOMENTUM))
  eps = float(_checks.check("eps", eps, fields.NONNEGATIVE))
  weight_decay = float(_checks.check("weight_decay", weight_decay, fields.NONNEGATIVE))
  clip_norm = float(_checks.check("clip_norm", clip_norm, fields.POSITIVE_OR_INF))
  direction = optax.chain(
      optax.clip_by_global_norm(clip_norm),
      optax.scale_by_adam(b1=b1, b2=b2, eps=eps),
      optax.add_decayed_weights(
          weight_decay, mask=rank_decay_mask if decay_mask is None else decay_mask),
  )

  def init_fn(params):
    return direction.init(_precision.upcast(params))

  def update_fn(updates, state, params=None, *, learning_rate, **extra_args):
    del extra_args
    if params is None:
      raise ValueError("worker_adamw.update needs params (decoupled weight decay uses x)")
    # d = m_hat / (sqrt(v_hat) + eps) + wd * x, on clipped gradients.
    d, state = direction.update(
        _precision.upcast(updates), state, _precision.upcast(params))
    # x -= lr * d
    new_updates = jax.tree.map(lambda d: -learning_rate * d, d)
    return _precision.cast_like(new_updates, updates), state

  return optax.GradientTransformationExtraArgs(init_fn, update_fn)


def worker_sgd() -> optax.GradientTransformationExtraArgs:
  """Plain SGD with a per-step learning rate: x -= lr * g (no clipping, no decay, no state).

  Used by the quadratic test problem (e.g. DiLoCo with H = 1 and outer SGD(1) is minibatch SGD).

  Returns:
    An `optax.GradientTransformationExtraArgs` whose update takes `learning_rate=`.
  """

  def init_fn(params):
    del params
    return optax.EmptyState()

  def update_fn(updates, state, params=None, *, learning_rate, **extra_args):
    del params, extra_args
    # x -= lr * g
    return jax.tree.map(
        lambda g: (-learning_rate * _precision.upcast(g)).astype(jnp.result_type(g)),
        updates), state

  return optax.GradientTransformationExtraArgs(init_fn, update_fn)
