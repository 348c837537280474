"""Casts: bf16 (round to nearest even) and fp8 e4m3 with one fp32 scale per leaf."""
from __future__ import annotations

import jax.numpy as jnp

from halos_jax.codecs.base import Codec, leafwise, size

FP8 = jnp.float8_e4m3fn
FP8_MAX = 448.0  # the largest finite e4m3fn value


def bf16() -> Codec:
  """2 bytes per value; relative error <= 2^-8 for normal numbers."""
  return leafwise("bf16", lambda x: x.astype(jnp.bfloat16),
                  lambda p, like: p.astype(like.dtype), lambda x: 2 * size(x))


def _fp8_encode(x):
  absmax = jnp.max(jnp.abs(x)) if x.size else jnp.zeros((), jnp.float32)
  scale = jnp.where(absmax > 0, absmax / FP8_MAX, 1.0).astype(jnp.float32)
  return (x.astype(jnp.float32) / scale).astype(FP8), scale


def fp8() -> Codec:
  """e4m3 after scaling each leaf by max|x| / 448 (no overflow): 1 byte per value + a 4-byte
  scale per leaf; relative error <= 2^-4 (absolute <= 2^-10 scale below e4m3's normal range)."""
  return leafwise("fp8", _fp8_encode,
                  lambda p, like: (p[0].astype(jnp.float32) * p[1]).astype(like.dtype),
                  lambda x: size(x) + 4)
