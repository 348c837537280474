"""Streaming HALoS (halos_jax/algorithms/streaming_halos.py, docs/algorithms.md 2.8): HALoS whose
LPS <-> GPS exchanges carry one fragment at a time.

The reduction to HALoS (P = 1: the same schedule and the same bits), the exchange timing by
hand, and the fragment semantics of the servers observed event by event.
"""
import os
import sys

import jax
import numpy as np
import pytest

from halos_jax import fragments, train
from halos_jax import schedule as schedule_lib
from halos_jax.schedule import analysis
from halos_jax.schedule import events as ev
from halos_jax.schedule.settings import InvalidSettings, ScheduleSettings

sys.path.insert(0, os.path.join(os.path.dirname(os.path.dirname(__file__)), "replay"))
from tiny_configs import TINY_ENV, tiny_config  # noqa: E402  pylint: disable=g-import-not-at-top

ENV = {"network_bandwidths": [[10.0, 0.5], [0.25, 10.0]],
       "worker_speeds": [[1.0, 0.5], [0.8, 0.4]]}
B = 1_000_000


def _settings(**kw):
  base = dict(algorithm="streaming_halos", H=2, total_local_steps=400, local_batch=2,
              global_batch=8, step_time_ms=100.0, message_bytes=B, K=4, workers_per_lps=2,
              fragments=2)
  base.update(kw)
  return ScheduleSettings(**base)


@pytest.fixture(name="env_file")
def _env_file(tmp_path):
  path = tmp_path / "tiny.yaml"
  path.write_text(TINY_ENV)
  return str(path)


def test_one_fragment_is_halos_schedule():
  env = schedule_lib.load_environment(ENV)
  h = schedule_lib.build_schedule(env, _settings(algorithm="halos", fragments=None))
  s = schedule_lib.build_schedule(env, _settings(fragments=1))
  for key, col in h.columns.items():
    np.testing.assert_array_equal(s.columns[key], col, err_msg=key)


@pytest.mark.parametrize("problem", ["quadratic", "lm"])
def test_one_fragment_is_halos_bit_for_bit(env_file, tmp_path, problem):
  a = train.train_and_evaluate(tiny_config("halos", env_file, problem=problem),
                               str(tmp_path / "h"))
  b = train.train_and_evaluate(
      tiny_config("streaming_halos", env_file, problem=problem, fragments=1),
      str(tmp_path / "s"))
  assert b["params_sha256"] == a["params_sha256"]
  assert b["final_val_loss"] == a["final_val_loss"]


@pytest.mark.parametrize("sharing", ["none", "fair"])
def test_exchanges_by_hand(sharing):
  """Every K / P = 2 LPS updates a fragment goes up, alternating per LPS, each message taking
  its fragment's bytes over the LPS's link to region 0 and back. LPS 1's links to and from
  region 0 carry nothing else, so link sharing (network/sharing.py) leaves its times alone."""
  env = schedule_lib.load_environment({**ENV, "link_sharing": sharing})
  sizes = (300_000, 700_000)
  s = schedule_lib.build_schedule(env, _settings(fragment_bytes=sizes))
  c = s.columns
  send = np.flatnonzero(c["kind"] == ev.SEND)
  apply_ = np.flatnonzero(c["kind"] == ev.GPS_APPLY)
  merge = np.flatnonzero(c["kind"] == ev.MERGE)
  assert len(send) >= 8
  np.testing.assert_array_equal(c["version"][send] - c["base_version"][send], 2)
  for lps in (0, 1):
    mine = send[c["server"][send] == lps]
    np.testing.assert_array_equal(c["fragment"][mine], np.arange(len(mine)) % 2)
  up_gbps = {0: 10.0, 1: 0.25}  # LPS l's region -> region 0 (the GPS)
  down_gbps = {0: 10.0, 1: 0.5}
  t_send = {int(c["exchange"][i]): c["t"][i] for i in send}
  t_apply = {int(c["exchange"][i]): c["t"][i] for i in apply_}
  lps1 = lambda idx: idx[c["server"][idx] == 1] if sharing == "fair" else idx  # noqa: E731
  for i in lps1(apply_):
    e, l, f = int(c["exchange"][i]), int(c["server"][i]), int(c["fragment"][i])
    assert c["t"][i] == pytest.approx(t_send[e] + sizes[f] * 8 / (up_gbps[l] * 1e9) * 1e3)
  for i in lps1(merge):
    e, l, f = int(c["exchange"][i]), int(c["server"][i]), int(c["fragment"][i])
    assert c["t"][i] == pytest.approx(t_apply[e] + sizes[f] * 8 / (down_gbps[l] * 1e9) * 1e3)
  # The summary's link bytes count each message at its fragment's size: region 1 -> 0 carries
  # only LPS 1's Deltas (its workers talk to it inside region 1), 0 -> 1 its global models.
  lb = analysis.link_bytes(s)
  for kind, link in ((ev.GPS_APPLY, (1, 0)), (ev.MERGE, (0, 1))):
    sel = (c["kind"] == kind) & (c["server"] == 1)
    assert lb[link] == sum(sizes[f] for f in c["fragment"][sel].tolist())
  assert s.summary()["message_bytes"]["fragments"] == list(sizes)


def test_bad_settings_are_named():
  env = schedule_lib.load_environment(ENV)
  with pytest.raises(InvalidSettings, match="must divide K=4"):
    schedule_lib.build_schedule(env, _settings(fragments=3))
  with pytest.raises(InvalidSettings, match="streaming_halos"):
    schedule_lib.build_schedule(env, _settings(algorithm="halos"))


def test_servers_touch_only_the_exchanged_fragment(env_file, tmp_path):
  """At a gps_apply of fragment p the global model changes only in fragment p's entries; at a
  merge of fragment p the LPS model outside fragment p is unchanged and inside it is the
  alpha-blend with the global model."""
  config = tiny_config("streaming_halos", env_file, problem="quadratic", fragments=2, K=4,
                       total_local_steps=96)
  alpha = float(config.alpha)
  masks = fragments.fragment_masks({"x": np.zeros(int(config.quadratic.dim))}, 2)
  seen = {"apply": 0, "merge": 0}
  last = {}

  def hook(event, tree, rules):
    del rules
    now = jax.device_get(tree["servers"])
    prev = last.get("servers")
    last["servers"] = now
    if prev is None or event.kind not in ("gps_apply", "merge"):
      return
    m = np.asarray(masks[event.fragment]["x"])
    if event.kind == "gps_apply":
      new, old = now["gps"].params["x"], prev["gps"].params["x"]
      np.testing.assert_array_equal(new[~m], old[~m])
      assert np.any(new[m] != old[m])
      seen["apply"] += 1
    else:
      l = event.server
      new, old = now["lps"][l].params["x"], prev["lps"][l].params["x"]
      glob = prev["outbox"][l]["x"]  # the global model that came back
      np.testing.assert_array_equal(new[~m], old[~m])
      np.testing.assert_allclose(new[m], (1 - alpha) * old[m] + alpha * glob[m], rtol=1e-6)
      np.testing.assert_array_equal(now["lps"][l].merge_params["x"][m], new[m])
      seen["merge"] += 1

  train.train_and_evaluate(config, str(tmp_path), on_event=hook)
  assert seen["apply"] >= 4 and seen["merge"] >= 4
