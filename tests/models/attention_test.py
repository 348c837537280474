"""Tests for pythia.causal_attention: query-blocked attention equals the T x T softmax attention
(float64 numpy reference), causal masking stays exact, and its custom (flash-attention) VJP
gives the gradients of JAX's autodiff."""
import jax
import jax.numpy as jnp
import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from halos_jax.models import pythia


def _reference(q, k, v):
  """float64 naive attention: softmax over s <= t of q_t . k_s / sqrt(K), times v."""
  q, k, v = (np.asarray(a, np.float64) for a in (q, k, v))
  T, K = q.shape[1], q.shape[-1]
  s = np.einsum("bthk,bshk->bhts", q, k) / np.sqrt(K)
  s = np.where(np.tril(np.ones((T, T), bool))[None, None], s, -np.inf)
  p = np.exp(s - s.max(-1, keepdims=True))
  p /= p.sum(-1, keepdims=True)
  return np.einsum("bhts,bshk->bthk", p, v)


def _qkv(seed, B, T, H, K):
  r = np.random.default_rng(seed)
  return tuple(jnp.asarray(r.normal(size=(B, T, H, K)), jnp.float32) for _ in range(3))


@settings(max_examples=10)
@given(T=st.integers(1, 24), block=st.integers(0, 30), seed=st.integers(0, 2**31 - 1))
def test_blocked_equals_reference(T, block, seed, monkeypatch_module):
  # block 0 (and any block >= T) is the single T x T block; others split the queries.
  monkeypatch_module.setattr(pythia, "ATTENTION_BLOCK", block)
  q, k, v = _qkv(seed, 2, T, 3, 8)
  got = pythia.causal_attention(q, k, v, jnp.float32)
  assert got.shape == (2, T, 3, 8) and got.dtype == jnp.float32
  # fp32 vs float64 on O(1) N(0, 1) inputs with <= 40 keys: rounding ~1e-6; 1e-5 bound.
  np.testing.assert_allclose(got, _reference(q, k, v), atol=1e-5, rtol=0)


@pytest.fixture(scope="module")
def monkeypatch_module():
  mp = pytest.MonkeyPatch()
  yield mp
  mp.undo()


@pytest.mark.parametrize("block", [0, 4, 7])
def test_causal_masking_is_exact(block, monkeypatch):
  monkeypatch.setattr(pythia, "ATTENTION_BLOCK", block)
  T, j = 16, 9
  q, k, v = _qkv(0, 1, T, 2, 8)
  before = pythia.causal_attention(q, k, v, jnp.float32)
  # Changing keys and values at position j must leave outputs at t < j bit-identical: masked
  # probabilities are exactly 0 (or never computed), so the same arithmetic runs for t < j.
  k2, v2 = k.at[:, j:].add(3.0), v.at[:, j:].add(-5.0)
  after = pythia.causal_attention(q, k2, v2, jnp.float32)
  np.testing.assert_array_equal(after[:, :j], before[:, :j])
  assert not np.allclose(after[:, j:], before[:, j:])


def _plain_attention(q, k, v):
  """The T x T softmax attention differentiated by JAX's autodiff (no custom VJP)."""
  T, K = q.shape[1], q.shape[-1]
  s = jnp.einsum("bthk,bshk->bhts", q, k) / np.sqrt(K)
  s = jnp.where(jnp.tril(jnp.ones((T, T), bool))[None, None], s, -jnp.inf)
  return jnp.einsum("bhts,bshk->bthk", jax.nn.softmax(s, axis=-1), v)


@settings(max_examples=10, deadline=None)
@given(T=st.integers(1, 20), block=st.integers(0, 24), seed=st.integers(0, 2**31 - 1))
def test_custom_vjp_gradients_equal_autodiff(T, block, seed, monkeypatch_module):
  # The flash-attention backward (rowsum over K, 1/l folded into dO) against autodiff of the
  # plain softmax attention, for a non-linear loss so every output's cotangent differs.
  monkeypatch_module.setattr(pythia, "ATTENTION_BLOCK", block)
  q, k, v = _qkv(seed, 2, T, 3, 8)
  w = jnp.asarray(np.random.default_rng(seed + 1).normal(size=(2, T, 3, 8)), jnp.float32)

  def loss(fn):
    return lambda q, k, v: jnp.sum(jnp.sin(fn(q, k, v)) * w)

  got = jax.grad(loss(lambda q, k, v: pythia.causal_attention(q, k, v, jnp.float32)),
                 argnums=(0, 1, 2))(q, k, v)
  want = jax.grad(loss(_plain_attention), argnums=(0, 1, 2))(q, k, v)
  for name, a, b in zip("qkv", got, want):
    # Both fp32, different association (e.g. (e v) / l vs (e / l) v): ~1e-6 on O(1) values.
    np.testing.assert_allclose(a, b, atol=2e-5, rtol=0, err_msg=f"d{name}")


def test_custom_vjp_gradient_is_zero_for_future_keys():
  # dK and dV at positions after the last query that depends on them are exactly 0: with
  # only the output at t = 4 in the loss, keys and values at s > 4 get no gradient.
  q, k, v = _qkv(3, 1, 12, 2, 8)

  def loss(q, k, v):
    return jnp.sum(pythia.causal_attention(q, k, v, jnp.float32)[:, 4])

  _, dk, dv = jax.grad(loss, argnums=(0, 1, 2))(q, k, v)
  assert np.all(np.asarray(dk)[:, 5:] == 0) and np.all(np.asarray(dv)[:, 5:] == 0)
  assert np.any(np.asarray(dk)[:, :5] != 0) and np.any(np.asarray(dv)[:, :5] != 0)


def test_bfloat16_compute_close_to_float32():
  q, k, v = _qkv(2, 2, 40, 2, 16)
  want = pythia.causal_attention(q, k, v, jnp.float32)
  cast = [a.astype(jnp.bfloat16) for a in (q, k, v)]
  got = pythia.causal_attention(*cast, jnp.bfloat16)
  assert got.dtype == jnp.bfloat16
  # bf16 inputs and probabilities (8 significant bits): errors ~1e-2 on O(1) outputs.
  np.testing.assert_allclose(np.asarray(got, np.float32), want, atol=6e-2, rtol=0)
