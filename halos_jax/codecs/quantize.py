"""Blockwise symmetric integer quantisation (int8, int4) with one fp32 scale per block.

A leaf is flattened and cut into blocks of `block_size` values (the last one shorter); each
block is scaled by s = max|x| / q_max (q_max = 127 for int8, 7 for int4) and rounded to the
nearest integer in [-q_max, q_max]: |x - decode| <= s / 2 = max|block| / (2 q_max). int4 values
travel two per byte.
"""
from __future__ import annotations

import math

import jax.numpy as jnp

from halos_jax.codecs.base import Codec, leafwise, size


def _blocks(x, block_size):
  flat = x.reshape(-1).astype(jnp.float32)
  n = flat.shape[0]
  nb = -(-n // block_size)
  return jnp.pad(flat, (0, nb * block_size - n)).reshape(nb, block_size), n


def _pack4(q):
  """int values in [-7, 7] -> uint8, two per byte (low nibble first)."""
  u = (q + 8).astype(jnp.uint8)
  if u.shape[0] % 2:
    u = jnp.concatenate([u, jnp.zeros((1,), jnp.uint8)])
  return u[0::2] | (u[1::2] << 4)


def _unpack4(packed, n):
  lo, hi = packed & 0xF, packed >> 4
  return jnp.stack([lo, hi], axis=1).reshape(-1)[:n].astype(jnp.int32) - 8


def blockwise_int(bits: int, block_size: int = 64) -> Codec:
  """int8 (bits=8) or int4 (bits=4) with per-block fp32 scales."""
  if bits not in (4, 8):
    raise ValueError(f"bits={bits}: must be 4 or 8")
  if not isinstance(block_size, int) or block_size < 1:
    raise ValueError(f"block_size={block_size!r}: must be a positive integer")
  q_max = 2 ** (bits - 1) - 1

  def encode_leaf(x):
    blocks, n = _blocks(x, block_size)
    absmax = jnp.max(jnp.abs(blocks), axis=1)
    scale = jnp.where(absmax > 0, absmax / q_max, 1.0).astype(jnp.float32)
    q = jnp.clip(jnp.round(blocks / scale[:, None]), -q_max, q_max).reshape(-1)[:n]
    values = q.astype(jnp.int8) if bits == 8 else _pack4(q.astype(jnp.int32))
    return values, scale

  def decode_leaf(payload, like):
    values, scale = payload
    n = size(like)
    q = values.astype(jnp.int32) if bits == 8 else _unpack4(values, n)
    nb = scale.shape[0]
    q = jnp.pad(q, (0, nb * block_size - n)).reshape(nb, block_size).astype(jnp.float32)
    return (q * scale[:, None]).reshape(-1)[:n].reshape(like.shape).astype(like.dtype)

  def bytes_leaf(x):
    n = size(x)
    values = n if bits == 8 else -(-n // 2)
    return values + 4 * math.ceil(n / block_size)

  return leafwise(f"int{bits}", encode_leaf, decode_leaf, bytes_leaf)
