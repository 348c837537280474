"""The codec interface, the identity codec and error feedback."""
from __future__ import annotations

from typing import Any, Callable, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
import optax

Tree = Any
Payload = Any


class Codec(NamedTuple):
  """An exchange codec (pure functions; state is a pytree, e.g. an error-feedback residual).

  Attributes:
    init: tree -> state (of the sender).
    encode: (tree, state) -> (payload, state): what travels, and the sender's new state.
    decode: (payload, like) -> tree: the receiver's reconstruction; `like` gives the structure,
      shapes and dtypes (arrays or jax.ShapeDtypeStruct).
    payload_bytes: like -> int: the payload's exact size in bytes, independent of the values.
    name: for messages and summaries.
  """
  init: Callable[[Tree], Any]
  encode: Callable[[Tree, Any], tuple[Payload, Any]]
  decode: Callable[[Payload, Tree], Tree]
  payload_bytes: Callable[[Tree], int]
  name: str


def size(x) -> int:
  return int(np.prod(np.shape(x), dtype=np.int64))


def leafwise(name: str, encode_leaf, decode_leaf, bytes_leaf) -> Codec:
  """A stateless codec applied leaf by leaf (payload: one entry per leaf, in leaf order)."""

  def encode(tree, state):
    return [encode_leaf(x) for x in jax.tree.leaves(tree)], state

  def decode(payload, like):
    leaves, treedef = jax.tree.flatten(like)
    return jax.tree.unflatten(treedef, [decode_leaf(p, x) for p, x in zip(payload, leaves)])

  def payload_bytes(like):
    return int(sum(bytes_leaf(x) for x in jax.tree.leaves(like)))

  return Codec(lambda tree: optax.EmptyState(), encode, decode, payload_bytes, name)


def identity() -> Codec:
  """`none`: the tree itself (its own dtype: 4 bytes per fp32 value)."""
  return leafwise("none", lambda x: x, lambda p, like: p,
                  lambda x: size(x) * jnp.dtype(x.dtype).itemsize)


class ErrorFeedbackState(NamedTuple):
  residual: Tree  # what the sender still owes: the inputs so far minus what was sent
  inner: Any


def error_feedback(codec: Codec) -> Codec:
  """`codec` with error feedback: each message carries the input plus the residual of the
  previous ones, and the sender keeps what the codec dropped: y = x + r, send codec(y),
  r' = y - decode(codec(y)). So the sum of everything sent plus the residual is the sum of the
  inputs (exactly when the codec sends entries unchanged or not at all, as top-k does)."""

  def init(tree):
    return ErrorFeedbackState(jax.tree.map(jnp.zeros_like, tree), codec.init(tree))

  def encode(tree, state):
    y = jax.tree.map(lambda x, r: x + r, tree, state.residual)
    payload, inner = codec.encode(y, state.inner)
    sent = codec.decode(payload, y)
    return payload, ErrorFeedbackState(jax.tree.map(lambda a, b: a - b, y, sent), inner)

  return Codec(init, encode, codec.decode, codec.payload_bytes, codec.name + "+ef")
