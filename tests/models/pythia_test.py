"""Tests for halos_jax.models.pythia: rotary embeddings, causal masking, bf16 compute, and that
the functional view equals the NNX module."""
import jax
import jax.numpy as jnp
import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import models_testlib
from halos_jax import models


@pytest.fixture(scope="module")
def tiny():
  cfg = models.get_model_config("tiny")
  return cfg, models_testlib.tiny_params(0), models_testlib.jitted(cfg).apply


# ---------------------------------------------------------------------------------------------
# Rotary embeddings

def _rope_numpy(x_K, position, rotary_ndims, base):
  """Independent float64 reference: dims (i, i + R/2) form the complex number x_i + i x_{i+R/2},
  multiplied by exp(i * position * base^(-2i/R)); dims >= R pass through."""
  half = rotary_ndims // 2
  theta = base ** (-np.arange(half) * 2.0 / rotary_ndims)
  z = (x_K[:half] + 1j * x_K[half:rotary_ndims]) * np.exp(1j * position * theta)
  return np.concatenate([z.real, z.imag, x_K[rotary_ndims:]])


def _rope(x_K, position, rotary_ndims=16, base=10000.0):
  cos, sin = models.rotary_cos_sin(jnp.array([position]), rotary_ndims, base)
  return models.apply_rotary(jnp.asarray(x_K, jnp.float32)[None, None, None, :], cos, sin)[0, 0, 0]


@settings(max_examples=30)
@given(position=st.integers(0, 2047), seed=st.integers(0, 2**31 - 1))
def test_rotary_matches_complex_rotation(position, seed):
  x_K = np.random.default_rng(seed).normal(size=64)  # head_dim 64, R = 16 (pythia-70m)
  want = _rope_numpy(x_K, position, 16, 10000.0)
  # fp32 angles: |p * theta| <= 2047 rad has a rounding error up to ulp(2048)/2 = 1.2e-4 rad, so
  # each rotated value may be off by ~1.2e-4 * |x| (|x| < 6 here); the pass-through is exact.
  np.testing.assert_allclose(_rope(x_K, position), want, atol=2e-3, rtol=0)
  np.testing.assert_array_equal(_rope(x_K, position)[16:], x_K[16:].astype(np.float32))


def test_rotary_position_zero_is_identity():
  x_K = np.random.default_rng(0).normal(size=32).astype(np.float32)
  # cos 0 = 1 and sin 0 = 0 exactly, so x * 1 - y * 0 = x bit for bit.
  np.testing.assert_array_equal(_rope(x_K, 0, rotary_ndims=8), x_K)


@settings(max_examples=40)
@given(m=st.integers(0, 255), n=st.integers(0, 255), shift=st.integers(0, 255),
       seed=st.integers(0, 2**31 - 1))
def test_rotary_scores_depend_only_on_relative_position(m, n, shift, seed):
  # q_m . k_n over the rotated dims = Re(sum z_q conj(z_k) e^{i (m - n) theta}): a function of
  # m - n only, so shifting both positions by s leaves it unchanged.
  rng = np.random.default_rng(seed)
  q_K, k_K = rng.normal(size=(2, 64))
  R = 16
  before = jnp.dot(_rope(q_K, m)[:R], _rope(k_K, n)[:R])
  after = jnp.dot(_rope(q_K, m + shift)[:R], _rope(k_K, n + shift)[:R])
  # Positions < 512: fp32 angle error <= ulp(512)/2 = 3e-5 rad per pair, so each of the 16
  # products moves by <= ~6e-5 |q_i||k_i| (< 6e-5 * 16 for N(0,1) draws): 5e-3 covers the sum.
  np.testing.assert_allclose(after, before, atol=5e-3, rtol=0)
  # The float64 reference says the same about the exact values.
  def ref(p, x):
    return _rope_numpy(x, p, R, 10000.0)[:R]
  np.testing.assert_allclose(ref(m + shift, q_K) @ ref(n + shift, k_K),
                             ref(m, q_K) @ ref(n, k_K), atol=1e-9)


def test_rotary_pct_zero_is_identity():
  cos, sin = models.rotary_cos_sin(jnp.arange(4), 0, 10000.0)
  x = jnp.ones((1, 4, 2, 8))
  np.testing.assert_array_equal(models.apply_rotary(x, cos, sin), x)


# ---------------------------------------------------------------------------------------------
# Forward pass

def test_apply_shapes_and_dtype(tiny):
  cfg, params, apply = tiny
  logits = apply(params, jnp.zeros((2, 64), jnp.int32))
  assert logits.shape == (2, 64, cfg.vocab_size)
  assert logits.dtype == jnp.float32
  assert bool(jnp.all(jnp.isfinite(logits)))


@settings(max_examples=20)
@given(j=st.integers(0, 63), new_token=st.integers(0, 255), seed=st.integers(0, 2**31 - 1))
def test_causal_masking_is_exact(tiny, j, new_token, seed):
  _, params, apply = tiny
  tokens = np.random.default_rng(seed).integers(0, 256, size=(2, 64), dtype=np.int32)
  changed = tokens.copy()
  changed[:, j] = new_token
  before, after = np.asarray(apply(params, tokens)), np.asarray(apply(params, changed))
  # Exact: masked scores are replaced by the same constant, exp(masked - max) = 0 exactly and
  # 0 * v adds nothing, so positions < j run identical arithmetic on identical inputs.
  np.testing.assert_array_equal(after[:, :j], before[:, :j])
  if (tokens[:, j] != new_token).all():
    assert not np.array_equal(after[:, j], before[:, j])  # the changed position itself moves


def test_init_statistics():
  # Documented init: N(0, init_std^2) for matrices reading the residual stream, wang_init
  # 2 / (L sqrt(D)) for attention.dense and dense_4h_to_h, zero biases, LayerNorm (1, 0).
  params = models_testlib.tiny_params(0)
  layer = params["layers"]  # both layers stacked
  wang = 2.0 / (2 * np.sqrt(128))  # = 0.0884
  for w, std in [(params["embed_in"]["embedding"], 0.02), (params["embed_out"]["kernel"], 0.02),
                 (layer["attention"]["qkv"]["kernel"], 0.02),
                 (layer["mlp"]["dense_h_to_4h"]["kernel"], 0.02),
                 (layer["attention"]["dense"]["kernel"], wang),
                 (layer["mlp"]["dense_4h_to_h"]["kernel"], wang)]:
    # >= 32k samples: the sample std is within 3% of the true std with overwhelming probability.
    w = np.asarray(w)
    assert np.std(w) == pytest.approx(std, rel=0.03)
    assert abs(np.mean(w)) < 0.05 * std
  np.testing.assert_array_equal(layer["attention"]["qkv"]["bias"], 0.0)
  np.testing.assert_array_equal(layer["input_layernorm"]["scale"], 1.0)
  np.testing.assert_array_equal(params["final_layer_norm"]["bias"], 0.0)


# ---------------------------------------------------------------------------------------------
# bf16 compute

def test_bfloat16_compute_close_to_float32():
  # The tiny HF fixture's weights give O(1) logits (max ~4.7), a harder case than our small init.
  hf_config, state_dict, ids, _ = models_testlib.load_hf_fixture("hf_tiny")
  cfg32 = models.config_from_hf(hf_config)
  cfg16 = models.config_from_hf(hf_config, compute_dtype="bfloat16")
  params = models.params_from_hf_state_dict(state_dict, cfg32)
  f32, f16 = models_testlib.jitted(cfg32), models_testlib.jitted(cfg16)

  # Parameters are stored in fp32 whatever the compute dtype, and bf16 shares fp32's tree.
  abstract16 = jax.eval_shape(f16.lm.init, 0)
  assert jax.tree.structure(abstract16) == jax.tree.structure(params)
  assert {x.dtype for x in jax.tree.leaves(abstract16)} == {jnp.dtype("float32")}

  tokens = ids[:, :64]
  logits32, logits16 = f32.apply(params, tokens), f16.apply(params, tokens)
  assert logits16.dtype == jnp.float32
  # bf16 keeps 8 significant bits (unit roundoff 2^-9 = 0.2%); a few roundings per layer add up
  # to ~0.5% of the logit scale (measured 0.47%): allow 2%.
  logits32, logits16 = np.asarray(logits32), np.asarray(logits16)
  assert np.max(np.abs(logits16 - logits32)) < 0.02 * np.max(np.abs(logits32))

  batch = ids[:, :65]
  loss32, g32 = f32.value_and_grad(params, batch)
  loss16, g16 = f16.value_and_grad(params, batch)
  # The loss averages 128 terms whose errors mostly cancel (measured ~5e-4): allow 1e-2.
  assert abs(float(loss16) - float(loss32)) < 1e-2
  assert {x.dtype for x in jax.tree.leaves(g16)} == {jnp.dtype("float32")}
  g32, g16 = jax.tree.map(np.asarray, g32), jax.tree.map(np.asarray, g16)
  num = sum(np.sum((a - b) ** 2) for a, b in zip(jax.tree.leaves(g32), jax.tree.leaves(g16)))
  den = sum(np.sum(a ** 2) for a in jax.tree.leaves(g32))
  # Relative L2 error of the whole gradient: a few bf16 roundoffs (measured ~1%): allow 5%.
  assert (num / den) ** 0.5 < 0.05
