"""Tests for halos_jax.optim.halos: the LPS/GPS state machines of docs/algorithms.md 2.6.

Most tests use an identity-like optimizer, DN with lr 1, beta 0, N 1 (u = -g exactly), and
small-integer pseudo-gradients, so all server arithmetic is exact in float32 and compared with ==.
"""
import functools

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import optim_testlib as tl
from halos_jax.optim import delayed_nesterov
from halos_jax.optim import gps_apply
from halos_jax.optim import gps_init
from halos_jax.optim import lps_init
from halos_jax.optim import lps_merge
from halos_jax.optim import lps_receive

IDENTITY = delayed_nesterov(1.0, 0.0, 1)  # u = -1.0 * (0*m + g/1) = -g, exact


def test_hand_worked_exchange_in_flight_update_is_not_in_next_delta():
  # K = 2, alpha = 0.25 (the reference), identity-like LPS and GPS optimizers, x0 = 0. By hand:
  #  g1 = 1 (3 steps):  x = -1, v = 1, no send.
  #  g2 = 2 (4 steps):  x = -3, v = 2 = vhat + K -> send Delta1 = 0 - (-3) = 3, reports 3+4 = 7.
  #  g3 = 4 (5 steps), exchange in flight: x = -7, v = 3, no send (3 != 0 + 2), 5 pending.
  #  GPS: xG = 0 - 3 = -3, steps 7. Merge (alpha weights xG):
  #       x = 0.75*(-7) + 0.25*(-3) = -6, xhat = -6, vhat = 3.   (reversed weights would give -4)
  #  g4 = 1 (1 step):   x = -7, v = 4, no send.
  #  g5 = 0.5 (2 steps): x = -7.5, v = 5 = 3 + 2 -> send Delta2 = -6 - (-7.5) = 1.5 = g4 + g5
  #                     (g3 is not in it), reports 5 + 1 + 2 = 8 (g3's steps are).
  #  GPS: xG = -3 - 1.5 = -4.5, steps 15.
  # All values are small dyadic numbers: exact in float32.
  receive = functools.partial(lps_receive, optimizer=IDENTITY, K=2)
  lps, gps = lps_init(jnp.zeros(1), IDENTITY), gps_init(jnp.zeros(1), IDENTITY)

  def recv(lps, g, steps):
    return receive(lps, jnp.full(1, g), steps)

  lps, due, _, rep = recv(lps, 1.0, 3)
  assert (bool(due), int(rep)) == (False, 0)
  lps, due, delta, rep = recv(lps, 2.0, 4)
  assert (bool(due), float(delta[0]), int(rep)) == (True, 3.0, 7)
  gps = gps_apply(gps, delta, rep, optimizer=IDENTITY)
  lps, due, _, rep = recv(lps, 4.0, 5)
  assert (bool(due), float(lps.params[0]), int(rep)) == (False, -7.0, 0)
  lps = lps_merge(lps, gps.params, 0.25)
  assert (float(lps.params[0]), float(lps.merge_params[0]), int(lps.merge_version)) == (
      -6.0, -6.0, 3)
  lps, due, _, rep = recv(lps, 1.0, 1)
  assert (bool(due), int(rep)) == (False, 0)
  lps, due, delta, rep = recv(lps, 0.5, 2)
  assert (bool(due), float(delta[0]), int(rep)) == (True, 1.5, 8)
  gps = gps_apply(gps, delta, rep, optimizer=IDENTITY)
  assert (float(gps.params[0]), int(gps.steps), int(gps.version)) == (-4.5, 15, 2)
  assert int(lps.pending_steps) == 0


@settings(max_examples=20)
@given(spec=tl.tree_specs(), K=st.integers(1, 4), L=st.integers(1, 12),
       alpha=st.sampled_from([0.0, 0.5, 1.0]), data=st.data(), seed=tl.seeds())
def test_protocol_deltas_steps_and_equality_trigger(spec, K, L, alpha, data, seed):
  """Drives one LPS and the GPS through L receives; each exchange returns after a random number
  d >= 0 of further receives (d = 0: before the next one). Checks, against bookkeeping of the
  spec: a Delta is due iff exactly K updates happened since the last merge (never while an
  exchange is in flight); Delta == the sum of the pseudo-gradients received since the last merge;
  the reported steps == all steps received since the last send (in-flight ones included); the
  merge formula. Exact: integers in [-8, 8], alpha in {0, 1/2, 1}, <= 12 merges -> every value is
  a multiple of 2^-12 below 2^7 in magnitude, 19 significant bits < 24."""
  rng = np.random.default_rng(seed)
  x0 = tl.make_tree(spec, rng, low=-8, high=8, integer=True)
  receive = functools.partial(lps_receive, optimizer=IDENTITY, K=K)
  lps, gps = lps_init(x0, IDENTITY), gps_init(x0, IDENTITY)
  since_merge, steps_since_send, returns_in = [], 0, None  # returns_in: receives until merge
  for _ in range(L):
    g = tl.make_tree(spec, rng, low=-8, high=8, integer=True)
    steps = data.draw(st.integers(1, 9))
    in_flight = returns_in is not None
    lps, due, delta, reported = receive(lps, g, steps)
    since_merge.append(g)
    steps_since_send += steps
    assert bool(due) == (len(since_merge) == K)
    if in_flight:
      assert not bool(due)  # equality trigger: no second send while one is in flight
    if bool(due):
      tl.assert_trees_equal(delta, jax.tree.map(lambda s, x: jnp.asarray(s, x.dtype),
                                                tl.tree_sum(since_merge), x0))
      assert int(reported) == steps_since_send
      steps_since_send = 0
      gps = gps_apply(gps, delta, reported, optimizer=IDENTITY)
      returns_in = data.draw(st.integers(0, 3))
    else:
      assert int(reported) == 0
    assert int(lps.pending_steps) == steps_since_send
    if returns_in is not None:
      if returns_in == 0:
        before = lps
        lps = lps_merge(lps, gps.params, alpha)
        expected = jax.tree.map(lambda x, xg: (1 - alpha) * x + alpha * xg, before.params,
                                gps.params)
        tl.assert_trees_equal(lps.params, expected)
        tl.assert_trees_equal(lps.merge_params, expected)
        assert int(lps.merge_version) == int(lps.version)
        since_merge, returns_in = [], None
      else:
        returns_in -= 1


@settings(max_examples=20)
@given(spec=tl.tree_specs(), K=st.integers(1, 5), L=st.integers(1, 15), seed=tl.seeds())
def test_without_merge_exactly_one_send(spec, K, L, seed):
  # Equality trigger: with the exchange never returning, only update K sends (a ">=" test would
  # send again at every later update).
  rng = np.random.default_rng(seed)
  x0 = tl.make_tree(spec, rng)
  lps = lps_init(x0, IDENTITY)
  sends = []
  for _ in range(L):
    lps, due, _, _ = lps_receive(lps, tl.make_tree(spec, rng), 1, optimizer=IDENTITY, K=K)
    sends.append(bool(due))
  assert sends == [i + 1 == K for i in range(L)]


@settings(max_examples=20)
@given(spec=tl.tree_specs(), dtype=st.sampled_from([jnp.float32, jnp.bfloat16]),
       alpha=st.floats(0.0, 1.0), seed=tl.seeds())
def test_merge_alpha_weights_the_global_model(spec, dtype, alpha, seed):
  rng = np.random.default_rng(seed)
  x, xg = tl.make_tree(spec, rng, dtype), tl.make_tree(spec, rng, dtype)
  lps = lps_init(x, IDENTITY)
  # alpha = 0 leaves x, alpha = 1 gives xG: exact (1*x + 0*xG and 0*x + 1*xG in float32, then a
  # lossless cast back).
  tl.assert_trees_equal(lps_merge(lps, xg, 0.0).params, x)
  tl.assert_trees_equal(lps_merge(lps, xg, 1.0).params, xg)
  merged = lps_merge(lps, xg, alpha)
  expected = jax.tree.map(
      lambda a, b: (1 - alpha) * np.asarray(a, np.float64) + alpha * np.asarray(b, np.float64),
      x, xg)
  # One rounding to the parameter dtype (float32 blend error ~3 ulps(1) is below that for bf16):
  # rtol = eps of the dtype, atol 4 ulps(1) of float32 for values near 0.
  tl.assert_trees_close(merged.params, expected, rtol=float(jnp.finfo(dtype).eps),
                        atol=4 * tl.EPS32)
  assert all(leaf.dtype == dtype for leaf in jax.tree.leaves(merged.params))


@settings(max_examples=15)
@given(spec=tl.tree_specs(), n=st.integers(1, 6), alpha=st.floats(0.0, 1.0), seed=tl.seeds())
def test_merge_does_not_touch_dn_state_or_pending_steps(spec, n, alpha, seed):
  rng = np.random.default_rng(seed)
  dn = delayed_nesterov(0.3, 0.9, 4, c=0.1)
  lps = lps_init(tl.make_tree(spec, rng), dn)
  for _ in range(n):
    lps, *_ = lps_receive(lps, tl.make_tree(spec, rng), 2, optimizer=dn, K=100)
  merged = lps_merge(lps, tl.make_tree(spec, rng), alpha)
  tl.assert_trees_equal(merged.opt_state, lps.opt_state)  # m, A, t unchanged (exact)
  assert int(merged.opt_state.count) == n
  assert int(merged.pending_steps) == 2 * n
  assert int(merged.version) == n and int(merged.merge_version) == n


@settings(max_examples=20)
@given(spec=tl.tree_specs(), lr=st.floats(1e-3, 1.0), beta=st.floats(0.0, 0.9),
       N=st.integers(1, 4), c_frac=st.floats(0.0, 1.0), K=st.integers(1, 4),
       L=st.integers(1, 12), data=st.data(), seed=tl.seeds())
def test_single_lps_alpha0_is_async_local_sgd_update_by_update(spec, lr, beta, N, c_frac, K, L,
                                                               data, seed):
  # docs/algorithms.md 2.6 reduction at the optimizer level: one LPS, alpha = 0, LPS optimizer =
  # the Async PS optimizer. Merges with alpha = 0 leave x_l unchanged and do not touch the DN
  # state, so the LPS model after every update equals DN applied directly. Exact: the same float32
  # ops, and the alpha = 0 blend is 1*x + 0*xG = x.
  rng = np.random.default_rng(seed)
  dn = delayed_nesterov(lr, beta, N, c=c_frac / N)
  gps_opt = delayed_nesterov(0.5, 0.5, 2)  # arbitrary: its model only enters with weight 0
  x0 = tl.make_tree(spec, rng)
  lps, gps = lps_init(x0, dn), gps_init(x0, gps_opt)
  x_direct, s_direct = x0, dn.init(x0)
  returns_in = None
  for _ in range(L):
    g = tl.make_tree(spec, rng)
    lps, due, delta, steps = lps_receive(lps, g, 1, optimizer=dn, K=K)
    u, s_direct = dn.update(g, s_direct, x_direct)
    x_direct = optax.apply_updates(x_direct, u)
    tl.assert_trees_equal(lps.params, x_direct)
    if bool(due):
      gps = gps_apply(gps, delta, steps, optimizer=gps_opt)
      returns_in = data.draw(st.integers(0, 2))
    if returns_in is not None:
      if returns_in == 0:
        lps, returns_in = lps_merge(lps, gps.params, 0.0), None
        tl.assert_trees_equal(lps.params, x_direct)
      else:
        returns_in -= 1
  tl.assert_trees_equal(lps.opt_state, s_direct)


@settings(max_examples=15)
@given(spec=tl.tree_specs(), T=st.integers(1, 6), seed=tl.seeds())
def test_gps_apply_is_dn_on_deltas_and_counts_steps(spec, T, seed):
  rng = np.random.default_rng(seed)
  dn = delayed_nesterov(0.3, 0.5, 2)
  x0 = tl.make_tree(spec, rng)
  gps, x, s = gps_init(x0, dn), x0, dn.init(x0)
  total = 0
  for i in range(T):
    delta = tl.make_tree(spec, rng)
    gps = gps_apply(gps, delta, i + 1, optimizer=dn)
    u, s = dn.update(delta, s, x)
    x = optax.apply_updates(x, u)
    total += i + 1
  tl.assert_trees_equal(gps.params, x)  # exact: the same ops
  tl.assert_trees_equal(gps.opt_state, s)
  assert (int(gps.version), int(gps.steps)) == (T, total)


def test_bad_arguments_name_the_problem():
  x = {"a": jnp.zeros(2)}
  lps, gps = lps_init(x, IDENTITY), gps_init(x, IDENTITY)
  g = {"a": jnp.ones(2)}
  with pytest.raises(ValueError, match="K must be an integer >= 1"):
    lps_receive(lps, g, 1, optimizer=IDENTITY, K=0)
  with pytest.raises(TypeError, match="K must be an integer"):
    lps_receive(lps, g, 1, optimizer=IDENTITY, K=2.0)
  with pytest.raises(ValueError, match="steps"):
    lps_receive(lps, g, -1, optimizer=IDENTITY, K=2)
  with pytest.raises(ValueError, match="pseudo_grad must have the tree structure"):
    lps_receive(lps, {"b": jnp.ones(2)}, 1, optimizer=IDENTITY, K=2)
  with pytest.raises(ValueError, match=r"pseudo_grad\['a'\] has shape"):
    lps_receive(lps, {"a": jnp.ones(3)}, 1, optimizer=IDENTITY, K=2)
  with pytest.raises(ValueError, match=r"alpha must be a number in \[0, 1\]"):
    lps_merge(lps, x, 1.5)
  with pytest.raises(ValueError, match=r"alpha must be a number in \[0, 1\]"):
    lps_merge(lps, x, -0.1)
  with pytest.raises(ValueError, match="global_params"):
    lps_merge(lps, {"a": jnp.zeros(3)}, 0.5)
  with pytest.raises(ValueError, match="delta"):
    gps_apply(gps, {"a": jnp.zeros(3)}, 1, optimizer=IDENTITY)
  with pytest.raises(ValueError, match="steps"):
    gps_apply(gps, g, -2, optimizer=IDENTITY)
