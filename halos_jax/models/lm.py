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
import numpy as np
from flax import nnx

from halos_jax.models.config import PythiaConfig
from halos_jax.models.pythia import DECAYED_PARAM_NAMES
from halos_jax.models.pythia import UNDECAYED_PARAM_NAMES
from halos_jax.models.pythia import Pythia

Params = dict[str, Any]


class LanguageModel(NamedTuple):
  """Pure functions of a Pythia model over a plain nested-dict params pytree.

  init(seed: int) -> params
  apply(params, tokens_BxT int32) -> logits_BxTxV float32
  loss(params, batch_BxT1 int32) -> scalar mean next-token cross-entropy (fp32), with
    inputs = batch[:, :-1] and targets = batch[:, 1:].
  decay_mask: a tree of Python bools with the structure of params: True on the leaves that take
    the workers' weight decay (Linear kernels and embeddings, stacked or not), False on biases
    and LayerNorm parameters (see `weight_decay_mask`). Pass it to `optim.worker_adamw`.

  Shapes and dtypes are checked (ValueError/TypeError naming the problem); token values cannot
  be checked inside jit: ids outside [0, V) give NaN, never an error.
  """
  init: Callable[[int], Params]
  apply: Callable[[Params, jax.Array], jax.Array]
  loss: Callable[[Params, jax.Array], jax.Array]
  decay_mask: Params


def _path_str(path) -> str:
  return "/".join(str(getattr(p, "key", p)) for p in path)


def weight_decay_mask(params) -> Params:
  """True where a parameter takes weight decay, from its name (not its stored rank).

  A leaf named 'kernel' (a Linear weight matrix) or 'embedding' (an embedding table) is decayed;
  'bias' and 'scale' (Linear biases, LayerNorm parameters) are not, whether or not the leaf
  carries the stacked layers' leading axis. For one unstacked layer this is exactly the
  reference's rule "decay tensors of rank >= 2" (tests/models/lm_test.py checks both).

  Args:
    params: a Pythia parameter tree (arrays or ShapeDtypeStructs), e.g. from `init`.

  Returns:
    A tree of Python bools with the structure of params.

  Raises:
    ValueError: a leaf whose name is none of the known ones (a new kind of parameter must be
      classified here, not guessed from its shape).
  """
  def decayed(path, _):
    name = str(getattr(path[-1], "key", path[-1])) if path else ""
    if name in DECAYED_PARAM_NAMES:
      return True
    if name in UNDECAYED_PARAM_NAMES:
      return False
    raise ValueError(
        f"params leaf {_path_str(path)}: cannot tell whether it takes weight decay; known names "
        f"are {sorted(DECAYED_PARAM_NAMES)} (decayed) and {sorted(UNDECAYED_PARAM_NAMES)} (not)")
  return jax.tree_util.tree_map_with_path(decayed, params)


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


# Logits per chunk of the fused head + cross-entropy in `loss` (a performance switch, not the
# mathematics; 0: plain logits for all tokens, then cross_entropy). A chunk is the largest power
# of two of tokens whose (tokens, V) fp32 logits fit in LOSS_CHUNK_LOGITS entries (128 MiB):
# 512 tokens for Pythia's V = 50,304; a small vocabulary takes the whole batch in one chunk,
# with no loop. See docs/performance.md.
LOSS_CHUNK_LOGITS = 2**25


def loss_chunk_tokens(num_tokens: int, vocab_size: int) -> int:
  """Tokens per head_cross_entropy chunk for LOSS_CHUNK_LOGITS (0: not chunked)."""
  if not LOSS_CHUNK_LOGITS:
    return 0
  fit = max(1, LOSS_CHUNK_LOGITS // vocab_size)
  return min(1 << (fit.bit_length() - 1), num_tokens)


def _head_logits(h_CxD, w_DxV, dtype):
  # As Pythia.embed_out: operands in the compute dtype, logits accumulated in fp32.
  return jnp.dot(h_CxD.astype(dtype), w_DxV.astype(dtype), preferred_element_type=jnp.float32)


def _chunk_nll(h_CxD, w_DxV, targets_C, dtype):
  """-log softmax(h w)[target] per token (C,), the fp32 logits (C, V) and logsumexp (C,)."""
  logits_CxV = _head_logits(h_CxD, w_DxV, dtype)
  lse_C = jax.nn.logsumexp(logits_CxV, axis=-1)
  target_logit_C = jnp.take_along_axis(logits_CxV, targets_C[:, None], axis=-1)[:, 0]
  return lse_C - target_logit_C, logits_CxV, lse_C


def _chunk_nll_and_grads(h_CxD, w_DxV, targets_C, dtype, scale):
  """_chunk_nll's nll (C,) and the gradients of scale * sum(nll) w.r.t. h (C, D), w (D, V)."""
  nll, logits_CxV, lse_C = _chunk_nll(h_CxD, w_DxV, targets_C, dtype)
  # d nll / d logits = softmax(logits) - onehot(target).
  dlogits_CxV = (jnp.exp(logits_CxV - lse_C[:, None])
                 - jax.nn.one_hot(targets_C, logits_CxV.shape[-1], dtype=jnp.float32)) * scale
  dlogits_CxV = dlogits_CxV.astype(dtype)
  dh_CxD = jnp.dot(dlogits_CxV, w_DxV.astype(dtype).T, preferred_element_type=jnp.float32)
  dw_DxV = jnp.dot(h_CxD.astype(dtype).T, dlogits_CxV, preferred_element_type=jnp.float32)
  return nll, dh_CxD, dw_DxV


def _chunked(fn, h_NxD, targets_N, chunk, init):
  """Folds fn(carry, h_chunk, targets_chunk) -> (carry, ys) over token chunks (scan + tail).

  ys: a tuple of per-token arrays (chunk, ...); returned concatenated to (N, ...).
  """
  n = h_NxD.shape[0]
  full = n // chunk * chunk
  parts = []
  carry = init
  if full == n == chunk:  # one chunk: no loop
    carry, ys = fn(carry, h_NxD, targets_N)
    return carry, ys
  if full:
    carry, ys = jax.lax.scan(
        lambda c, xs: fn(c, *xs), carry,
        (h_NxD[:full].reshape(n // chunk, chunk, -1), targets_N[:full].reshape(n // chunk, chunk)))
    parts.append(tuple(y.reshape(full, *y.shape[2:]) for y in ys))
  if full < n:
    carry, ys = fn(carry, h_NxD[full:], targets_N[full:])
    parts.append(ys)
  return carry, tuple(jnp.concatenate(y) if len(parts) > 1 else y[0] for y in zip(*parts))


def _mean(nll_N):
  # Shifted mean c + mean(nll - c), c = nll[0]: XLA's CPU reduction sums sequentially, and
  # summing the small deviations loses less than summing N values of ~ln V (for N = 128 equal
  # values the plain fp32 mean is 5 ulps off, the shifted one exact).
  c = nll_N[0]
  return c + jnp.mean(nll_N - c)


@functools.partial(jax.custom_vjp, nondiff_argnums=(3, 4))
def head_cross_entropy(h_NxD, w_DxV, targets_N, dtype, chunk):
  """mean_n -log softmax(h_n w)[targets_n], computed chunk tokens at a time.

  Equal to cross_entropy(h @ w, targets) (up to fp32 summation order) without materialising
  the (N, V) logits: each chunk's (chunk, V) logits live only inside one scan step. The
  gradient is computed in the forward pass of differentiation (the loss is the scalar output,
  so its cotangent only scales it): dh and dw are the residuals, nothing is recomputed.

  Args:
    h_NxD: final hidden states, (N, D) float32.
    w_DxV: the head kernel, (D, V) float32.
    targets_N: integer target ids, (N,).
    dtype: compute dtype of the head matmuls (logits accumulate to fp32).
    chunk: tokens per chunk (static).

  Returns:
    The scalar mean negative log-likelihood, float32.
  """
  def fn(carry, h_CxD, t_C):
    return carry, (_chunk_nll(h_CxD, w_DxV, t_C, dtype)[0],)
  _, (nll_N,) = _chunked(fn, h_NxD, targets_N, chunk, ())
  return _mean(nll_N)


def _head_cross_entropy_fwd(h_NxD, w_DxV, targets_N, dtype, chunk):
  scale = 1.0 / h_NxD.shape[0]

  def fn(dw_DxV, h_CxD, t_C):
    nll_C, dh_CxD, dw_c = _chunk_nll_and_grads(h_CxD, w_DxV, t_C, dtype, scale)
    return dw_DxV + dw_c, (nll_C, dh_CxD)

  dw_DxV, (nll_N, dh_NxD) = _chunked(
      fn, h_NxD, targets_N, chunk, jnp.zeros(w_DxV.shape, jnp.float32))
  return _mean(nll_N), (dh_NxD, dw_DxV, targets_N)


def _head_cross_entropy_bwd(dtype, chunk, res, g):
  del dtype, chunk
  dh_NxD, dw_DxV, targets_N = res
  zero_targets = np.zeros(targets_N.shape, jax.dtypes.float0)
  return g * dh_NxD, g * dw_DxV, zero_targets


head_cross_entropy.defvjp(_head_cross_entropy_fwd, _head_cross_entropy_bwd)


def make_language_model(cfg: PythiaConfig) -> LanguageModel:
  """Builds init/apply/loss for `cfg`.

  Equal configs return the same LanguageModel object (memoised), so `jax.jit(lm.apply)` and
  the jitted init compile once per config and process, not once per call.

  Inside `jax.shard_map`, pass `check_vma=False`: with jax 0.12 the gradient of the exact GELU
  fails the varying-manual-axes check (see the module docstring and docs/models.md).

  Args:
    cfg: a PythiaConfig (see get_model_config).

  Returns:
    LanguageModel(init, apply, loss, decay_mask) (see the module docstring).
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
    model = _model(params)
    B, T = batch_BxT1.shape[0], batch_BxT1.shape[1] - 1
    chunk = loss_chunk_tokens(B * T, cfg.vocab_size)
    if not chunk:
      return cross_entropy(model(batch_BxT1[:, :-1]), batch_BxT1[:, 1:])
    h_BxTxD = model.hidden(batch_BxT1[:, :-1])
    return head_cross_entropy(
        h_BxTxD.reshape(B * T, -1), model.embed_out.kernel[...],
        batch_BxT1[:, 1:].reshape(B * T), jnp.dtype(cfg.compute_dtype), chunk)

  return LanguageModel(init=init, apply=apply, loss=loss,
                       decay_mask=weight_decay_mask(abstract_params))
