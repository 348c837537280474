"""Fragments of a model: which entries each of P fragments holds (streaming algorithms).

Strided layers, as Streaming DiLoCo does: transformer layer l is in fragment l mod P
(docs/algorithms.md 2.7). Plain Python + numpy on (path, shape) pairs, so the scheduler and
`config_lib.resolve` (bytes per fragment) use the same rule as the server rules' masks
(`fragment_masks`, which imports JAX when called).
"""
from __future__ import annotations

from collections.abc import Sequence

import numpy as np

def even_split(total_bytes: int, num_fragments: int) -> list[int]:
  """`total_bytes` cut into `num_fragments` sizes differing by at most one byte (the schedule's
  fragment sizes when the model's own are unknown, e.g. runlocal's Pythia-70M-sized messages)."""
  p = int(num_fragments)
  return [total_bytes // p + (1 if f < total_bytes % p else 0) for f in range(p)]


LAYERS_KEY = "layers"  # the stacked transformer layers (leading axis = layer)
INPUT_KEYS = ("embed_in",)  # leaves that join fragment 0 (the input side)


def fragment_of(path: Sequence[str], shape: Sequence[int], num_fragments: int,
                num_layers: int | None):
  """Which fragment each part of one parameter leaf belongs to.

  Strided layers, as the published method: layer l is in fragment l mod P. Leaves of the stacked
  `layers` are cut along their leading (layer) axis; the input embedding (INPUT_KEYS) joins
  fragment 0 and every other leaf outside the layers (final norm, output head) joins the
  fragment of the last layer. A tree without stacked layers (e.g. the quadratic's one vector)
  is cut along each leaf's leading axis, entry i in fragment i mod P; a scalar leaf is in
  fragment 0.

  Args:
    path: the leaf's keys from the root, e.g. ('layers', 'mlp', 'dense_4h_to_h', 'kernel').
    shape: its shape.
    num_fragments: P.
    num_layers: the number of stacked layers, or None for a tree without them.

  Returns:
    An int (the whole leaf's fragment) or an int64 array over the leading axis.
  """
  p = int(num_fragments)
  if num_layers is not None:
    if path and path[0] == LAYERS_KEY:
      return np.arange(int(shape[0]), dtype=np.int64) % p
    return 0 if path and path[0] in INPUT_KEYS else (num_layers - 1) % p
  if len(shape) == 0:
    return 0
  return np.arange(int(shape[0]), dtype=np.int64) % p


def layer_count(leaves) -> int | None:
  """The stacked layers' count from (path, shape) pairs, or None when there are none."""
  counts = {int(shape[0]) for path, shape in leaves if path and path[0] == LAYERS_KEY}
  if not counts:
    return None
  if len(counts) != 1:
    raise ValueError(f"stacked layer leaves disagree on the layer count: {sorted(counts)}")
  return counts.pop()


def fragment_elements(leaves, num_fragments: int) -> list[int]:
  """Elements of each fragment, from the leaves' (path, shape) pairs.

  Raises:
    ValueError: a fragment would be empty (more fragments than layers, or than entries).
  """
  p = int(num_fragments)
  layers = layer_count(leaves)
  out = [0] * p
  for path, shape in leaves:
    size = int(np.prod(shape, dtype=np.int64))
    where = fragment_of(path, shape, p, layers)
    if isinstance(where, int):
      out[where] += size
    else:
      per_row = size // max(1, int(shape[0]))
      for f, n in enumerate(np.bincount(where, minlength=p).tolist()):
        out[f] += n * per_row
  empty = [f for f, n in enumerate(out) if n == 0]
  if empty:
    what = f"{layers} layers" if layers is not None else "the parameters' leading axes"
    raise ValueError(f"fragments={p}: fragment(s) {empty} would be empty ({what}); use at most "
                     f"as many fragments as layers")
  return out



def fragment_masks(params, num_fragments: int) -> list:
  """One boolean tree per fragment, broadcastable against `params` (`fragment_of`): True
  where an entry belongs to that fragment. Imports JAX (the rules use it).

  Raises:
    ValueError: a fragment would be empty.
  """
  import jax  # pylint: disable=g-import-not-at-top
  flat, treedef = jax.tree_util.tree_flatten_with_path(params)
  leaves = [(tuple(str(getattr(k, "key", k)) for k in path), np.shape(x)) for path, x in flat]
  fragment_elements(leaves, num_fragments)  # every fragment has something
  layers = layer_count(leaves)
  out = []
  for p in range(num_fragments):
    masks = []
    for path, shape in leaves:
      where = fragment_of(path, shape, num_fragments, layers)
      if isinstance(where, int):
        masks.append(np.bool_(where == p))
      else:
        masks.append((where == p).reshape((-1,) + (1,) * (len(shape) - 1)))
    out.append(jax.tree.unflatten(treedef, masks))
  return out
