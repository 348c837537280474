"""Tests for halos_jax.optim.delayed_nesterov: the exact identities of docs/algorithms.md 2.2.

Property tests run eagerly (op by op), so two computations with the same float32 operations in
the same order give bit-identical results; jit is covered in optim_transforms_test.py.
"""
import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import optim_testlib as tl
from halos_jax.optim import delayed_nesterov
from halos_jax.optim import delayed_nesterov_from_base_lr

lrs = st.floats(1e-3, 1.0)
betas = st.floats(0.0, 0.9)
buffer_sizes = st.integers(1, 6)


@st.composite
def activations(draw, N):
  """c in [0, 1/N], endpoints included."""
  return draw(st.one_of(st.just(0.0), st.just(1.0 / N), st.floats(0.0, 1.0 / N)))


def run(opt, params, grads):
  """Applies `opt` to the pseudo-gradients in order; returns the params and updates after each."""
  state = opt.init(params)
  xs, us = [], []
  for g in grads:
    u, state = opt.update(g, state, params)
    params = optax.apply_updates(params, u)
    xs.append(params)
    us.append(u)
  return xs, us


def test_hand_worked_three_updates():
  # lr 0.5, beta 0.9, N 2, c 0.25, g = 1 every time (by hand, docs/algorithms.md 2.2):
  #  t=0 (inside block, m=0):  u = -0.5 * (0.25*0.9*0 + 1/2)              = -0.25
  #  t=1 (boundary): A = 2, m = 0.9*0 + 2/2 = 1, coef = 1 - 0.25*2 + 0.25 = 0.75
  #                            u = -0.5 * (0.75*0.9*1 + 1/2) = -0.5 * 1.175 = -0.5875
  #  t=2 (inside, m=1, A=0):   u = -0.5 * (0.25*0.9*1 + 1/2) = -0.5 * 0.725 = -0.3625
  opt = delayed_nesterov(0.5, 0.9, 2, c=0.25)
  _, us = run(opt, jnp.zeros(3), [jnp.ones(3)] * 3)
  # rtol 1e-6: a handful of float32 roundings (~1e-7 each) on decimals not exact in binary.
  np.testing.assert_allclose(np.stack(us)[:, 0], [-0.25, -0.5875, -0.3625], rtol=1e-6)
  state = opt.init(jnp.zeros(3))
  for _ in range(3):
    _, state = opt.update(jnp.ones(3), state)
  assert int(state.count) == 3
  # After t=2 the accumulator holds only g_3 = 1, the momentum is still 1 (exact small ints).
  np.testing.assert_array_equal(state.accumulator, np.ones(3))
  np.testing.assert_array_equal(state.momentum, np.ones(3))


@settings(max_examples=15)
@given(spec=tl.tree_specs(), lr=lrs, beta=st.floats(0.0, 0.99), T=st.integers(1, 12),
       seed=tl.seeds())
def test_n1_c0_is_optax_nesterov_sgd(spec, lr, beta, T, seed):
  rng = np.random.default_rng(seed)
  x0 = tl.make_tree(spec, rng)
  grads = [tl.make_tree(spec, rng) for _ in range(T)]
  xs_dn, us_dn = run(delayed_nesterov(lr, beta, 1, c=0.0), x0, grads)
  xs_sgd, us_sgd = run(optax.sgd(lr, momentum=beta, nesterov=True), x0, grads)
  # Exact: with N = 1, c = 0 every step is a boundary and DN performs the same float32 ops as
  # optax's trace (m = beta*m + g; u = -lr*(g + beta*m)): A/1 = g and 1.0*beta = beta exactly.
  for a, b in zip(xs_dn + us_dn, xs_sgd + us_sgd):
    tl.assert_trees_equal(a, b)


@settings(max_examples=15)
@given(spec=tl.tree_specs(), lr=lrs, N=buffer_sizes, data=st.data(), T=st.integers(1, 12),
       seed=tl.seeds())
def test_beta0_is_sgd_with_step_lr_over_n(spec, lr, N, data, T, seed):
  c = data.draw(activations(N))
  rng = np.random.default_rng(seed)
  x0 = tl.make_tree(spec, rng)
  grads = [tl.make_tree(spec, rng) for _ in range(T)]
  _, us_dn = run(delayed_nesterov(lr, 0.0, N, c=c), x0, grads)
  _, us_sgd = run(optax.sgd(lr / N), x0, grads)
  # Per update: DN rounds g/N and lr*(g/N), SGD rounds lr/N and (lr/N)*g (the momentum term is
  # an exact 0): at most ~3 float32 roundings apart -> rtol 4 ulps (EPS32 = 1 ulp at 1.0).
  for a, b in zip(us_dn, us_sgd):
    tl.assert_trees_close(a, b, rtol=4 * tl.EPS32)


@settings(max_examples=15)
@given(spec=tl.tree_specs(), lr=lrs, beta=betas, N=buffer_sizes, blocks=st.integers(1, 4),
       seed=tl.seeds())
def test_c0_block_boundaries_are_nesterov_sgd_on_block_means(spec, lr, beta, N, blocks, seed):
  rng = np.random.default_rng(seed)
  x0 = tl.make_tree(spec, rng)
  grads = [tl.make_tree(spec, rng) for _ in range(N * blocks)]
  xs_dn, _ = run(delayed_nesterov(lr, beta, N, c=0.0), x0, grads)
  # Block means in float64, rounded once to float32.
  means = [jax.tree.map(lambda *g: jnp.asarray(np.mean(np.stack(g), axis=0), jnp.float32),
                        *grads[k * N:(k + 1) * N]) for k in range(blocks)]
  xs_ref, _ = run(optax.sgd(lr, momentum=beta, nesterov=True), x0, means)
  # Same math, different rounding: DN subtracts lr*g_i/N N times, the reference lr*mean once.
  # Each of the T = N*blocks updates costs a few ulps of the largest magnitude S (x or m); allow
  # 16*T ulps of S.
  S = max(1.0, max(tl.max_abs(x) for x in xs_ref) / (1 - beta))
  for k in range(blocks):
    tl.assert_trees_close(xs_dn[(k + 1) * N - 1], xs_ref[k], atol=16 * N * blocks * tl.EPS32 * S)


@settings(max_examples=15)
@given(spec=tl.tree_specs(), lr=lrs, beta=st.floats(0.1, 0.99), N=st.integers(1, 8),
       data=st.data(), seed=tl.seeds())
def test_momentum_coefficients_in_one_block_sum_to_one(spec, lr, beta, N, data, seed):
  """Derivation: inside a block the first N-1 updates use c*beta*m, the boundary update uses
  (1 - c*N + c)*beta*m, so the coefficients sum to (N-1)*c + 1 - c*N + c = 1 for every c.
  Measured: start a block (t = 0) with momentum M != 0 and feed g = 0, so each update is only
  the momentum term, u_i = -lr * coef_i * beta * m_i, with m_i the momentum the update used
  (the state's momentum after update i)."""
  c = data.draw(activations(N))
  rng = np.random.default_rng(seed)
  M = tl.make_tree(spec, rng, low=0.5, high=1.0)
  M = jax.tree.map(lambda m: m * jnp.asarray(rng.choice([-1.0, 1.0], size=m.shape),
                                             jnp.float32), M)
  opt = delayed_nesterov(lr, beta, N, c=c)
  state = opt.init(M)._replace(momentum=M)
  zeros = jax.tree.map(jnp.zeros_like, M)
  coefs = []
  for _ in range(N):
    u, state = opt.update(zeros, state)
    ratio = jax.tree.map(lambda u, m: np.asarray(u, np.float64) / (-lr * beta * np.asarray(m)),
                         u, state.momentum)
    coefs.append(np.concatenate([np.ravel(r) for r in jax.tree.leaves(ratio)]))
  coefs = np.stack(coefs)  # (N, number of scalars)
  expected = np.array([c] * (N - 1) + [1 - c * N + c])[:, None]
  # Each ratio is u / (lr*beta*m) with u from ~3 float32 roundings: 8 ulps relative, plus an
  # absolute 8 ulps for coefficients that are 0 (c = 0).
  np.testing.assert_allclose(coefs, np.broadcast_to(expected, coefs.shape), rtol=8 * tl.EPS32,
                             atol=8 * tl.EPS32)
  # The sum over the block is 1: N coefficients, each within 8 ulps.
  np.testing.assert_allclose(coefs.sum(axis=0), 1.0, atol=8 * N * tl.EPS32)


@settings(max_examples=15)
@given(spec=tl.tree_specs(), lr=lrs, beta=betas, N=buffer_sizes, data=st.data(),
       blocks=st.integers(0, 3), seed=tl.seeds())
def test_any_c_equals_c0_one_update_before_each_boundary(spec, lr, beta, N, data, blocks, seed):
  # Consequence of the coefficients summing to 1: the momentum m_k of boundary k is applied with
  # (1 - c*N + c) at that boundary and c at each of the next N-1 updates, i.e. fully once the
  # update before the next boundary is done; m_k does not depend on c. So after T = k*N + N - 1
  # updates DN(c) and DN(0) have moved the parameters by the same amount.
  c = data.draw(activations(N))
  rng = np.random.default_rng(seed)
  x0 = tl.make_tree(spec, rng)
  T = blocks * N + N - 1
  grads = [tl.make_tree(spec, rng) for _ in range(max(T, 1))]
  xs_c, _ = run(delayed_nesterov(lr, beta, N, c=c), x0, grads[:T])
  xs_0, _ = run(delayed_nesterov(lr, beta, N, c=0.0), x0, grads[:T])
  if T == 0:
    return
  # Different split of the same momentum over updates: a few ulps of the largest magnitude S per
  # update, 16*T ulps allowed.
  S = max(1.0, max(tl.max_abs(x) for x in xs_0) / (1 - beta))
  tl.assert_trees_close(xs_c[-1], xs_0[-1], atol=16 * T * tl.EPS32 * S)


def test_schedule_is_evaluated_at_the_count_before_the_update():
  # beta = 0, N = 1: u_t = -lr(t) * g with t the number of earlier updates. lr(t) = 0.5*(t+1),
  # g = 2: u = -1, -2, -3 (exact small integers in float32).
  opt = delayed_nesterov(lambda t: 0.5 * (t + 1), 0.0, 1)
  _, us = run(opt, jnp.zeros(2), [jnp.full(2, 2.0)] * 3)
  np.testing.assert_array_equal(np.stack(us)[:, 0], [-1.0, -2.0, -3.0])


@settings(max_examples=15)
@given(spec=tl.tree_specs(), eta=st.floats(1e-3, 0.2), beta=betas, N=buffer_sizes,
       T=st.integers(1, 10), seed=tl.seeds())
def test_from_base_lr_is_lr_eta_times_n(spec, eta, beta, N, T, seed):
  rng = np.random.default_rng(seed)
  x0 = tl.make_tree(spec, rng)
  grads = [tl.make_tree(spec, rng) for _ in range(T)]
  xs_a, _ = run(delayed_nesterov_from_base_lr(eta, beta, N), x0, grads)
  xs_b, _ = run(delayed_nesterov(eta * N, beta, N), x0, grads)
  # Exact: the same transform with the same Python float lr = eta * N.
  tl.assert_trees_equal(xs_a[-1], xs_b[-1])
  # Inside the first block (no momentum yet) each update is plain SGD with step eta:
  # u = -(eta*N) * (g/N); ~3 roundings -> rtol 4 ulps.
  _, us = run(delayed_nesterov_from_base_lr(eta, beta, N), x0, grads[:N - 1])
  for u, g in zip(us, grads):
    tl.assert_trees_close(u, jax.tree.map(lambda g: -eta * g, g), rtol=4 * tl.EPS32)


def test_from_base_lr_accepts_a_schedule():
  # eta(t) = 0.25 for all t, N = 2, beta = 0: u = -(0.25*2) * g/2 = -0.25 * g, g = 4 -> -1 exactly.
  opt = delayed_nesterov_from_base_lr(lambda t: 0.25 * jnp.ones([]), 0.0, 2)
  _, us = run(opt, jnp.zeros(1), [jnp.full(1, 4.0)] * 2)
  np.testing.assert_array_equal(np.stack(us)[:, 0], [-1.0, -1.0])


@pytest.mark.parametrize("kwargs, error, match", [
    (dict(learning_rate=0.1, beta=0.9, buffer_size=0), ValueError, "buffer_size"),
    (dict(learning_rate=0.1, beta=0.9, buffer_size=2.0), TypeError, "buffer_size"),
    (dict(learning_rate=0.1, beta=0.9, buffer_size=True), TypeError, "buffer_size"),
    (dict(learning_rate=0.1, beta=1.0, buffer_size=2), ValueError, "beta"),
    (dict(learning_rate=0.1, beta=-0.1, buffer_size=2), ValueError, "beta"),
    (dict(learning_rate=0.1, beta=0.9, buffer_size=2, c=0.51), ValueError, "c must be a number"),
    (dict(learning_rate=0.1, beta=0.9, buffer_size=2, c=-0.01), ValueError, "c must be a number"),
    (dict(learning_rate=0.0, beta=0.9, buffer_size=2), ValueError, "learning_rate"),
    (dict(learning_rate=-1.0, beta=0.9, buffer_size=2), ValueError, "learning_rate"),
    (dict(learning_rate=float("nan"), beta=0.9, buffer_size=2), ValueError, "learning_rate"),
    (dict(learning_rate="0.1", beta=0.9, buffer_size=2), TypeError, "learning_rate"),
])
def test_argument_validation(kwargs, error, match):
  with pytest.raises(error, match=match):
    delayed_nesterov(**kwargs)


def test_argument_validation_base_lr():
  with pytest.raises(ValueError, match="eta"):
    delayed_nesterov_from_base_lr(0.0, 0.9, 2)
  with pytest.raises(ValueError, match="buffer_size"):
    delayed_nesterov_from_base_lr(0.1, 0.9, 0)


def test_valid_edges_are_accepted():
  delayed_nesterov(0.1, 0.0, 1, c=1.0)  # c = 1/N with N = 1
  delayed_nesterov(0.1, 0.999, 3, c=1 / 3)
  delayed_nesterov(optax.constant_schedule(0.1), 0.5, 4)
