"""Top-k sparsification: each leaf sends its k largest-magnitude entries (values + int32
indices), k = max(1, ceil(fraction * size)); the rest is dropped (kept by error feedback)."""
from __future__ import annotations

import math

import jax
import jax.numpy as jnp

from halos_jax.codecs.base import Codec, leafwise, size


def topk(fraction: float = 0.01) -> Codec:
  if not 0.0 < float(fraction) <= 1.0:
    raise ValueError(f"fraction={fraction!r}: must be in (0, 1]")

  def k_of(x) -> int:
    return max(1, math.ceil(float(fraction) * size(x))) if size(x) else 0

  def encode_leaf(x):
    flat = x.reshape(-1)
    _, idx = jax.lax.top_k(jnp.abs(flat), k_of(x))
    return flat[idx], idx.astype(jnp.int32)

  def decode_leaf(payload, like):
    values, idx = payload
    flat = jnp.zeros((size(like),), like.dtype).at[idx].set(values.astype(like.dtype))
    return flat.reshape(like.shape)

  def bytes_leaf(x):
    return k_of(x) * (jnp.dtype(x.dtype).itemsize + 4)

  return leafwise(f"topk{float(fraction):g}", encode_leaf, decode_leaf, bytes_leaf)
