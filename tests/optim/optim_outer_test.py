"""Tests for halos_jax.optim.outer: DiLoCo's outer Nesterov SGD and the pseudo-gradient helpers."""
import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import optim_testlib as tl
from halos_jax.optim import diloco_outer
from halos_jax.optim import mean_over_leading_axis
from halos_jax.optim import mean_pseudo_gradient
from halos_jax.optim import pseudo_gradient
from halos_jax.optim import worker_sgd


@settings(max_examples=15)
@given(spec=tl.tree_specs(), lr=st.floats(1e-3, 1.0), momentum=st.floats(0.0, 0.99),
       T=st.integers(1, 8), seed=tl.seeds())
def test_diloco_outer_is_optax_nesterov_sgd(spec, lr, momentum, T, seed):
  rng = np.random.default_rng(seed)
  x_a = x_b = tl.make_tree(spec, rng)
  opt_a, opt_b = diloco_outer(lr, momentum), optax.sgd(lr, momentum=momentum, nesterov=True)
  s_a, s_b = opt_a.init(x_a), opt_b.init(x_b)
  for _ in range(T):
    g = tl.make_tree(spec, rng)
    u_a, s_a = opt_a.update(g, s_a, x_a)
    u_b, s_b = opt_b.update(g, s_b, x_b)
    x_a, x_b = optax.apply_updates(x_a, u_a), optax.apply_updates(x_b, u_b)
  # Exact: for float32 parameters diloco_outer is that optax chain (the float32 wrapper casts
  # float32 to float32), so the ops are identical.
  tl.assert_trees_equal(x_a, x_b)
  tl.assert_trees_equal(s_a, s_b)


@settings(max_examples=15)
@given(spec=tl.tree_specs(), W=st.integers(1, 5), seed=tl.seeds())
def test_outer_sgd_lr1_no_momentum_is_model_averaging(spec, W, seed):
  rng = np.random.default_rng(seed)
  x = tl.make_tree(spec, rng)
  ends = [tl.make_tree(spec, rng) for _ in range(W)]
  opt = diloco_outer(1.0, 0.0)
  g = mean_pseudo_gradient([pseudo_gradient(x, e) for e in ends])
  u, _ = opt.update(g, opt.init(x), x)
  new_x = optax.apply_updates(x, u)
  average = jax.tree.map(lambda *e: np.mean(np.stack(e).astype(np.float64), axis=0), *ends)
  # x - mean(x - x_w) vs mean(x_w): W + 3 float32 roundings of values <= 2 (|x|, |x_w| <= 1),
  # so |error| <= (W + 3) * 2 ulps(1) -> atol 2 * (W + 3) * EPS32.
  tl.assert_trees_close(new_x, average, atol=2 * (W + 3) * tl.EPS32)


@settings(max_examples=15)
@given(spec=tl.tree_specs(), W=st.integers(1, 5), lr=st.floats(1e-3, 1.0), seed=tl.seeds())
def test_diloco_h1_sgd_workers_outer_sgd1_is_minibatch_sgd(spec, W, lr, seed):
  # One local plain-SGD step per worker from x: x_w = x - lr*g_w, pseudo-gradient lr*g_w; outer
  # SGD(1): x - mean_w(lr*g_w) = x - lr*mean_w(g_w), synchronous minibatch SGD (docs/algorithms.md
  # 2.6).
  rng = np.random.default_rng(seed)
  x = tl.make_tree(spec, rng)
  grads = [tl.make_tree(spec, rng) for _ in range(W)]
  worker, outer = worker_sgd(), diloco_outer(1.0, 0.0)
  ends = []
  for g in grads:
    u, _ = worker.update(g, worker.init(x), x, learning_rate=lr)
    ends.append(optax.apply_updates(x, u))
  u, _ = outer.update(mean_pseudo_gradient([pseudo_gradient(x, e) for e in ends]),
                      outer.init(x), x)
  diloco_x = optax.apply_updates(x, u)
  mean_g = jax.tree.map(lambda *g: np.mean(np.stack(g).astype(np.float64), axis=0), *grads)
  sgd_x = jax.tree.map(lambda x, g: np.asarray(x, np.float64) - lr * g, x, mean_g)
  # About W + 5 float32 roundings of values <= 2 -> atol 2 * (W + 5) ulps(1).
  tl.assert_trees_close(diloco_x, sgd_x, atol=2 * (W + 5) * tl.EPS32)


@settings(max_examples=15)
@given(spec=tl.tree_specs(), W=st.integers(1, 5), seed=tl.seeds(),
       dtype=st.sampled_from([jnp.float32, jnp.bfloat16]))
def test_pseudo_gradient_and_means(spec, W, seed, dtype):
  rng = np.random.default_rng(seed)
  x = tl.make_tree(spec, rng, dtype)
  ends = [tl.make_tree(spec, rng, dtype) for _ in range(W)]
  gs = [pseudo_gradient(x, e) for e in ends]
  # pseudo_gradient is one subtraction in the parameter dtype: exact vs the same subtraction.
  tl.assert_trees_equal(gs[0], jax.tree.map(lambda a, b: a - b, x, ends[0]))
  mean = mean_pseudo_gradient(gs)
  # The list form stacks and reuses the stacked form: exact.
  tl.assert_trees_equal(mean, mean_over_leading_axis(jax.tree.map(lambda *g: jnp.stack(g), *gs)))
  # Reference: float64 mean rounded once to the leaf dtype. The implementation sums in float32
  # (W <= 5 terms of size <= 2) then rounds to the dtype: within 1 ulp of the dtype at the value,
  # plus the float32 sum error (negligible for bf16, 8 ulps(2) for float32).
  ref = jax.tree.map(lambda *g: np.mean(np.stack(g).astype(np.float64), axis=0), *gs)
  dtype_eps = float(jnp.finfo(dtype).eps)
  tl.assert_trees_close(mean, ref, rtol=dtype_eps, atol=16 * tl.EPS32)
  assert all(leaf.dtype == dtype for leaf in jax.tree.leaves(mean))


def test_helpers_reject_bad_input():
  with pytest.raises(ValueError, match="at least one tree"):
    mean_pseudo_gradient([])
  with pytest.raises(ValueError, match="tree structure"):
    mean_pseudo_gradient([{"a": jnp.ones(2)}, {"b": jnp.ones(2)}])
  with pytest.raises(ValueError, match="shape"):
    pseudo_gradient({"a": jnp.ones(2)}, {"a": jnp.ones(3)})
  with pytest.raises(ValueError, match="leading"):
    mean_over_leading_axis({"a": jnp.ones((2, 3)), "b": jnp.ones((3, 3))})
  with pytest.raises(ValueError, match="momentum"):
    diloco_outer(0.7, 1.0)
  with pytest.raises(ValueError, match="learning_rate"):
    diloco_outer(0.0, 0.9)
