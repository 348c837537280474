"""Tests for pythia.causal_attention: query-blocked attention equals the T x T softmax attention
(float64 numpy reference), causal masking stays exact, and the remat variant has the same
values and gradients."""
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


def test_remat_same_values_and_gradients(monkeypatch):
  monkeypatch.setattr(pythia, "ATTENTION_BLOCK", 5)
  q, k, v = _qkv(1, 2, 13, 2, 8)

  def loss(q, k, v):
    return jnp.sum(jnp.sin(pythia.causal_attention(q, k, v, jnp.float32)))

  plain = jax.value_and_grad(loss, argnums=(0, 1, 2))(q, k, v)
  monkeypatch.setattr(pythia, "ATTENTION_REMAT", True)
  remat = jax.value_and_grad(loss, argnums=(0, 1, 2))(q, k, v)
  # Recomputation runs the same fp32 ops in the same order: equal up to 1e-6 (XLA may fuse
  # the recomputed forward differently).
  for a, b in zip(jax.tree.leaves(plain), jax.tree.leaves(remat)):
    np.testing.assert_allclose(a, b, atol=1e-6, rtol=0)
