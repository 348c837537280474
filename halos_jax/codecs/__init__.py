"""halos_jax.codecs: compressed exchanges, the Optax way (docs/codecs.md).

A codec is a `Codec` of pure functions over pytrees: `init(tree) -> state`,
`encode(tree, state) -> (payload, state)`, `decode(payload, like) -> tree` and
`payload_bytes(like) -> int`, the exact size of the payload (values, indices, scales) for a tree
of that structure and shapes, whatever its values. `make(name, **params)` builds the named ones.
"""
from halos_jax.codecs.base import Codec
from halos_jax.codecs.base import ErrorFeedbackState
from halos_jax.codecs.base import error_feedback
from halos_jax.codecs.base import identity
from halos_jax.codecs.casts import bf16
from halos_jax.codecs.casts import fp8
from halos_jax.codecs.quantize import blockwise_int
from halos_jax.codecs.registry import CODEC_NAMES
from halos_jax.codecs.registry import from_config
from halos_jax.codecs.registry import make
from halos_jax.codecs.registry import round_trip
from halos_jax.codecs.sparse import topk

__all__ = [
    "CODEC_NAMES",
    "Codec",
    "ErrorFeedbackState",
    "bf16",
    "blockwise_int",
    "error_feedback",
    "fp8",
    "from_config",
    "identity",
    "make",
    "round_trip",
    "topk",
]
