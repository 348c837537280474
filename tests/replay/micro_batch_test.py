"""Micro-batches, rematerialisation and bf16 compute against the defaults (stated tolerances).

- micro-batches: the accumulated gradient is the mean of equal parts' gradients, i.e. the
  whole-batch gradient up to fp32 summation order: equal to 1e-6 of the largest entry; a whole
  round (4 AdamW steps) to 2e-4 in relative L2 norm (AdamW amplifies rounding in entries whose
  gradient is near zero);
- remat='block' recomputes the same operations: loss and gradient equal to 1e-6;
- compute_dtype='bfloat16' (fp32 parameters and optimizer state): loss within 2 %, gradient
  cosine similarity above 0.99.
"""
import numpy as np
import pytest

import jax
import jax.numpy as jnp
from halos_jax import models
from halos_jax import optim
from halos_jax.replay import rounds
from halos_jax.replay.problem import Problem, lm_worker_optimizer
from halos_jax.validation import ConfigError, validate_config
from tiny_configs import load_config

B, T = 8, 32


def _lm(**overrides):
  cfg = models.get_model_config("tiny", **overrides)
  return models.make_language_model(cfg)


def _batch(seed=0, n=B):
  return jax.random.randint(jax.random.key(seed), (n, T + 1), 0, 256, dtype=jnp.int32)


def _flat(tree):
  return np.concatenate([np.ravel(np.asarray(x, np.float64)) for x in jax.tree.leaves(tree)])


def _close(a, b, tol):
  a, b = _flat(a), _flat(b)
  np.testing.assert_allclose(a, b, rtol=0, atol=tol * np.max(np.abs(b)))


@pytest.mark.parametrize("parts", [2, 4, 8])
def test_accumulated_gradient_equals_whole_batch(parts):
  lm = _lm()
  params, batch = lm.init(0), _batch()
  loss1, g1 = rounds.accumulated_value_and_grad(lm.loss, 1)(params, batch)
  lossm, gm = jax.jit(rounds.accumulated_value_and_grad(lm.loss, parts))(params, batch)
  assert float(lossm) == pytest.approx(float(loss1), rel=1e-6)
  _close(gm, g1, 1e-6)
  # The test can fail: half the batch is a different gradient.
  _, half = jax.value_and_grad(lm.loss)(params, batch[: B // 2])
  assert np.max(np.abs(_flat(half) - _flat(g1))) > 1e-3 * np.max(np.abs(_flat(g1)))


def test_micro_batched_round_equals_whole_batch_round():
  lm = _lm()
  config = load_config("halos")
  problem = Problem(name="tiny", init_params=None, loss=lm.loss,
                    worker_optimizer=lm_worker_optimizer(config.worker, lm),
                    learning_rate=None, data=None, tokens_per_sequence=T)
  params = lm.init(0)
  state = problem.worker_optimizer.init(params)
  h = 4
  batches = jnp.stack([_batch(i) for i in range(h)])
  lrs = jnp.full((h,), 1e-3, jnp.float32)
  whole = jax.jit(rounds.make_round_fn(problem, h, 1))(params, state, batches, lrs, h)
  micro = jax.jit(rounds.make_round_fn(problem, h, 4))(params, state, batches, lrs, h)
  a, b = _flat(micro[0]), _flat(whole[0])
  print("relative L2 error of the pseudo-gradient:", np.linalg.norm(a - b) / np.linalg.norm(b))
  # AdamW normalises each entry by its own gradient scale: entries whose gradient is near zero
  # move by up to lr whatever the rounding, so the round is compared in norm, not entry-wise.
  assert np.linalg.norm(a - b) <= 2e-4 * np.linalg.norm(b)
  assert float(micro[2]) == pytest.approx(float(whole[2]), rel=1e-6)


def test_remat_block_equals_none():
  plain, remat = _lm(), _lm(remat="block")
  params, batch = plain.init(0), _batch()
  l0, g0 = jax.jit(jax.value_and_grad(plain.loss))(params, batch)
  l1, g1 = jax.jit(jax.value_and_grad(remat.loss))(params, batch)
  assert float(l1) == pytest.approx(float(l0), rel=1e-6)
  _close(g1, g0, 1e-6)


def test_bfloat16_compute_close_to_float32():
  fp32, bf16 = _lm(), _lm(compute_dtype="bfloat16")
  params, batch = fp32.init(0), _batch()
  l0, g0 = jax.jit(jax.value_and_grad(fp32.loss))(params, batch)
  l1, g1 = jax.jit(jax.value_and_grad(bf16.loss))(params, batch)
  assert float(l1) == pytest.approx(float(l0), rel=2e-2)
  a, b = _flat(g1), _flat(g0)
  assert a.dot(b) / np.linalg.norm(a) / np.linalg.norm(b) > 0.99
  # Parameters and the optimizer state stay fp32.
  opt = optim.worker_adamw(decay_mask=bf16.decay_mask)
  assert {x.dtype for x in jax.tree.leaves((params, opt.init(params)))} <= {
      jnp.dtype(jnp.float32), jnp.dtype(jnp.int32)}


def test_micro_batch_must_divide_the_local_batch():
  config = load_config("halos")
  config.micro_batch = 3
  with pytest.raises(ConfigError, match=r"config.micro_batch=3: must be a divisor of "
                                        r"config.local_batch=4"):
    validate_config(config)
  config.micro_batch = 2
  validate_config(config)


def test_reference_configs_use_the_papers_micro_batches():
  for name in ("halos", "async_local_sgd", "diloco", "diloco_dynupd", "ddp"):
    c = load_config(name, None)
    assert (c.local_batch, c.micro_batch) == (64, 32)
    assert load_config(name).micro_batch is None  # runlocal: the whole local batch
