"""The Pythia (GPT-NeoX) decoder as a Flax NNX module.

Shapes are named in suffixes: B batch, T sequence, D d_model, H heads, K head_dim, F MLP width,
V vocabulary, R rotary_ndims.

Numerics (cfg.compute_dtype = 'bfloat16'): parameters stay fp32 and are cast at use; every
matmul reads bf16 operands; the residual stream, LayerNorms, rotary angles, attention softmax and
the logits are fp32 (the score and head matmuls accumulate to fp32 via preferred_element_type).
With 'float32' everything is fp32.

References:
  Black et al., "GPT-NeoX-20B: An Open-Source Autoregressive Language Model", 2022.
  Su et al., "RoFormer: Enhanced Transformer with Rotary Position Embedding", 2021.
"""
import functools

import jax
import jax.numpy as jnp
from flax import nnx

from halos_jax.models.config import PythiaConfig


def rotary_cos_sin(positions_T: jax.Array, rotary_ndims: int, base: float):
  """Cosines and sines of the rotary angles, in fp32.

  theta_i = base^(-2i / R) for i < R/2; the angle at position p is p * theta_i.

  Args:
    positions_T: integer positions, shape (T,).
    rotary_ndims: R, the number of rotated dims per head (even).
    base: the frequency base (10,000 in Pythia).

  Returns:
    (cos_TxR2, sin_TxR2), each of shape (T, R // 2), float32.
  """
  inv_freq_R2 = 1.0 / (base ** (jnp.arange(0, rotary_ndims, 2, dtype=jnp.float32) / rotary_ndims))
  angles_TxR2 = positions_T.astype(jnp.float32)[:, None] * inv_freq_R2[None, :]
  return jnp.cos(angles_TxR2), jnp.sin(angles_TxR2)


def apply_rotary(x_BxTxHxK: jax.Array, cos_TxR2: jax.Array, sin_TxR2: jax.Array) -> jax.Array:
  """Rotates the first R dims of every head; the other K - R dims pass through.

  GPT-NeoX's "rotate_half" layout: dim i is paired with dim i + R/2 (not with i + 1), i.e.
  with x1 = x[:R/2], x2 = x[R/2:R]:
    x1' = x1 cos - x2 sin,   x2' = x2 cos + x1 sin
  (the complex number x1 + i x2 multiplied by e^{i p theta}). Computed in fp32, returned in the
  input dtype.

  Args:
    x_BxTxHxK: queries or keys, shape (B, T, H, K).
    cos_TxR2: from rotary_cos_sin, shape (T, R // 2).
    sin_TxR2: from rotary_cos_sin, shape (T, R // 2).

  Returns:
    The rotated array, same shape and dtype as x_BxTxHxK.
  """
  half = cos_TxR2.shape[-1]
  if half == 0:
    return x_BxTxHxK
  x = x_BxTxHxK.astype(jnp.float32)
  x1, x2, x_pass = x[..., :half], x[..., half:2 * half], x[..., 2 * half:]
  cos = cos_TxR2[None, :, None, :]  # 1xTx1x(R/2), broadcast over batch and heads
  sin = sin_TxR2[None, :, None, :]
  rotated = jnp.concatenate([x1 * cos - x2 * sin, x2 * cos + x1 * sin, x_pass], axis=-1)
  return rotated.astype(x_BxTxHxK.dtype)


# Performance switches (not the mathematics), module attributes read at trace time so the
# benchmark can A/B them (benchmarks/step_vs_torch.py --model_opts); see docs/performance.md.
# ATTENTION_BLOCK: query-block size of causal_attention (0: one T x T block).
# SCAN_UNROLL: nnx.scan unroll of the layer loop (True: fully unrolled, +22% on tiny).
ATTENTION_BLOCK = 128
SCAN_UNROLL = True


def _masked_scores(q_BxHxCxK, k_BxHxSxK, q_start):
  """q_t . k_s / sqrt(K) in fp32 for queries q_start..q_start+C-1, masked to s <= t.

  Masked scores are the most negative fp32, so exp(masked - max) is exactly 0 and future
  tokens cannot change earlier outputs.
  """
  C, S, K = q_BxHxCxK.shape[2], k_BxHxSxK.shape[2], q_BxHxCxK.shape[-1]
  scores_BxHxCxS = jnp.einsum(
      "bhck,bhsk->bhcs", q_BxHxCxK, k_BxHxSxK, preferred_element_type=jnp.float32
  ) * (K ** -0.5)
  causal_CxS = (q_start + jnp.arange(C))[:, None] >= jnp.arange(S)[None, :]
  return jnp.where(causal_CxS, scores_BxHxCxS, jnp.finfo(jnp.float32).min)


def _attention_block_fwd_parts(q_BxHxCxK, k_BxHxSxK, v_BxHxSxK, q_start, dtype):
  """The block's output o (fp32), its unnormalised probabilities e and row sums l.

  softmax(scores) v = (e v) / l with e = exp(scores - rowmax) and l = sum_s e: the division
  touches the C x K output instead of the C x S probabilities.
  """
  scores_BxHxCxS = _masked_scores(q_BxHxCxK, k_BxHxSxK, q_start)
  e_BxHxCxS = jnp.exp(scores_BxHxCxS - jnp.max(scores_BxHxCxS, axis=-1, keepdims=True))
  l_BxHxCx1 = jnp.sum(e_BxHxCxS, axis=-1, keepdims=True)
  e_BxHxCxS = e_BxHxCxS.astype(dtype)
  o_BxHxCxK = jnp.einsum(
      "bhcs,bhsk->bhck", e_BxHxCxS, v_BxHxSxK, preferred_element_type=jnp.float32
  ) / l_BxHxCx1
  return o_BxHxCxK, e_BxHxCxS, l_BxHxCx1


@functools.partial(jax.custom_vjp, nondiff_argnums=(3, 4))
def _attention_block(q_BxHxCxK, k_BxHxSxK, v_BxHxSxK, q_start, dtype):
  """softmax(q k^T / sqrt(K) + causal mask) v for queries q_start.. and keys 0..S-1.

  A custom VJP with the flash-attention backward (Dao et al., 2022): the residuals are the
  forward's e and l (nothing is recomputed), and the softmax backward's row sum
  sum_s dP_cs P_cs is taken as sum_k dO_ck O_ck, over K entries instead of S.
  """
  o_BxHxCxK, _, _ = _attention_block_fwd_parts(q_BxHxCxK, k_BxHxSxK, v_BxHxSxK, q_start, dtype)
  return o_BxHxCxK.astype(v_BxHxSxK.dtype)


def _attention_block_fwd(q_BxHxCxK, k_BxHxSxK, v_BxHxSxK, q_start, dtype):
  o_BxHxCxK, e_BxHxCxS, l_BxHxCx1 = _attention_block_fwd_parts(
      q_BxHxCxK, k_BxHxSxK, v_BxHxSxK, q_start, dtype)
  res = (q_BxHxCxK, k_BxHxSxK, v_BxHxSxK, o_BxHxCxK, e_BxHxCxS, l_BxHxCx1)
  return o_BxHxCxK.astype(v_BxHxSxK.dtype), res


def _attention_block_bwd(q_start, dtype, res, do_BxHxCxK):
  """With P = e / l: dV = P^T dO, dS = P * (dO V^T - rowsum(dO * O)), dQ = dS K / sqrt(K),
  dK = dS^T Q / sqrt(K); 1 / l is folded into dO (a C x K array) rather than into e."""
  del q_start
  q_BxHxCxK, k_BxHxSxK, v_BxHxSxK, o_BxHxCxK, e_BxHxCxS, l_BxHxCx1 = res
  K = q_BxHxCxK.shape[-1]
  f32 = jnp.float32
  dol_BxHxCxK = do_BxHxCxK.astype(f32) / l_BxHxCx1  # dO / l
  dv_BxHxSxK = jnp.einsum(
      "bhcs,bhck->bhsk", e_BxHxCxS, dol_BxHxCxK.astype(dtype), preferred_element_type=f32)
  dpl_BxHxCxS = jnp.einsum(  # (dO V^T) / l
      "bhck,bhsk->bhcs", dol_BxHxCxK.astype(dtype), v_BxHxSxK, preferred_element_type=f32)
  rowsum_BxHxCx1 = jnp.sum(dol_BxHxCxK * o_BxHxCxK, axis=-1, keepdims=True)
  ds_BxHxCxS = (e_BxHxCxS.astype(f32) * (dpl_BxHxCxS - rowsum_BxHxCx1) * (K ** -0.5)).astype(
      dtype)
  dq_BxHxCxK = jnp.einsum("bhcs,bhsk->bhck", ds_BxHxCxS, k_BxHxSxK, preferred_element_type=f32)
  dk_BxHxSxK = jnp.einsum("bhcs,bhck->bhsk", ds_BxHxCxS, q_BxHxCxK, preferred_element_type=f32)
  return (dq_BxHxCxK.astype(q_BxHxCxK.dtype), dk_BxHxSxK.astype(k_BxHxSxK.dtype),
          dv_BxHxSxK.astype(v_BxHxSxK.dtype))


_attention_block.defvjp(_attention_block_fwd, _attention_block_bwd)


def causal_attention(q_BxTxHxK, k_BxTxHxK, v_BxTxHxK, dtype):
  """Causal softmax attention, computed in query blocks of ATTENTION_BLOCK rows.

  Query block [t0, t1) only needs keys [0, t1): its scores are (t1 - t0) x t1 instead of
  rows of a T x T matrix, so the blocks above the diagonal (all masked, whose probabilities are
  exactly 0) are never computed or stored. Each block's softmax runs over all of its keys at
  once, so the result is the same softmax as the T x T version (up to fp32 rounding).

  Args:
    q_BxTxHxK: queries (rotated), shape (B, T, H, K).
    k_BxTxHxK: keys (rotated), shape (B, T, H, K).
    v_BxTxHxK: values, shape (B, T, H, K).
    dtype: the compute dtype of the matmuls (scores and outputs accumulate in fp32).

  Returns:
    Attention outputs, shape (B, T, H, K), dtype of v.
  """
  T = q_BxTxHxK.shape[1]
  block = ATTENTION_BLOCK if 0 < ATTENTION_BLOCK < T else T
  # Heads-major (B, H, T, K): every score and output matmul is a batch of plain 2-D matmuls.
  q_BxHxTxK, k_BxHxTxK, v_BxHxTxK = (
      a.transpose(0, 2, 1, 3) for a in (q_BxTxHxK, k_BxTxHxK, v_BxTxHxK))
  outs = []
  for t0 in range(0, T, block):
    t1 = min(t0 + block, T)
    outs.append(_attention_block(
        q_BxHxTxK[:, :, t0:t1], k_BxHxTxK[:, :, :t1], v_BxHxTxK[:, :, :t1], t0, dtype))
  out_BxHxTxK = outs[0] if len(outs) == 1 else jnp.concatenate(outs, axis=2)
  return out_BxHxTxK.transpose(0, 2, 1, 3)


# Which parameters take the workers' weight decay, decided by what a parameter is
# (docs/algorithms.md 2.1 and docs/optimizers.md, "Weight decay"): the weight matrices of the
# Linear layers ('kernel') and the embedding tables ('embedding'). Biases and LayerNorm
# scales/biases never decay. The stored rank cannot decide it: the stacked layers give every
# per-layer bias and LayerNorm vector a leading layer axis, so they are stored with ndim 2.
DECAYED_PARAM_NAMES = frozenset({"kernel", "embedding"})
UNDECAYED_PARAM_NAMES = frozenset({"bias", "scale"})


def _normal(std: float):
  return nnx.initializers.normal(stddev=std)


def _layer_norm(cfg: PythiaConfig, rngs: nnx.Rngs) -> nnx.LayerNorm:
  # fp32 in and out whatever the compute dtype; variance as E[(x - mean)^2] like torch.
  return nnx.LayerNorm(
      cfg.d_model,
      epsilon=cfg.layer_norm_eps,
      dtype=jnp.float32,
      param_dtype=jnp.float32,
      use_fast_variance=False,
      rngs=rngs,
  )


class Attention(nnx.Module):
  """Causal multi-head self-attention with partial rotary embeddings.

  `qkv.kernel` has shape (D, 3D) whose columns are [q | k | v], each block (H, K) head-major:
  the output reshapes to (B, T, 3, H, K). (transformers' `query_key_value` interleaves
  per head instead, (H, 3, K); hf_import converts.)
  """

  def __init__(self, cfg: PythiaConfig, *, rngs: nnx.Rngs):
    self.num_heads = cfg.num_heads
    self.head_dim = cfg.head_dim
    self.rotary_ndims = cfg.rotary_ndims
    self.rotary_base = cfg.rotary_base
    self.dtype = jnp.dtype(cfg.compute_dtype)
    D = cfg.d_model
    self.qkv = nnx.Linear(
        D, 3 * D, kernel_init=_normal(cfg.init_std), dtype=self.dtype, rngs=rngs
    )
    self.dense = nnx.Linear(
        D, D, kernel_init=_normal(cfg.wang_init_std), dtype=self.dtype, rngs=rngs
    )

  def __call__(self, x_BxTxD: jax.Array) -> jax.Array:
    B, T, D = x_BxTxD.shape
    H, K = self.num_heads, self.head_dim
    qkv_BxTx3xHxK = self.qkv(x_BxTxD).reshape(B, T, 3, H, K)
    q_BxTxHxK, k_BxTxHxK, v_BxTxHxK = (qkv_BxTx3xHxK[:, :, i] for i in range(3))

    cos_TxR2, sin_TxR2 = rotary_cos_sin(jnp.arange(T), self.rotary_ndims, self.rotary_base)
    q_BxTxHxK = apply_rotary(q_BxTxHxK, cos_TxR2, sin_TxR2)
    k_BxTxHxK = apply_rotary(k_BxTxHxK, cos_TxR2, sin_TxR2)

    out_BxTxHxK = causal_attention(q_BxTxHxK, k_BxTxHxK, v_BxTxHxK, self.dtype)
    return self.dense(out_BxTxHxK.reshape(B, T, D))


class MLP(nnx.Module):
  """dense_4h_to_h(gelu(dense_h_to_4h(x))) with the exact (erf) GELU, as Pythia's 'gelu'.

  Its gradient needs `check_vma=False` under jax.shard_map with jax 0.12 (see lm.py).
  """

  def __init__(self, cfg: PythiaConfig, *, rngs: nnx.Rngs):
    dtype = jnp.dtype(cfg.compute_dtype)
    self.dense_h_to_4h = nnx.Linear(
        cfg.d_model, cfg.mlp_dim, kernel_init=_normal(cfg.init_std), dtype=dtype, rngs=rngs
    )
    self.dense_4h_to_h = nnx.Linear(
        cfg.mlp_dim, cfg.d_model, kernel_init=_normal(cfg.wang_init_std), dtype=dtype, rngs=rngs
    )

  def __call__(self, x_BxTxD: jax.Array) -> jax.Array:
    h_BxTxF = jax.nn.gelu(self.dense_h_to_4h(x_BxTxD), approximate=False)
    return self.dense_4h_to_h(h_BxTxF)


class Block(nnx.Module):
  """One GPT-NeoX layer with the parallel residual: x + attn(ln1(x)) + mlp(ln2(x))."""

  def __init__(self, cfg: PythiaConfig, *, rngs: nnx.Rngs):
    self.input_layernorm = _layer_norm(cfg, rngs)
    self.post_attention_layernorm = _layer_norm(cfg, rngs)
    self.attention = Attention(cfg, rngs=rngs)
    self.mlp = MLP(cfg, rngs=rngs)

  def __call__(self, x_BxTxD: jax.Array) -> jax.Array:
    attn_BxTxD = self.attention(self.input_layernorm(x_BxTxD))
    mlp_BxTxD = self.mlp(self.post_attention_layernorm(x_BxTxD))
    # The residual stream stays fp32; branch outputs are cast up before the sum.
    return x_BxTxD + attn_BxTxD.astype(x_BxTxD.dtype) + mlp_BxTxD.astype(x_BxTxD.dtype)


class Pythia(nnx.Module):
  """The GPT-NeoX decoder: embed_in -> L Blocks -> final_layer_norm -> embed_out.

  `layers` is a single Block whose parameters have a leading axis of size L (layer i is
  index i of every leaf).
  """

  def __init__(self, cfg: PythiaConfig, *, rngs: nnx.Rngs):
    self.remat = cfg.remat
    self.embed_in = nnx.Embed(
        cfg.vocab_size, cfg.d_model, embedding_init=_normal(cfg.init_std), rngs=rngs
    )

    # The L blocks are one Block whose parameters carry a leading layer axis (created by
    # nnx.vmap over split rngs, applied by nnx.scan): init and compile time do not grow with L.
    @nnx.split_rngs(splits=cfg.num_layers)
    @nnx.vmap(in_axes=(0,), out_axes=0)
    def make_layers(rngs: nnx.Rngs) -> Block:
      return Block(cfg, rngs=rngs)

    self.layers = make_layers(rngs)
    self.final_layer_norm = _layer_norm(cfg, rngs)
    # Untied head, no bias; logits accumulate to fp32 even with bf16 operands.
    self.embed_out = nnx.Linear(
        cfg.d_model,
        cfg.vocab_size,
        use_bias=False,
        kernel_init=_normal(cfg.init_std),
        dtype=jnp.dtype(cfg.compute_dtype),
        preferred_element_type=jnp.float32,
        rngs=rngs,
    )

  def hidden(self, tokens_BxT: jax.Array) -> jax.Array:
    """The final-LayerNorm output that embed_out maps to logits: (B, T, D) float32."""
    x_BxTxD = self.embed_in(tokens_BxT)  # fp32 (the param dtype)

    def apply_block(block: Block, x_BxTxD):
      return block(x_BxTxD)

    if self.remat == "block":  # keep only each block's input for the backward pass
      apply_block = nnx.remat(apply_block)

    @nnx.scan(in_axes=(nnx.Carry, 0), out_axes=nnx.Carry, unroll=SCAN_UNROLL)
    def run_layers(x_BxTxD, block: Block):
      return apply_block(block, x_BxTxD)

    x_BxTxD = run_layers(x_BxTxD, self.layers)
    return self.final_layer_norm(x_BxTxD)

  def __call__(self, tokens_BxT: jax.Array) -> jax.Array:
    """Next-token logits.

    Args:
      tokens_BxT: integer token ids in [0, V), shape (B, T).

    Returns:
      Logits of shape (B, T, V), float32; logits[:, t] depends only on tokens[:, :t + 1].
    """
    logits_BxTxV = self.embed_out(self.hidden(tokens_BxT))
    return logits_BxTxV.astype(jnp.float32)
