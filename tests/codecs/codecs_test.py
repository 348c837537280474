"""Exchange codecs (halos_jax/codecs): hand-derived error bounds, exact payload sizes, error
feedback's conservation, and `none` as the identity."""
import math

import hypothesis.extra.numpy as hnp
import numpy as np
import pytest
from hypothesis import given, settings, strategies as st

import jax
import jax.numpy as jnp
from halos_jax import codecs

# A tree like a model's: a matrix, a vector whose length is not a multiple of the block, a
# scalar-sized leaf.
SHAPES = {"w": (3, 5), "b": (130,), "s": (1,)}


def _tree(rng, scale=1.0):
  return {k: jnp.asarray(rng.normal(size=s) * scale, jnp.float32) for k, s in SHAPES.items()}


def _roundtrip(codec, tree):
  payload, _ = jax.jit(codec.encode)(tree, codec.init(tree))
  return payload, codec.decode(payload, tree)


def _nbytes(payload):
  return sum(np.asarray(x).nbytes for x in jax.tree.leaves(payload))


# Hand counts for SHAPES (15 + 130 + 1 = 146 values; blocks of 64: 1 + 3 + 1 = 5 scales).
HAND_BYTES = {
    "none": 4 * 146,
    "bf16": 2 * 146,
    "fp8": 146 + 4 * 3,  # a byte per value, an fp32 scale per leaf
    "int8": 146 + 4 * 5,
    "int4": (8 + 65 + 1) + 4 * 5,  # ceil(15/2) + ceil(130/2) + ceil(1/2) bytes
    "topk": 8 * (1 + 2 + 1),  # k = ceil(0.01 n) >= 1: 1, 2, 1 entries of value + int32 index
}


@pytest.mark.parametrize("name", codecs.CODEC_NAMES)
def test_payload_bytes_by_hand_and_as_sent(name):
  codec = codecs.make(name)
  tree = _tree(np.random.default_rng(0))
  assert codec.payload_bytes(tree) == HAND_BYTES[name]
  shapes = jax.eval_shape(lambda: tree)
  assert codec.payload_bytes(shapes) == HAND_BYTES[name]  # from shapes alone
  payload, _ = _roundtrip(codec, tree)
  assert _nbytes(payload) == HAND_BYTES[name]  # what really travels


def test_none_is_the_identity_bitwise():
  tree = _tree(np.random.default_rng(1))
  _, out = _roundtrip(codecs.make("none"), tree)
  for k in tree:
    np.testing.assert_array_equal(np.asarray(out[k]), np.asarray(tree[k]))


floats = hnp.arrays(np.float32, st.integers(1, 300),
                    elements=st.floats(-1e4, 1e4, width=32, allow_subnormal=False))


@settings(max_examples=60, deadline=None)
@given(floats)
def test_bf16_relative_error(x):
  _, out = _roundtrip(codecs.make("bf16"), {"x": jnp.asarray(x)})
  err = np.abs(np.asarray(out["x"], np.float64) - x)
  assert np.all(err <= 2.0 ** -8 * np.abs(x.astype(np.float64)))


@settings(max_examples=60, deadline=None)
@given(floats)
def test_fp8_error(x):
  """e4m3: 3 mantissa bits (half an ulp: 2^-4 relative); below its normal range the spacing is
  2^-9 of the scale (half: 2^-10); the fp32 divide and multiply add 2^-24 each."""
  _, out = _roundtrip(codecs.make("fp8"), {"x": jnp.asarray(x)})
  s = max(np.max(np.abs(x)) / 448.0, 0.0) or 1.0
  err = np.abs(np.asarray(out["x"], np.float64) - x)
  bound = (2.0 ** -4 + 2.0 ** -20) * np.abs(x.astype(np.float64)) + 2.0 ** -10 * s * (1 + 1e-6)
  assert np.all(err <= bound)


@pytest.mark.parametrize("bits", [8, 4])
@settings(max_examples=40, deadline=None)
@given(x=floats, block=st.sampled_from([1, 7, 64]))
def test_blockwise_error_is_half_a_step(bits, x, block):
  """|x - decode| <= s / 2, s = max|block| / q_max (q_max 127 or 7), up to fp32 rounding."""
  codec = codecs.make(f"int{bits}", block_size=block)
  _, out = _roundtrip(codec, {"x": jnp.asarray(x)})
  q_max = 2 ** (bits - 1) - 1
  n = x.size
  padded = np.pad(np.abs(x.astype(np.float64)), (0, -n % block)).reshape(-1, block)
  step = np.repeat(padded.max(axis=1) / q_max, block)[:n]
  err = np.abs(np.asarray(out["x"], np.float64) - x)
  assert np.all(err <= step / 2 * (1 + 1e-5) + 1e-30)


def test_int4_packs_two_values_per_byte_and_round_trips_levels():
  x = jnp.arange(-7, 8, dtype=jnp.float32)  # every level once: exact (scale 1)
  payload, out = _roundtrip(codecs.make("int4", block_size=64), {"x": x})
  values, scale = payload[0]
  assert values.dtype == jnp.uint8 and values.shape == (8,) and float(scale[0]) == 1.0
  np.testing.assert_array_equal(np.asarray(out["x"]), np.asarray(x))


def test_topk_sends_the_largest_entries_exactly():
  x = jnp.asarray([0.5, -3.0, 0.1, 2.0, -0.2, 1.0, 0.0, 0.3, -0.4, 0.05], jnp.float32)
  codec = codecs.make("topk", fraction=0.3, feedback=False)
  payload, out = _roundtrip(codec, {"x": x})
  np.testing.assert_array_equal(np.asarray(out["x"]),
                                [0, -3.0, 0, 2.0, 0, 1.0, 0, 0, 0, 0])
  assert sorted(np.asarray(payload[0][1]).tolist()) == [1, 3, 5]


@settings(max_examples=40, deadline=None)
@given(st.integers(1, 8), st.integers(0, 2 ** 31 - 1))
def test_error_feedback_conserves_the_sum(steps, seed):
  """Integer-valued inputs (every sum exact in fp32): what was sent plus the final residual is
  exactly the sum of the inputs, for top-k with error feedback."""
  rng = np.random.default_rng(seed)
  codec = codecs.make("topk", fraction=0.05)
  xs = [{k: jnp.asarray(rng.integers(-50, 50, size=s), jnp.float32) for k, s in SHAPES.items()}
        for _ in range(steps)]
  state = codec.init(xs[0])
  sent = jax.tree.map(jnp.zeros_like, xs[0])
  encode = jax.jit(codec.encode)
  for x in xs:
    payload, state = encode(x, state)
    sent = jax.tree.map(jnp.add, sent, codec.decode(payload, x))
  total = jax.tree.map(lambda *a: sum(a), *xs)
  for k in SHAPES:
    np.testing.assert_array_equal(np.asarray(sent[k] + state.residual[k]),
                                  np.asarray(total[k]))
  # Without feedback the dropped entries are lost (the test can tell).
  plain = codecs.make("topk", fraction=0.05, feedback=False)
  lost = plain.decode(plain.encode(xs[0], plain.init(xs[0]))[0], xs[0])
  assert any(not np.array_equal(np.asarray(lost[k]), np.asarray(xs[0][k])) for k in SHAPES)


def test_bad_names_and_parameters_are_errors():
  with pytest.raises(ValueError, match="codec 'gzip': must be one of none, bf16"):
    codecs.make("gzip")
  with pytest.raises(ValueError, match="fraction=0.0"):
    codecs.make("topk", fraction=0.0)
  with pytest.raises(ValueError, match="block_size=0"):
    codecs.make("int8", block_size=0)


def test_payload_sizes_of_pythia_70m():
  """What each codec sends for Pythia-70M's 70,426,624 fp32 parameters (the closing note)."""
  from halos_jax import models  # pylint: disable=g-import-not-at-top
  lm = models.make_language_model(models.get_model_config("pythia-70m"))
  like = jax.eval_shape(lambda: lm.init(0))
  n = 70_426_624
  sizes = {name: codecs.make(name).payload_bytes(like) for name in codecs.CODEC_NAMES}
  assert sizes["none"] == 4 * n
  assert sizes["bf16"] == 2 * n
  leaves = jax.tree.leaves(like)
  assert sizes["fp8"] == n + 4 * len(leaves)
  blocks = sum(math.ceil(x.size / 64) for x in leaves)
  assert sizes["int8"] == n + 4 * blocks
  assert sizes["int4"] == sum(math.ceil(x.size / 2) for x in leaves) + 4 * blocks
  assert sizes["topk"] == 8 * sum(max(1, math.ceil(0.01 * x.size)) for x in leaves)
  print({k: f"{v:,}" for k, v in sizes.items()})
