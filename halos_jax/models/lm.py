"""A pure functional view of the Pythia module: init, apply and loss over a plain dict.

The replay engine, optimizers and checkpoints see only a nested dict of fp32 arrays with string
keys. The L layers are stacked: every leaf under 'layers' has a leading axis of size L (layer i
is index i). For cfg = get_model_config('tiny') (L = 2, D = 128, V = 256):

  {'embed_in': {'embedding': (256, 128)},
   'layers': {'input_layernorm': {'scale': (2, 128), 'bias': (2, 128)},
              'post_attention_layernorm': {'scale': (2, 128), 'bias': (2, 128)},
              'attention': {'qkv': {'kernel': (2, 128, 384), 'bias': (2, 384)},
                            'dense': {'kernel': (2, 128, 128), 'bias': (2, 128)}},
              'mlp': {'dense_h_to_4h': {'kernel': (2, 128, 512), 'bias': (2, 512)},
                      'dense_4h_to_h': {'kernel': (2, 512, 128), 'bias': (2, 128)}}},
   'final_layer_norm': {'scale': (128,), 'bias': (128,)},
   'embed_out': {'kernel': (128, 256)}}

The NNX module is rebuilt inside each traced call from a graph definition captured once, so
init/apply/loss are ordinary pure functions: jit, grad, vmap (over a leading worker axis of
params) and shard_map all apply to them directly.

Under `jax.shard_map` (jax 0.12) callers must pass `check_vma=False`. The gradient of exact
GELU differentiates `lax.erf` through `lax.polynomial`, whose constant coefficients are not
marked as varying over the manual mesh axis while its input is, so the default check_vma=True
raises "Primitive polynomial requires varying manual axes to match". The model has no
collectives, so the check has nothing to verify here. Tested in tests/models/lm_mesh_test.py;
see docs/models.md.
"""
import functools
from typing import Any, Callable, NamedTuple

import jax
import jax.numpy as jnp
from flax import nnx

from halos_jax.models.config import PythiaConfig
from halos_jax.models.pythia import Pythia

Params = dict[str, Any]


class LanguageModel(NamedTuple):
  """Pure functions of a Pythia model over a plain nested-dict params pytree.

  init(seed: int) -> params
  apply(params, tokens_BxT int32) -> logits_BxTxV float32
  loss(params, batch_BxT1 int32) -> scalar mean next-token cross-entropy (fp32), with
    inputs = batch[:, :-1] and targets = batch[:, 1:].

  Shapes and dtypes are checked (ValueError/TypeError naming the problem); token values cannot
  be checked inside jit: ids outside [0, V) give NaN, never an error.
  """
  init: Callable[[int], Params]
  apply: Callable[[Params, jax.Array], jax.Array]
  loss: Callable[[Params, jax.Array], jax.Array]


def _path_str(path) -> str:
  return "/".join(str(getattr(p, "key", p)) for p in path)


def _check_tokens(tokens, cfg: PythiaConfig, what: str, max_len: int):
  shape = getattr(tokens, "shape", None)
  dtype = getattr(tokens, "dtype", None)
  if shape is None or dtype is None:
    raise TypeError(f"{what} must be an integer array, got {type(tokens).__name__}")
  if not jnp.issubdtype(dtype, jnp.integer):
    raise TypeError(f"{what} must have an integer dtype (token ids), got {dtype}")
  if len(shape) != 2:
    raise ValueError(f"{what} must have shape (batch, length), got shape {tuple(shape)}")
  if not 1 <= shape[1] <= max_len:
    raise ValueError(
        f"{what} length {shape[1]} must be in [1, {max_len}] (cfg.max_seq_len="
        f"{cfg.max_seq_len})"
    )


def cross_entropy(logits_BxTxV: jax.Array, targets_BxT: jax.Array) -> jax.Array:
  """Mean of -log softmax(logits)[target] over all B*T positions, in fp32."""
  logp_BxTxV = jax.nn.log_softmax(logits_BxTxV.astype(jnp.float32), axis=-1)
  nll_BxT = -jnp.take_along_axis(logp_BxTxV, targets_BxT[..., None], axis=-1)[..., 0]
  return jnp.mean(nll_BxT)


def make_language_model(cfg: PythiaConfig) -> LanguageModel:
  """Builds init/apply/loss for `cfg`.

  Equal configs return the same LanguageModel object (memoised), so `jax.jit(lm.apply)` and
  the jitted init compile once per config and process, not once per call.

  Inside `jax.shard_map`, pass `check_vma=False`: with jax 0.12 the gradient of the exact GELU
  fails the varying-manual-axes check (see the module docstring and docs/models.md).

  Args:
    cfg: a PythiaConfig (see get_model_config).

  Returns:
    LanguageModel(init, apply, loss), pure functions (see the module docstring).
  """
  if not isinstance(cfg, PythiaConfig):
    raise TypeError(f"cfg must be a PythiaConfig, got {type(cfg).__name__}")
  return _make_language_model(cfg)


@functools.cache
def _make_language_model(cfg: PythiaConfig) -> LanguageModel:
  # Graph definition and parameter shapes, from a shape-only construction (no compute).
  abstract_model = nnx.eval_shape(lambda: Pythia(cfg, rngs=nnx.Rngs(0)))
  graphdef, abstract_state = nnx.split(abstract_model)
  abstract_params = nnx.to_pure_dict(abstract_state)
  flat_abstract, treedef = jax.tree_util.tree_flatten_with_path(abstract_params)

  @jax.jit
  def _init(key):
    model = Pythia(cfg, rngs=nnx.Rngs(params=key))
    return nnx.to_pure_dict(nnx.state(model))

  def init(seed) -> Params:
    """Fresh parameters from an integer seed (deterministic; see PythiaConfig for the init)."""
    return _init(jax.random.key(seed))

  def _model(params: Params) -> Pythia:
    if not isinstance(params, dict):
      raise TypeError(f"params must be the nested dict from init, got {type(params).__name__}")
    # nnx.merge assigns leaves in flattened (sorted-key) order: check the tree first.
    if jax.tree.structure(params) != treedef:
      raise ValueError(
          f"params do not match the parameter tree of {cfg}: expected top-level keys "
          f"{sorted(abstract_params)}, got {sorted(map(str, params))} (or different nested keys)"
      )
    for (path, want), got in zip(flat_abstract, jax.tree.leaves(params)):
      if tuple(got.shape) != tuple(want.shape):
        raise ValueError(
            f"params leaf {_path_str(path)} has shape {tuple(got.shape)}, expected "
            f"{tuple(want.shape)} for this config (vmap over the worker axis for stacked params)"
        )
    return nnx.merge(graphdef, params)

  def apply(params: Params, tokens_BxT: jax.Array) -> jax.Array:
    """Logits (B, T, V) float32 for integer tokens (B, T), T <= cfg.max_seq_len."""
    _check_tokens(tokens_BxT, cfg, "tokens", cfg.max_seq_len)
    return _model(params)(tokens_BxT)

  def loss(params: Params, batch_BxT1: jax.Array) -> jax.Array:
    """Mean next-token cross-entropy: inputs batch[:, :-1], targets batch[:, 1:]."""
    _check_tokens(batch_BxT1, cfg, "batch", cfg.max_seq_len + 1)
    if batch_BxT1.shape[1] < 2:
      raise ValueError(
          f"batch needs length >= 2 (inputs batch[:, :-1], targets batch[:, 1:]), got shape "
          f"{tuple(batch_BxT1.shape)}"
      )
    logits_BxTxV = _model(params)(batch_BxT1[:, :-1])
    return cross_entropy(logits_BxTxV, batch_BxT1[:, 1:])

  return LanguageModel(init=init, apply=apply, loss=loss)
