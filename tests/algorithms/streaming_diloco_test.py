"""Streaming DiLoCo (halos_jax/algorithms/streaming_diloco.py, docs/algorithms.md 2.7).

The reduction to DiLoCo (P = 1, tau = 0, alpha = 1: the same bits), the numerics of fragments,
the delay and the mix against a numpy re-derivation on the quadratic, the timing against hand
derivations, and the fragments of a Pythia tree.
"""
import os
import sys

import numpy as np
import pytest

from halos_jax import config_lib, fragments, train
from halos_jax import schedule as schedule_lib
from halos_jax.algorithms import streaming_diloco as sd
from halos_jax.schedule import analysis
from halos_jax.schedule.settings import InvalidSettings, ScheduleSettings

sys.path.insert(0, os.path.join(os.path.dirname(os.path.dirname(__file__)), "replay"))
from tiny_configs import TINY_ENV, tiny_config  # noqa: E402  pylint: disable=g-import-not-at-top

# 2 regions x 2 workers, round numbers: 1 Gbps inside a region, 0.1 Gbps between them.
ENV = {"network_bandwidths": [[1.0, 0.1], [0.1, 1.0]], "worker_speeds": [[1.0, 0.5], [1.0, 0.25]]}
B = 1_000_000  # bytes of a whole-model message


def _settings(**kw):
  base = dict(algorithm="streaming_diloco", H=8, total_local_steps=64, local_batch=2,
              global_batch=8, step_time_ms=100.0, message_bytes=B, fragments=2, overlap_steps=0)
  base.update(kw)
  return ScheduleSettings(**base)


def _env():
  return schedule_lib.load_environment(ENV)


@pytest.fixture(name="env_file")
def _env_file(tmp_path):
  path = tmp_path / "tiny.yaml"
  path.write_text(TINY_ENV)
  return str(path)


# -- the reduction ----------------------------------------------------------------------------


def test_one_fragment_no_delay_alpha1_is_diloco(env_file, tmp_path):
  """P = 1, tau = 0, alpha = 1: the same model, bit for bit, at the same simulated time."""
  a = train.train_and_evaluate(tiny_config("diloco", env_file), str(tmp_path / "d"))
  b = train.train_and_evaluate(
      tiny_config("streaming_diloco", env_file, fragments=1, overlap_steps=0, alpha=1.0),
      str(tmp_path / "s"))
  assert b["params_sha256"] == a["params_sha256"]
  assert b["simulated_time_ms"] == a["simulated_time_ms"]
  assert b["final_val_loss"] == a["final_val_loss"]


def test_one_fragment_schedule_times_are_diloco():
  """The sync times (and so the link bytes) of P = 1, tau = 0 are DiLoCo's."""
  env = _env()
  d = schedule_lib.build_schedule(env, _settings(algorithm="diloco", fragments=None,
                                                 overlap_steps=None))
  s = schedule_lib.build_schedule(env, _settings(fragments=1))
  sync = lambda x: x.columns["t"][x.columns["kind"] == schedule_lib.events.SYNC]  # noqa: E731
  np.testing.assert_array_equal(sync(s), sync(d))
  np.testing.assert_array_equal(analysis.link_bytes(s), analysis.link_bytes(d))


# -- the numerics, re-derived -----------------------------------------------------------------


def _numpy_replay(schedule, dim, worker_lr, outer_lr, momentum, alpha, fragments):
  """The quadratic's run from the schedule's events, in float64 numpy."""
  h = np.linspace(0.1, 1.0, dim, dtype=np.float32).astype(np.float64)
  frag = np.arange(dim) % fragments
  w_count = schedule.env.num_workers
  x = np.zeros(dim)
  trace = [np.zeros(dim) for _ in range(fragments)]
  local = [np.zeros(dim) for _ in range(w_count)]
  running = {}
  for ev in schedule.events:
    if ev.kind == "start":
      running[ev.worker] = (local[ev.worker].copy(), ev.H)
    elif ev.kind == "sync":
      for r in ev.rounds:
        w = r % w_count
        y, steps = running.pop(w)
        for _ in range(steps):
          y = y - worker_lr * h * (y - 1.0)
        local[w] = y
      if ev.fragment >= 0:
        m = frag == ev.fragment
        g = np.mean([x - y for y in local], axis=0)
        trace[ev.fragment] = momentum * trace[ev.fragment] + g
        x = np.where(m, x - outer_lr * (g + momentum * trace[ev.fragment]), x)
    elif ev.kind == "merge":
      m = frag == ev.fragment
      local = [np.where(m, (1 - alpha) * y + alpha * x, y) for y in local]
  return x


@pytest.mark.parametrize("fragments,tau,alpha", [(2, 1, 0.5), (4, 0, 0.3), (2, 3, 1.0)])
def test_quadratic_matches_numpy(env_file, tmp_path, fragments, tau, alpha):
  """Fragments, the tau-step delay and the mix, step by step against numpy (float32 vs
  float64: 1e-5)."""
  config = tiny_config("streaming_diloco", env_file, problem="quadratic", H=8,
                       fragments=fragments, overlap_steps=tau, alpha=alpha,
                       total_local_steps=96, **{"outer.lr": 0.5, "outer.momentum": 0.8})
  train.train_and_evaluate(config, str(tmp_path))
  import orbax.checkpoint as ocp  # pylint: disable=g-import-not-at-top
  with ocp.StandardCheckpointer() as ck:
    got = np.asarray(ck.restore(str(tmp_path / "final_model"))["x"])
  schedule = schedule_lib.schedule_from_config(config_lib.resolve(config))
  assert int(np.count_nonzero(schedule.columns["kind"] == schedule_lib.events.MERGE)) >= 4
  want = _numpy_replay(schedule, int(config.quadratic.dim), float(config.quadratic.worker_lr),
                       0.5, 0.8, alpha, fragments)
  assert np.abs(want - 1.0).max() > 1e-2  # not converged: the comparison means something
  np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-6)


# -- timing, by hand --------------------------------------------------------------------------


def _allreduce(nbytes):
  # Ring over 4 workers in 2 regions: the inter-region hop (0.1 Gbps) is the bottleneck.
  return 2 * 3 * (nbytes * 8 / 4) / (0.1 * 1e9) * 1e3


def test_timing_no_overlap():
  """tau = 0: each sub-round is S steps of the slowest worker (speed 0.25) + its fragment's
  all-reduce; fragments alternate."""
  s = schedule_lib.build_schedule(_env(), _settings(fragment_bytes=(300_000, 700_000)))
  c = s.columns
  sync = c["kind"] == schedule_lib.events.SYNC
  compute = 100.0 * 4 / 0.25
  want = np.cumsum([compute + _allreduce(b) for b in (300_000, 700_000) * 2])
  np.testing.assert_allclose(c["t"][sync], want, rtol=1e-12)
  np.testing.assert_array_equal(c["fragment"][sync], [0, 1] * 2)
  merges = c["kind"] == schedule_lib.events.MERGE
  np.testing.assert_array_equal(c["t"][merges], c["t"][sync])


@pytest.mark.parametrize("tau", [1, 3])
def test_timing_with_overlap(tau):
  """tau > 0: the all-reduce of a fragment runs during the next tau steps; the workers wait only
  for what those steps do not cover: mix at max(t + c(tau), t + all-reduce)."""
  s = schedule_lib.build_schedule(_env(), _settings(overlap_steps=tau))
  c = s.columns
  step = 100.0 / 0.25  # the slowest worker's step
  ar = _allreduce(B // 2)  # 60 ms, shorter than one step (400 ms): no wait
  t, want_sync, want_merge, first = 0.0, [], [], True
  counted = 0
  while counted < 64:
    steps = 4 if first else 4 - tau
    if not first:  # tau steps, then the mix
      t = max(t + tau * step, want_sync[-1] + ar)
      want_merge.append(t)
      counted += 4 * tau
    t += steps * step
    want_sync.append(t)
    counted += 4 * steps
    first = False
  sync = (c["kind"] == schedule_lib.events.SYNC) & (c["fragment"] >= 0)
  merge = c["kind"] == schedule_lib.events.MERGE
  np.testing.assert_allclose(c["t"][sync], want_sync, rtol=1e-12)
  np.testing.assert_allclose(c["t"][merge], want_merge, rtol=1e-12)
  basic = s.summary_basic()
  assert basic["local_steps"] >= 64 and basic["server_updates"] == len(want_sync)
  # Only outer steps count local steps (the global model's); the run ends at one.
  counted_at = c["counted_steps"][c["counted_steps"] >= 0]
  assert len(counted_at) == len(want_sync) + 1  # + the stop
  assert c["fragment"][np.flatnonzero(c["counted_steps"] >= 0)[-2]] >= 0


def test_overlap_waits_for_a_slow_all_reduce():
  """A fragment all-reduce longer than tau steps delays the mix to its end."""
  env = schedule_lib.load_environment(
      {"network_bandwidths": [[1.0, 0.001], [0.001, 1.0]], "worker_speeds": [[1.0], [1.0]]})
  s = schedule_lib.build_schedule(env, _settings(overlap_steps=1, total_local_steps=16))
  c = s.columns
  t_sync = c["t"][(c["kind"] == schedule_lib.events.SYNC) & (c["fragment"] >= 0)]
  t_merge = c["t"][c["kind"] == schedule_lib.events.MERGE]
  ar = 2 * 1 * (B // 2 * 8 / 2) / (0.001 * 1e9) * 1e3  # 2 workers, one 0.001 Gbps hop
  assert ar > 100.0
  np.testing.assert_allclose(t_merge, t_sync[:len(t_merge)] + ar, rtol=1e-12)


def test_overlap_never_slower_than_no_overlap():
  for tau in (1, 2, 3):
    t0 = schedule_lib.build_schedule(_env(), _settings()).summary_basic()
    t1 = schedule_lib.build_schedule(_env(), _settings(overlap_steps=tau)).summary_basic()
    assert t1["local_steps"] == t0["local_steps"]
    assert t1["simulated_time_ms"] <= t0["simulated_time_ms"]


def test_link_bytes_count_the_fragments():
  s = schedule_lib.build_schedule(_env(), _settings(fragment_bytes=(300_000, 700_000)))
  syncs = 4  # 64 steps / (4 workers x S = 4 steps): 4 sub-rounds, fragments 0, 1, 0, 1
  total = 2 * (300_000 + 700_000)
  assert sd.allreduced_bytes(s) == total
  # Every hop of the ring carries 2 (W - 1) / W of each all-reduce.
  assert analysis.link_bytes(s)[0, 1] + analysis.link_bytes(s)[1, 0] == pytest.approx(
      2 * 1.5 * total)
  assert int(np.count_nonzero(s.columns["fragment"] >= 0)) == 2 * syncs  # syncs + merges


# -- settings ---------------------------------------------------------------------------------


@pytest.mark.parametrize("kw,words", [
    (dict(fragments=3), "must divide H=8"),
    (dict(overlap_steps=4), "[0, 4)"),
    (dict(rescale_local_steps=True), "no DynUpd"),
    (dict(fragment_bytes=(1, 2, 3)), "3 sizes for fragments=2"),
])
def test_bad_settings_are_named(kw, words):
  with pytest.raises(InvalidSettings, match=None) as e:
    schedule_lib.build_schedule(_env(), _settings(**kw))
  assert words in str(e.value)


def test_settings_without_fragments_keep_the_header():
  d = _settings(algorithm="diloco", fragments=None, overlap_steps=None).to_dict()
  assert "fragments" not in d and "overlap_steps" not in d and "fragment_bytes" not in d


# -- fragments of a tree ----------------------------------------------------------------------


PYTHIA_LIKE = [
    (("embed_in", "embedding"), (256, 8)),
    (("embed_out", "kernel"), (8, 256)),
    (("final_layer_norm", "scale"), (8,)),
    (("layers", "mlp", "kernel"), (6, 8, 32)),
    (("layers", "attention", "bias"), (6, 24)),
]


def test_strided_layers():
  """Layer l in fragment l mod P; the input embedding with fragment 0; the head with the last
  layer's fragment."""
  layers = fragments.layer_count(PYTHIA_LIKE)
  assert layers == 6
  np.testing.assert_array_equal(
      fragments.fragment_of(("layers", "mlp", "kernel"), (6, 8, 32), 4, layers), [0, 1, 2, 3, 0, 1])
  assert fragments.fragment_of(("embed_in", "embedding"), (256, 8), 4, layers) == 0
  assert fragments.fragment_of(("embed_out", "kernel"), (8, 256), 4, layers) == 5 % 4
  sizes = fragments.fragment_elements(PYTHIA_LIKE, 3)
  per_layer = 8 * 32 + 24
  assert sizes == [256 * 8 + 2 * per_layer, 2 * per_layer, 2 * per_layer + 8 * 256 + 8]
  assert sum(sizes) == sum(int(np.prod(s)) for _, s in PYTHIA_LIKE)


def test_more_fragments_than_layers_is_refused():
  with pytest.raises(ValueError, match="at most as many fragments as layers"):
    fragments.fragment_elements(PYTHIA_LIKE, 7)


def test_resolve_derives_fragment_bytes_from_the_model():
  """A config whose message is the model: the fragments' bytes add up to it."""
  c = tiny_config("streaming_diloco", "geo4", fragments=2)
  c.message_bytes = None
  r = config_lib.resolve(c)
  assert len(r.fragment_bytes) == 2 and sum(r.fragment_bytes) == r.message_bytes
  # The runlocal config times Pythia-70M-sized messages: split evenly.
  r = config_lib.resolve(tiny_config("streaming_diloco", "geo4"))
  assert r.get("fragment_bytes") is None
