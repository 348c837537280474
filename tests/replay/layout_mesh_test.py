"""The resident layout on 8 fake CPU devices (replay/layout.py): where the state lives, measured.

A 16-worker HALoS runlocal spreads its state: the fullest device holds at most a quarter of it
(the worker slots are sharded, two workers per device; each LPS on a device of its region, the
GPS on another device of its own region). Every worker's row stays on its device: a start writes
only that device's block.
"""
import numpy as np
import pytest

import jax
from halos_jax import config_lib
from halos_jax import memory
from halos_jax import train
from halos_jax.replay.layout import Layout
from tiny_configs import load_config, tiny_config

pytestmark = pytest.mark.mesh


def test_sixteen_worker_halos_state_is_spread_over_the_devices(tmp_path):
  assert jax.device_count() == 8
  config = load_config("halos")  # runlocal: geo4, 16 workers, 4 LPS
  config.total_local_steps = 64
  config.val_interval = 64
  config.replay.progress = False
  config.replay.plots = False
  s = train.train_and_evaluate(config, str(tmp_path))
  assert s["devices"] == 8
  assert 0 < s["state_bytes_max_device"] <= 0.25 * s["state_bytes_total"]
  # The memory plan (shapes and placement, nothing allocated) predicts the measured bytes.
  p = memory.plan(config_lib.resolve(config), 8, compile_round=False)
  assert sum(p.resident) == s["state_bytes_total"]
  assert max(p.resident) == s["state_bytes_max_device"]


def test_servers_and_workers_live_in_their_regions():
  # geo4 shape: 4 regions x 4 workers, one LPS per region, the GPS in region 0.
  layout = Layout(jax.devices(), [r for r in range(4) for _ in range(4)], (0, 1, 2, 3), 0)
  devices = jax.devices()
  assert layout.slots == 16 and layout.per_device == 2
  assert layout.worker_device == [devices[w // 2] for w in range(16)]
  assert [layout.server_device(r) for r in range(4)] == [devices[0], devices[2], devices[4],
                                                          devices[6]]
  assert layout.global_device() == devices[1]  # region 0's other device


def test_a_write_changes_only_its_row_on_its_device():
  layout = Layout(jax.devices(), [0] * 8 + [1] * 8, (0,))
  tree = layout.stacked({"a": np.zeros(3, np.float32)})
  before = {s.device: np.asarray(s.data) for s in tree["a"].addressable_shards}
  tree = layout.write(tree, 5, {"a": np.full(3, 7.0, np.float32)})
  after = {s.device: np.asarray(s.data) for s in tree["a"].addressable_shards}
  home = layout.worker_device[5]
  for d in before:
    if d != home:
      np.testing.assert_array_equal(after[d], before[d])
  want = np.zeros((16, 3), np.float32)
  want[5] = 7.0
  np.testing.assert_array_equal(np.asarray(tree["a"]), want)
  row = layout.read(tree, 5, jax.devices()[7])
  assert row["a"].devices() == {jax.devices()[7]}
  np.testing.assert_array_equal(np.asarray(row["a"]), np.full(3, 7.0))


@pytest.mark.parametrize("algorithm", ["halos", "async_local_sgd"])
def test_device_counts_agree_within_tolerance(algorithm, tiny_env, tmp_path):
  """1, 2 and 8 devices: the same schedule and arithmetic per round; XLA:CPU compiles a
  device's program for its share of the thread pool, so the last bits may differ (docs/replay.md).
  Final losses agree to 1e-4 relative."""
  losses = {}
  for n in (1, 2, 8):
    config = tiny_config(algorithm, tiny_env, **{"replay.num_devices": n})
    s = train.train_and_evaluate(config, str(tmp_path / str(n)))
    assert s["devices"] == n
    losses[n] = s["final_val_loss"]
  for n in (2, 8):
    assert losses[n] == pytest.approx(losses[1], rel=1e-4)


def test_the_papers_halos_config_runs_on_eight_devices_with_micro_batches(tmp_path):
  """configs/halos.py as it is (geo4, 16 workers, H = 8 with DynUpd, K = 32, 64-sequence local
  steps as 2 micro-batches of 32), with what this machine needs swapped: the tiny model, the
  embedded corpus in 16-token sequences (the Pile is not here), and the run cut to 512 local
  steps: a few GPS updates."""
  from halos_jax import data as data_lib  # pylint: disable=g-import-not-at-top
  config = load_config("halos", None)
  assert (config.local_batch, config.micro_batch, config.K) == (64, 32, 32)
  config.model.name = "tiny"
  config.data = data_lib.default_data_config()
  config.data.seq_len = 16
  config.data.val_sequences = 64
  config.message_bytes = None  # the tiny model's size
  config.total_local_steps = 512
  config.val_interval = 256
  config.log_interval = 128
  config.checkpoint_every = 0
  config.checkpoint_every_s = 0.0
  config.replay.progress = False
  config.replay.plots = False
  s = train.train_and_evaluate(config, str(tmp_path))
  assert s["devices"] == 8
  assert s["server_updates"] >= 2  # GPS updates
  assert s["state_bytes_max_device"] <= 0.25 * s["state_bytes_total"]
  with open(tmp_path / "metrics.jsonl") as f:
    import json  # pylint: disable=g-import-not-at-top
    val = [r["val_loss"] for r in map(json.loads, f) if r["kind"] == "val"]
  assert np.isfinite(val[-1]) and val[-1] < val[0]


def test_resume_on_a_different_device_count(tiny_env, tmp_path):
  """A checkpoint written on 8 devices restores on 2 (the same state, leaf by leaf, laid out on
  2 devices) and the run continues to the same losses within the device-count tolerance."""
  import os  # pylint: disable=g-import-not-at-top
  import shutil  # pylint: disable=g-import-not-at-top
  full = tiny_config("halos", tiny_env, checkpoint_every=2, checkpoint_keep=50,
                     **{"replay.num_devices": 8})
  ref = train.train_and_evaluate(full, str(tmp_path / "eight"))
  ckpt = tmp_path / "eight" / "checkpoints"
  steps = sorted(int(s) for s in os.listdir(ckpt) if s.isdigit())
  assert len(steps) >= 3
  resumed = tmp_path / "two"
  shutil.copytree(ckpt, resumed / "checkpoints")
  for s in steps[1:]:
    shutil.rmtree(resumed / "checkpoints" / str(s))

  states = {}
  for n in (8, 2):
    c = tiny_config("halos", tiny_env, checkpoint_every=2, checkpoint_keep=50,
                    **{"replay.num_devices": n})
    run = train.build(c, str(resumed))
    state = run.checkpointer.latest(run.replay.initial_state())
    run.checkpointer.close()
    assert state.meta.cursor == steps[0]
    workers = state.tree["workers"]["x"]
    assert len(jax.tree.leaves(workers)[0].sharding.device_set) == n
    states[n] = jax.tree.leaves(state.tree)
  assert len(states[8]) == len(states[2])
  for a, b in zip(states[8], states[2]):
    a, b = np.asarray(a), np.asarray(b)
    if a.shape != b.shape:  # worker slots: 8 on 8 devices, 4 on 2 (4 workers, no padding)
      assert a.shape[1:] == b.shape[1:] and (a.shape[0], b.shape[0]) == (8, 4)
      a = a[:4]
    np.testing.assert_array_equal(a, b)

  two = tiny_config("halos", tiny_env, checkpoint_every=2, checkpoint_keep=50,
                    **{"replay.num_devices": 2})
  s = train.train_and_evaluate(two, str(resumed))
  assert s["devices"] == 2
  assert s["final_val_loss"] == pytest.approx(ref["final_val_loss"], rel=1e-4)
