"""Tests for halos_jax.optim.worker: LR schedule, per-round learning rates, worker AdamW / SGD."""
import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import optim_testlib as tl
from halos_jax.optim import round_learning_rates
from halos_jax.optim import warmup_cosine_schedule
from halos_jax.optim import worker_adamw
from halos_jax.optim import worker_sgd


@st.composite
def schedules(draw):
  max_lr = draw(st.floats(1e-5, 1.0))
  t_warmup = draw(st.integers(1, 400))
  t_max = t_warmup + draw(st.integers(1, 7000))
  ratio = draw(st.floats(0.0, 1.0))
  return max_lr, t_warmup, t_max, ratio


@settings(max_examples=20)
@given(args=schedules(), after=st.integers(1, 10**5))
def test_schedule_key_values(args, after):
  max_lr, t_warmup, t_max, ratio = args
  s = warmup_cosine_schedule(max_lr, t_warmup, t_max, ratio)
  f32 = np.float32
  # Exact by construction (docs/algorithms.md 2.1): lr(0) = max*0 = 0; at t_warmup the cosine
  # branch has cos(0) = 1 and gives max - (max - min)*0 = max; from t_max on the constant min
  # branch.
  assert float(s(0)) == 0.0
  assert s(t_warmup) == f32(max_lr)
  assert s(t_max) == f32(ratio * max_lr)
  assert s(t_max + after) == f32(ratio * max_lr)
  # Fixed-size integer grids (one compiled shape for all examples): 256 counts in the warmup,
  # 256 in the cosine.
  tw = np.round(np.linspace(0, t_warmup, 256)).astype(np.int32)
  tc = np.round(np.linspace(t_warmup, t_max, 256)).astype(np.int32)
  lw = np.asarray(jax.vmap(s)(tw), np.float64)
  lc = np.asarray(jax.vmap(s)(tc), np.float64)
  # Shape: non-decreasing during warmup, non-increasing after (1-ulp float32 wiggle allowed).
  tol = 2 * tl.EPS32 * max_lr
  assert np.all(np.diff(lw) >= -tol)
  assert np.all(np.diff(lc) <= tol)
  # Linear warmup and cosine values against float64 formulas: ~4 float32 roundings -> rtol 8
  # ulps; cos has an absolute error of a few ulps(1), scaled by (max - min)/2 <= max_lr -> atol
  # 8 ulps of max_lr.
  np.testing.assert_allclose(lw[:-1], max_lr * tw[:-1] / t_warmup, rtol=8 * tl.EPS32)
  min_lr = ratio * max_lr
  cosine = min_lr + 0.5 * (max_lr - min_lr) * (
      1 + np.cos(np.pi * (tc[:-1] - t_warmup) / (t_max - t_warmup)))
  np.testing.assert_allclose(lc[:-1], cosine, rtol=8 * tl.EPS32, atol=8 * tl.EPS32 * max_lr)


def test_reference_schedule_by_hand():
  # Reference: max 1e-3, t_warmup 300, t_max 6144, min 1e-4. lr(150) = 1e-3 * 150/300 = 5e-4;
  # midpoint (300 + 6144)/2 = 3222: cos(pi/2) = 0 -> (max + min)/2 = 5.5e-4; lr(1) = 1e-3/300.
  s = warmup_cosine_schedule(1e-3, 300, 6144)
  # rtol 1e-6: float32 evaluation of decimals; atol for cos(pi/2) ~ 1e-8 rounding times 4.5e-4.
  np.testing.assert_allclose([s(150), s(3222), s(1)], [5e-4, 5.5e-4, 1e-3 / 300], rtol=1e-6,
                             atol=1e-11)
  assert float(s(6144)) == np.float32(1e-4)


def test_no_warmup():
  s = warmup_cosine_schedule(0.5, 0, 10, 0.0)
  # t_warmup = 0: no warmup, the cosine starts at max at t = 0; min (0) from t_max.
  assert s(0) == np.float32(0.5) and float(s(10)) == 0.0


@settings(max_examples=12)
@given(args=schedules(), offset=st.integers(0, 8000), H1=st.sampled_from([1, 4]),
       H2=st.sampled_from([1, 4]))
def test_round_learning_rates(args, offset, H1, H2):
  # H from {1, 4}: five array lengths in all, so op-by-op compilation stays cheap.
  max_lr = args[0]
  s = warmup_cosine_schedule(*args)
  # The very first step of a run uses lr(1) (the counter is incremented before use); exact: the
  # same scalar function on the same count.
  assert round_learning_rates(s, 0, H1)[0] == s(1)
  lrs = round_learning_rates(s, offset, H1 + H2)
  assert lrs.shape == (H1 + H2,)
  expected = np.array([s(offset + i) for i in range(1, H1 + H2 + 1)])
  # Vectorised (vmap) vs scalar evaluation of the same float32 formula: XLA's vectorised and
  # scalar cos may differ by a few ulps(1) in absolute terms (seen: 4 ulps of the result), scaled
  # by (max - min)/2 <= max_lr -> rtol 4 ulps plus atol 4 ulps of max_lr.
  tol = dict(rtol=4 * tl.EPS32, atol=4 * tl.EPS32 * max_lr)
  np.testing.assert_allclose(lrs, expected, **tol)
  # Two consecutive rounds use the same counters as one long round.
  both = np.concatenate([round_learning_rates(s, offset, H1),
                         round_learning_rates(s, offset + H1, H2)])
  np.testing.assert_allclose(both, lrs, **tol)


def test_round_learning_rates_with_traced_offset():
  s = warmup_cosine_schedule(1e-3, 300, 6144)
  f = jax.jit(round_learning_rates, static_argnums=(0, 2))
  # Same function jitted vs eager: 4 ulps (see test_round_learning_rates).
  np.testing.assert_allclose(f(s, jnp.int32(40), 4), round_learning_rates(s, 40, 4),
                             rtol=4 * tl.EPS32, atol=4 * tl.EPS32 * 1e-3)


def test_adamw_single_step_by_hand():
  # params W (2x2, decayed) and b (2,, not decayed); grads with global norm
  # sqrt(3^2 + 4^2) = 5 > clip 1, so they are scaled by 1/5: gW = [[.6,0],[0,0]], gb = [.8,0].
  # First Adam step: m = (1-b1) g, v = (1-b2) g^2, m_hat = g, v_hat = g^2, so the direction is
  # g / (|g| + eps); with eps = 0.2: .6/.8 = .75 and .8/1.0 = .8 (0 where g = 0).
  # Unclipped it would be 3/3.2 and 4/4.2, so clipping is visible.
  # Decoupled decay (lr 0.1, wd 0.1) only on W:
  #   uW = -0.1 * ([[.75, 0], [0, 0]] + 0.1 * [[1, 2], [3, 4]]) = [[-.085, -.02], [-.03, -.04]]
  #   ub = -0.1 * [.8, 0] = [-.08, 0]        (no decay although b = [5, 6] is large)
  # (Coupled L2 would add wd*x to g before normalisation and give different numbers.)
  opt = worker_adamw(b1=0.9, b2=0.95, eps=0.2, weight_decay=0.1, clip_norm=1.0)
  params = {"W": jnp.array([[1.0, 2.0], [3.0, 4.0]]), "b": jnp.array([5.0, 6.0])}
  grads = {"W": jnp.array([[3.0, 0.0], [0.0, 0.0]]), "b": jnp.array([4.0, 0.0])}
  u, state = opt.update(grads, opt.init(params), params, learning_rate=0.1)
  # rtol 2e-6 / atol 1e-8: ~10 float32 roundings (clip, moments, bias corrections, sqrt).
  np.testing.assert_allclose(u["W"], [[-0.085, -0.02], [-0.03, -0.04]], rtol=2e-6, atol=1e-8)
  np.testing.assert_allclose(u["b"], [-0.08, 0.0], rtol=2e-6, atol=1e-8)
  assert int(state[1].count) == 1  # the Adam count (bias correction) advanced once


def test_adamw_defaults_first_step_is_signed_lr():
  # Defaults (eps 1e-8, wd 0.1, clip 1): grads of norm 0.5 are not clipped; first step direction
  # g / (|g| + 1e-8) = sign(g) up to 1e-8/|g| <= 4e-8 relative; W also decays by lr*wd*W.
  opt = worker_adamw()
  params = {"W": jnp.full((2, 2), 2.0), "b": jnp.full((2,), 2.0)}
  grads = {"W": jnp.array([[0.25, -0.25], [0.25, -0.25]]), "b": jnp.array([-0.25, 0.0])}
  u, _ = opt.update(grads, opt.init(params), params, learning_rate=jnp.float32(1e-3))
  # uW = -1e-3 * (sign(g) + 0.1*2) = [[-1.2e-3, 0.8e-3], ...]; ub = [1e-3, 0].
  # rtol 1e-6: eps effect 4e-8 plus float32 rounding.
  np.testing.assert_allclose(u["W"], [[-1.2e-3, 0.8e-3], [-1.2e-3, 0.8e-3]], rtol=1e-6)
  np.testing.assert_allclose(u["b"], [1e-3, 0.0], rtol=1e-6, atol=1e-12)


ADAMW = worker_adamw()
# Peak lr 0.5 on targets at distance <= 2: Adam overshoots within a few steps, so gradients
# change sign and the carried moments visibly matter.
CARRY_SCHEDULE = warmup_cosine_schedule(0.5, 2, 60)


@jax.jit
def adamw_round(params, state, target, lrs):
  """A worker round: len(lrs) AdamW steps on 0.5*||x - target||^2, lr per step from `lrs`."""
  def step(carry, lr):
    x, s = carry
    g = jax.tree.map(lambda x, t: x - t, x, target)  # gradient of the quadratic
    u, s = ADAMW.update(g, s, x, learning_rate=lr)
    return (optax.apply_updates(x, u), s), None
  (params, state), _ = jax.lax.scan(step, (params, state), lrs)
  return params, state


@settings(max_examples=8)
@given(H1=st.sampled_from([2, 3]), H2=st.sampled_from([2, 3]), offset=st.integers(0, 40),
       seed=tl.seeds())
def test_adamw_state_carried_across_rounds_equals_one_run(H1, H2, offset, seed):
  # A fixed tree structure keeps the number of compiled round lengths at 5 (2..6).
  spec = {"W": (2, 3), "b": (3,)}
  rng = np.random.default_rng(seed)
  x0, target = tl.make_tree(spec, rng), tl.make_tree(spec, rng)
  # The learning rates of the continuous run, split into the two rounds' counters
  # (offset+1..offset+H1 and offset+H1+1..offset+H1+H2; their equality with per-round
  # round_learning_rates is test_round_learning_rates).
  lrs = round_learning_rates(CARRY_SCHEDULE, offset, H1 + H2)
  # Two rounds, the AdamW state carried from the first to the second.
  x1, st1 = adamw_round(x0, ADAMW.init(x0), target, lrs[:H1])
  x2, st2 = adamw_round(x1, st1, target, lrs[H1:])
  # One continuous run over the same H1 + H2 steps.
  x_all, st_all = adamw_round(x0, ADAMW.init(x0), target, lrs)
  # Same per-step float32 operations on the same inputs; only the scan length (a separately
  # compiled loop) differs. Allow 8 ulps(4) on x (|x| <= 4) and 8 ulps relative on the moments
  # in case XLA contracts multiply-adds differently in the two programs.
  tl.assert_trees_close(x2, x_all, atol=8 * 4 * tl.EPS32)
  tl.assert_trees_close(st2, st_all, rtol=8 * tl.EPS32, atol=8 * tl.EPS32 * 16)
  assert int(st2[1].count) == H1 + H2
  # Contrast: the second round restarted with a fresh state (moments 0, bias correction from
  # count 0) ends far away (> 1e-3, vs the 4e-6 tolerance above), so the check has teeth.
  x2_fresh, _ = adamw_round(x1, ADAMW.init(x1), target, lrs[H1:])
  diffs = [np.max(np.abs(a - b)) for a, b in zip(jax.tree.leaves(x2_fresh),
                                                  jax.tree.leaves(x2))]
  assert max(diffs) > 1e-3


@settings(max_examples=15)
@given(spec=tl.tree_specs(), lr=st.floats(1e-4, 1.0), dtype=st.sampled_from([jnp.float32,
                                                                             jnp.bfloat16]),
       seed=tl.seeds())
def test_worker_sgd_is_minus_lr_times_g(spec, lr, dtype, seed):
  rng = np.random.default_rng(seed)
  x, g = tl.make_tree(spec, rng, dtype), tl.make_tree(spec, rng, dtype)
  opt = worker_sgd()
  u, state = opt.update(g, opt.init(x), x, learning_rate=lr)
  assert state == optax.EmptyState()
  # One float32 multiply, one rounding to the dtype: rtol = eps of the dtype.
  expected = jax.tree.map(lambda g: -lr * np.asarray(g, np.float64), g)
  tl.assert_trees_close(u, expected, rtol=float(jnp.finfo(dtype).eps))
  assert all(leaf.dtype == dtype for leaf in jax.tree.leaves(u))


@pytest.mark.parametrize("fn, kwargs, error, match", [
    (warmup_cosine_schedule, dict(max_lr=0.0, t_warmup=1, t_max=2), ValueError, "max_lr"),
    (warmup_cosine_schedule, dict(max_lr=1.0, t_warmup=-1, t_max=2), ValueError, "t_warmup"),
    (warmup_cosine_schedule, dict(max_lr=1.0, t_warmup=5, t_max=5), ValueError, "t_max"),
    (warmup_cosine_schedule, dict(max_lr=1.0, t_warmup=5, t_max=9.5), TypeError, "t_max"),
    (warmup_cosine_schedule, dict(max_lr=1.0, t_warmup=1, t_max=2, min_lr_ratio=1.5),
     ValueError, "min_lr_ratio"),
    (worker_adamw, dict(b1=1.0), ValueError, "b1"),
    (worker_adamw, dict(b2=-0.5), ValueError, "b2"),
    (worker_adamw, dict(eps=-1e-8), ValueError, "eps"),
    (worker_adamw, dict(weight_decay=-0.1), ValueError, "weight_decay"),
    (worker_adamw, dict(clip_norm=0.0), ValueError, "clip_norm"),
])
def test_argument_validation(fn, kwargs, error, match):
  with pytest.raises(error, match=match):
    fn(**kwargs)


def test_round_learning_rates_and_update_validation():
  s = warmup_cosine_schedule(1e-3, 3, 10)
  with pytest.raises(ValueError, match="H must be an integer >= 1"):
    round_learning_rates(s, 0, 0)
  with pytest.raises(ValueError, match="lr_offset"):
    round_learning_rates(s, -1, 4)
  opt, x = worker_adamw(), {"a": jnp.ones((2, 2))}
  with pytest.raises(ValueError, match="needs params"):
    opt.update(x, opt.init(x), None, learning_rate=0.1)
  with pytest.raises(TypeError, match="learning_rate"):
    opt.update(x, opt.init(x), x)
