"""Every transform of halos_jax.optim: works under jax.jit, keeps parameter dtypes (float32 and
bfloat16), keeps its state dtypes fixed (so it can be a scan carry), and its state round-trips
through an orbax checkpoint unchanged (and resumes bit-identically)."""
import functools

import jax
import jax.numpy as jnp
import numpy as np
import optax
import orbax.checkpoint as ocp
import pytest

import optim_testlib as tl
from halos_jax import optim

SPEC = {"W": (2, 3), "b": (3,), "nested": ((), (3,))}
STEPS = 3


def _optax_case(opt, **update_kwargs):
  """State = (params, opt_state); one step = update + apply_updates. Returns (init, step)."""
  def init(params):
    return params, opt.init(params)

  def step(state, g):
    params, opt_state = state
    u, opt_state = opt.update(g, opt_state, params, **update_kwargs)
    assert [x.dtype for x in jax.tree.leaves(u)] == [x.dtype for x in jax.tree.leaves(params)]
    return optax.apply_updates(params, u), opt_state

  return init, step


def _lps_case():
  dn = optim.delayed_nesterov_from_base_lr(0.2, 0.9, 2, c=0.25)
  receive = functools.partial(optim.lps_receive, optimizer=dn, K=2)

  def init(params):
    return optim.lps_init(params, dn)

  def step(state, g):
    # Receive, then (inside the same traced step) merge with a stand-in global model when a
    # Delta is due: lps_merge with alpha = 0.25 * send_due is the jittable form of "if due".
    state, due, delta, _ = receive(state, g, 3)
    assert [x.dtype for x in jax.tree.leaves(delta)] == [
        x.dtype for x in jax.tree.leaves(state.params)]
    merged = optim.lps_merge(state, jax.tree.map(lambda d: -d, delta), 0.25 * due)
    return jax.tree.map(lambda m, s: jnp.where(due, m, s), merged, state)

  return init, step


def _gps_case():
  dn = optim.delayed_nesterov_from_base_lr(0.15, 0.5, 2)

  def init(params):
    return optim.gps_init(params, dn)

  def step(state, delta):
    return optim.gps_apply(state, delta, 4, optimizer=dn)

  return init, step


CASES = {
    "delayed_nesterov": lambda: _optax_case(optim.delayed_nesterov(0.3, 0.9, 2, c=0.2)),
    "delayed_nesterov_schedule": lambda: _optax_case(
        optim.delayed_nesterov(optax.linear_schedule(0.1, 0.3, 4), 0.9, 2)),
    "delayed_nesterov_in_chain": lambda: _optax_case(optax.chain(
        optax.clip_by_global_norm(1.0), optim.delayed_nesterov_from_base_lr(0.05, 0.9, 2))),
    "diloco_outer": lambda: _optax_case(optim.diloco_outer()),
    "worker_adamw": lambda: _optax_case(optim.worker_adamw(), learning_rate=jnp.float32(1e-2)),
    "worker_sgd": lambda: _optax_case(optim.worker_sgd(), learning_rate=jnp.float32(1e-2)),
    "lps": _lps_case,
    "gps": _gps_case,
}


def _dtypes(tree):
  return [x.dtype for x in jax.tree.leaves(tree)]


def _run(init, step, params, grads):
  state = init(params)
  states = [state]
  for g in grads:
    state = step(state, g)
    states.append(state)
  return states


@pytest.mark.parametrize("dtype", [jnp.float32, jnp.bfloat16], ids=["fp32", "bf16"])
@pytest.mark.parametrize("name", sorted(CASES))
def test_jit_dtypes_and_orbax_round_trip(name, dtype, tmp_path):
  init, step = CASES[name]()
  rng = np.random.default_rng(0)
  params = tl.make_tree(SPEC, rng, dtype)
  grads = [tl.make_tree(SPEC, rng, dtype) for _ in range(STEPS + 1)]

  step_jit = jax.jit(step)
  jitted = _run(init, step_jit, params, grads[:STEPS])
  if dtype == jnp.float32:
    # jit vs op-by-op, the same float32 math; XLA may fuse/contract multiply-adds differently
    # under jit -> 16 ulps of float32 for values <= ~2. (Not compared for bf16: under jit XLA may
    # keep bf16 intermediates in float32, its default xla_allow_excess_precision, so the two
    # differ by whole bf16 roundings; the bf16 numerics are float32 math rounded once per output.)
    eager = _run(init, step, params, grads[:STEPS])
    tl.assert_trees_close(jitted[-1], eager[-1], rtol=16 * tl.EPS32, atol=32 * tl.EPS32)

  # Dtypes: parameter leaves keep the parameter dtype; the state's dtypes never change (a valid
  # scan carry); optimizer buffers are float32 even for bf16 parameters.
  for state in jitted:
    assert _dtypes(state) == _dtypes(jitted[0])
  last = jitted[-1]  # (params, opt_state) for optax cases, LPSState / GPSState otherwise
  param_tree = last.params if hasattr(last, "params") else last[0]
  assert all(d == dtype for d in _dtypes(param_tree))
  opt_state = last.opt_state if hasattr(last, "opt_state") else last[1]
  assert all(d == jnp.float32 for d in _dtypes(opt_state) if jnp.issubdtype(d, jnp.floating))

  # Orbax: save, restore against the abstract tree, compare exactly (structure incl. NamedTuple
  # types, dtypes, values), then resume one step from both: bit-identical (same jitted program
  # on identical inputs).
  state = jitted[-1]
  path = tmp_path / "state"
  with ocp.StandardCheckpointer() as ckptr:
    ckptr.save(path, state)
    ckptr.wait_until_finished()
    restored = ckptr.restore(path, jax.tree.map(ocp.utils.to_shape_dtype_struct, state))
  tl.assert_trees_equal(restored, state)
  tl.assert_trees_equal(step_jit(restored, grads[STEPS]), step_jit(state, grads[STEPS]))
