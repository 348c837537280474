"""Tests for halos_jax.models.lm: the pure init/apply/loss view (loss arithmetic, determinism,
vmap over workers, input validation, orbax round trip)."""
import math

import jax
import jax.numpy as jnp
import numpy as np
import orbax.checkpoint as ocp
import pytest

import models_testlib
from halos_jax import models


@pytest.fixture(scope="module")
def tiny():
  cfg = models.get_model_config("tiny")
  return cfg, models_testlib.jitted(cfg), models_testlib.tiny_params(0)


def test_cross_entropy_by_hand():
  # Row 1: logits (0, ln 3), target 1: p = 3 / (1 + 3) = 3/4, loss -ln(3/4) = 0.2876821.
  # Row 2: logits (ln 2, ln 2), target 0: p = 1/2, loss ln 2 = 0.6931472.
  # Mean over the two positions: (0.2876821 + 0.6931472) / 2 = 0.4904146.
  logits = jnp.array([[[0.0, math.log(3.0)], [math.log(2.0), math.log(2.0)]]])
  targets = jnp.array([[1, 0]])
  # fp32 log-softmax of O(1) numbers: a few ulps of 1 (1.2e-7 each), so 1e-6.
  assert float(models.cross_entropy(logits, targets)) == pytest.approx(0.4904146, abs=1e-6)


def test_loss_is_uniform_when_head_is_zero(tiny):
  cfg, f, params = tiny
  zero_head = dict(params, embed_out={"kernel": jnp.zeros_like(params["embed_out"]["kernel"])})
  batch = jax.random.randint(jax.random.key(0), (2, 65), 0, cfg.vocab_size)
  loss, grads = f.value_and_grad(zero_head, batch)
  # All logits 0 -> softmax uniform over V = 256 -> loss = ln 256 = 5.5451774 for any targets
  # (fp32 logsumexp of zeros: within a few ulps of 5.5, so 1e-6).
  assert float(loss) == pytest.approx(math.log(256), abs=1e-6)
  # With a zero head nothing upstream can change the logits: those gradients are exactly 0.
  np.testing.assert_array_equal(grads["embed_in"]["embedding"], 0.0)


def test_loss_shifts_inputs_and_targets(tiny):
  cfg, f, params = tiny
  batch = np.random.default_rng(1).integers(0, cfg.vocab_size, size=(2, 65), dtype=np.int32)
  logits = np.asarray(f.apply(params, batch[:, :-1]), dtype=np.float64)
  # Reference in float64 numpy: inputs batch[:, :-1] predict targets batch[:, 1:].
  logz = np.log(np.exp(logits - logits.max(-1, keepdims=True)).sum(-1)) + logits.max(-1)
  picked = np.take_along_axis(logits, batch[:, 1:, None], axis=-1)[..., 0]
  want = float(np.mean(logz - picked))
  # fp32 log-softmax of |logits| < 2 over 256 classes, averaged: error ~1e-6; allow 1e-5.
  assert float(f.value_and_grad(params, batch)[0]) == pytest.approx(want, abs=1e-5)


def test_init_is_deterministic_fp32_and_seed_dependent(tiny):
  _, f, params = tiny
  jax.tree.map(np.testing.assert_array_equal, params, f.lm.init(0))
  assert {x.dtype for x in jax.tree.leaves(params)} == {jnp.dtype("float32")}
  other = f.lm.init(1)
  assert not np.array_equal(params["embed_in"]["embedding"], other["embed_in"]["embedding"])


def test_memoised_per_config():
  a = models.make_language_model(models.get_model_config("tiny"))
  assert models.make_language_model(models.get_model_config("tiny")) is a


def test_vmap_over_workers_matches_per_worker_calls(tiny):
  cfg, f, _ = tiny
  W = 3
  per_worker = [models_testlib.tiny_params(w) for w in range(W)]
  params_W = jax.tree.map(lambda *xs: jnp.stack(xs), *per_worker)
  batch_W = jax.random.randint(jax.random.key(2), (W, 2, 65), 0, cfg.vocab_size)
  losses_W, grads_W = jax.jit(jax.vmap(jax.value_and_grad(f.lm.loss)))(params_W, batch_W)
  for w in range(W):
    loss_w, grad_w = f.value_and_grad(per_worker[w], batch_W[w])
    # Batched matmuls run the same per-worker arithmetic (bit-identical on CPU today); the
    # tolerance only allows a backend to block a batched GEMM differently: 1e-5 relative.
    np.testing.assert_allclose(losses_W[w], loss_w, rtol=1e-5)
    jax.tree.map(lambda a, b, w=w: np.testing.assert_allclose(a[w], b, rtol=1e-5, atol=1e-7),
                 grads_W, grad_w)


def test_grad_is_finite_and_shaped_like_params(tiny):
  cfg, f, params = tiny
  batch = jax.random.randint(jax.random.key(3), (2, 65), 0, cfg.vocab_size)
  _, grads = f.value_and_grad(params, batch)
  assert jax.tree.structure(grads) == jax.tree.structure(params)
  grads = [np.asarray(g) for g in jax.tree.leaves(grads)]
  assert all(np.isfinite(g).all() for g in grads)
  # Every parameter gets signal (no dead branch): each leaf's gradient is nonzero somewhere.
  assert all(np.abs(g).max() > 0 for g in grads)


def test_input_errors(tiny):
  _, f, params = tiny
  lm = f.lm
  with pytest.raises(TypeError, match="integer dtype"):
    lm.apply(params, jnp.zeros((1, 4), jnp.float32))
  with pytest.raises(ValueError, match=r"shape \(batch, length\), got shape \(4,\)"):
    lm.apply(params, jnp.zeros((4,), jnp.int32))
  with pytest.raises(ValueError, match=r"length 257 must be in \[1, 256\]"):
    lm.apply(params, jnp.zeros((1, 257), jnp.int32))
  with pytest.raises(ValueError, match="length >= 2"):
    lm.loss(params, jnp.zeros((1, 1), jnp.int32))
  with pytest.raises(ValueError, match=r"length 258 must be in \[1, 257\]"):
    lm.loss(params, jnp.zeros((1, 258), jnp.int32))
  with pytest.raises(TypeError, match="integer array"):
    lm.apply(params, [[1, 2]])
  with pytest.raises(ValueError, match="do not match the parameter tree"):
    lm.apply({"embed_in": params["embed_in"]}, jnp.zeros((1, 4), jnp.int32))
  # Stacked worker params passed without vmap: named leaf, both shapes.
  stacked = jax.tree.map(lambda x: x[None], params)
  with pytest.raises(ValueError, match=r"embed_in/embedding has shape \(1, 256, 128\), expected "
                                       r"\(256, 128\)"):
    lm.apply(stacked, jnp.zeros((1, 4), jnp.int32))


def test_orbax_round_trip(tiny, tmp_path):
  # Plain dict of arrays with string keys: orbax restores the identical tree.
  _, _, params = tiny
  with ocp.StandardCheckpointer() as ckpt:
    ckpt.save(tmp_path / "params", params)
    ckpt.wait_until_finished()
    restored = ckpt.restore(tmp_path / "params")
  assert jax.tree.structure(restored) == jax.tree.structure(params)
  jax.tree.map(np.testing.assert_array_equal, restored, params)


@pytest.mark.parametrize("chunk", [16, 100, 111])
def test_chunked_head_cross_entropy_matches_the_full_logits(chunk):
  """Chunked loss = cross_entropy of the full logits, values and grads: 16 (a loop of 6 chunks
  and a ragged tail), 100 (a loop of one and a tail), 111 (one chunk, no loop)."""
  from halos_jax.models import lm  # pylint: disable=g-import-not-at-top
  n, d, v = 111, 8, 37  # 111 = 6 chunks of 16 + a tail of 15
  kh, kw, kt = jax.random.split(jax.random.key(3), 3)
  h = jax.random.normal(kh, (n, d), jnp.float32)
  w = jax.random.normal(kw, (d, v), jnp.float32)
  t = jax.random.randint(kt, (n,), 0, v)

  def full(h, w):
    return lm.cross_entropy((h @ w)[None], t[None])

  def chunked(h, w):
    return lm.head_cross_entropy(h, w, t, jnp.float32, chunk)

  want, (want_dh, want_dw) = jax.value_and_grad(full, argnums=(0, 1))(h, w)
  got, (got_dh, got_dw) = jax.value_and_grad(chunked, argnums=(0, 1))(h, w)
  np.testing.assert_allclose(got, want, rtol=2e-6)
  np.testing.assert_allclose(got_dh, want_dh, rtol=2e-5, atol=1e-7)
  np.testing.assert_allclose(got_dw, want_dw, rtol=2e-5, atol=1e-7)
  # The targets matter: the most likely tokens give a clearly lower loss.
  best = jnp.argmax(h @ w, axis=-1)
  assert float(lm.head_cross_entropy(h, w, best, jnp.float32, 16)) < float(want) - 1.0


def test_loss_chunk_tokens(monkeypatch):
  from halos_jax.models import lm  # pylint: disable=g-import-not-at-top
  monkeypatch.setattr(lm, "LOSS_CHUNK_LOGITS", 2**25)
  # 2^25 / 50,304 = 667.0...: the largest power of two below is 512 tokens (25.8M logits).
  assert lm.loss_chunk_tokens(2048, 50_304) == 512
  assert lm.loss_chunk_tokens(300, 50_304) == 300  # fewer tokens than a chunk: one chunk
  # Byte vocabulary: 2^25 / 256 = 131,072 tokens per chunk, so 8 x 256 tokens are one chunk.
  assert lm.loss_chunk_tokens(2048, 256) == 2048
  assert lm.loss_chunk_tokens(10, 2**26) == 1  # a vocabulary beyond the budget: token by token
  monkeypatch.setattr(lm, "LOSS_CHUNK_LOGITS", 0)
  assert lm.loss_chunk_tokens(2048, 50_304) == 0  # plain logits + cross_entropy


@pytest.mark.parametrize("budget", [0, 3 * 37, 2**25])
def test_loss_is_the_same_with_and_without_chunking(budget, monkeypatch):
  # budget 3 * 37 logits: 2-token chunks over the 2 x 7 = 14 targets of a V = 37 model.
  from halos_jax.models import lm  # pylint: disable=g-import-not-at-top
  cfg = models.get_model_config("tiny", vocab_size=37, num_layers=1, max_seq_len=16)
  model = lm.make_language_model(cfg)
  params = model.init(0)
  batch = jax.random.randint(jax.random.key(5), (2, 8), 0, 37)
  logits = model.apply(params, batch[:, :-1])
  want = lm.cross_entropy(logits, batch[:, 1:])
  monkeypatch.setattr(lm, "LOSS_CHUNK_LOGITS", budget)
  np.testing.assert_allclose(model.loss(params, batch), want, rtol=2e-6)
