"""Dtype policy shared by every transform in `halos_jax.optim` (private helpers).

Parameters may be float32 or bfloat16. The optimizers do their arithmetic and keep their
accumulators (momentum, DN accumulator, Adam moments) in at least float32: a bf16/fp16 leaf is
upcast to float32, a float32 (or float64) leaf is left as it is. Updates are cast back to the dtype
of the incoming gradient / pseudo-gradient leaf (the parameter dtype), so
`optax.apply_updates(params, updates)` keeps the parameter dtypes.
"""
import jax
import jax.numpy as jnp
import optax


def compute_dtype(x) -> jnp.dtype:
  """The dtype optimizer arithmetic uses for leaf `x`: at least float32."""
  return jnp.promote_types(jnp.result_type(x), jnp.float32)


def upcast(tree):
  """Casts every leaf of `tree` to its compute dtype (a no-op for float32 leaves)."""
  return jax.tree.map(lambda x: jnp.asarray(x, compute_dtype(x)), tree)


def cast_like(tree, reference):
  """Casts every leaf of `tree` to the dtype of the matching leaf of `reference`."""
  return jax.tree.map(lambda x, r: jnp.asarray(x, jnp.result_type(r)), tree, reference)


def zeros_accumulator(params):
  """Zeros shaped like `params`, in each leaf's compute dtype."""
  return jax.tree.map(lambda p: jnp.zeros(jnp.shape(p), compute_dtype(p)), params)


def with_fp32_compute(
    inner: optax.GradientTransformation,
) -> optax.GradientTransformationExtraArgs:
  """Runs `inner` on upcast inputs (state in >= fp32) and returns updates in the input dtypes.

  Args:
    inner: any optax transformation.

  Returns:
    The wrapped transformation; identical to `inner` when every leaf is already float32.
  """
  inner = optax.with_extra_args_support(inner)

  def init_fn(params):
    return inner.init(upcast(params))

  def update_fn(updates, state, params=None, **extra_args):
    params32 = None if params is None else upcast(params)
    new_updates, new_state = inner.update(upcast(updates), state, params32, **extra_args)
    return cast_like(new_updates, updates), new_state

  return optax.GradientTransformationExtraArgs(init_fn, update_fn)

