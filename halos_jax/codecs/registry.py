"""The named codecs: `make(name, **params)`."""
from __future__ import annotations

from halos_jax.codecs import base
from halos_jax.codecs import casts
from halos_jax.codecs import quantize
from halos_jax.codecs import sparse

CODEC_NAMES = ("none", "bf16", "fp8", "int8", "int4", "topk")


def make(name: str, *, block_size: int = 64, fraction: float = 0.01,
         feedback: bool | None = None) -> base.Codec:
  """The named codec.

  Args:
    name: one of CODEC_NAMES.
    block_size: values per scale of the blockwise quantisers (int8, int4).
    fraction: topk: the fraction of each leaf's entries sent (at least one).
    feedback: wrap in error feedback (default: True for topk, False otherwise).

  Raises:
    ValueError: an unknown name or a parameter out of range.
  """
  builders = {"none": base.identity, "bf16": casts.bf16, "fp8": casts.fp8,
              "int8": lambda: quantize.blockwise_int(8, block_size),
              "int4": lambda: quantize.blockwise_int(4, block_size),
              "topk": lambda: sparse.topk(fraction)}
  if name not in builders:
    raise ValueError(f"codec {name!r}: must be one of {', '.join(CODEC_NAMES)}")
  codec = builders[name]()
  if feedback if feedback is not None else name == "topk":
    codec = base.error_feedback(codec)
  return codec


def from_config(exchange, key: str) -> base.Codec | None:
  """The codec `exchange[key]` of a run config's `exchange` block (None: absent or 'none')."""
  if exchange is None or exchange.get(key, "none") == "none":
    return None
  return make(exchange[key], block_size=int(exchange.block_size),
              fraction=float(exchange.fraction), feedback=exchange.get("error_feedback"))


def round_trip(codec: base.Codec):
  """decode(encode(tree)) of a stateless codec: what the receiver of `tree` gets."""
  def apply(tree):
    payload, _ = codec.encode(tree, codec.init(tree))
    return codec.decode(payload, tree)
  return apply
