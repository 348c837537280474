"""The memory plan (halos_jax/memory.py, experiments.memory) and the check before a run."""
import subprocess
import sys

import pytest

from halos_jax import config_lib
from halos_jax import memory
from halos_jax import models
from halos_jax import train
from halos_jax.validation import ConfigError
from tiny_configs import ROOT, load_config


def _params_bytes(name):
  return 4 * models.param_count(models.get_model_config(name))


def test_resident_state_by_hand_for_halos_on_geo4():
  """16 workers on 8 devices: 2 slots each of params + AdamW (2 moments + count) + a loss;
  LPS r on device 2r, the GPS on device 1 (region 0's other device)."""
  config = config_lib.resolve(load_config("halos"))
  p = memory.plan(config, 8, compile_round=False)
  x = _params_bytes("tiny")
  assert p.workers_per_device == 2
  slot = 3 * x + 4 + 4  # row + two moments + int32 step count, and the fp32 loss
  assert p.resident[3] == p.resident[5] == p.resident[7] == 2 * slot
  # An LPS: params, DN momentum and pending sum, merge point (4 models) + counters; its outbox.
  lps = p.resident[2] - 2 * slot
  assert 5 * x <= lps < 5 * x + 1024
  assert p.resident[0] == p.resident[2] == p.resident[4] == p.resident[6]
  gps = p.resident[1] - 2 * slot
  assert 3 * x <= gps < 3 * x + 1024  # params, momentum, pending sum + counters
  # Batch inputs: 2 slots x H_max steps x 4 sequences x 257 int32 tokens, + learning rates.
  h_max = config.H  # no DynUpd: every round has H steps
  assert p.batch_inputs == 2 * (h_max * 4 * 257 * 4 + h_max * 4)


def test_more_devices_hold_less_each():
  config = config_lib.resolve(load_config("async_local_sgd"))
  one, eight = (memory.plan(config, n, compile_round=False) for n in (1, 8))
  assert sum(eight.resident) == sum(one.resident)
  assert max(eight.resident) < 0.25 * one.resident[0]


def test_remat_and_micro_batches_cut_the_round_temporaries():
  config = config_lib.resolve(load_config("halos"))
  config.local_batch, config.global_batch = 8, 128
  base = memory.plan(config, 8)
  assert base.temporaries and base.temporaries > 0
  config.micro_batch = 2
  micro = memory.plan(config, 8)
  config.model.remat = "block"
  both = memory.plan(config, 8)
  assert micro.temporaries < base.temporaries
  assert both.temporaries <= micro.temporaries


def test_a_run_that_does_not_fit_is_refused(tmp_path):
  config = load_config("halos")
  config.replay.device_memory_gb = 0.001
  with pytest.raises(ConfigError, match=r"the run does not fit: device \d+ needs .* of 0.00 GB"):
    train.train_and_evaluate(config, str(tmp_path / "run"))
  assert not (tmp_path / "run" / "checkpoints").exists()


def test_memory_command_prints_the_plan_and_a_suggestion():
  out = subprocess.run(
      [sys.executable, "-m", "experiments.memory", "--config=configs/halos.py:runlocal",
       "--devices=8", "--device_memory_gb=0.05"],
      cwd=ROOT, capture_output=True, text=True, timeout=300)
  assert out.returncode == 0, out.stderr[-2000:]
  assert "8 devices, 2 worker slot(s) per device" in out.stdout
  assert "does NOT fit" in out.stdout
  assert "fits with --config.micro_batch=" in out.stdout
  bad = subprocess.run(
      [sys.executable, "-m", "experiments.memory", "--config=configs/halos.py:runlocal",
       "--config.micro_batch=3"], cwd=ROOT, capture_output=True, text=True, timeout=300)
  assert bad.returncode == 2
  assert bad.stderr.strip().splitlines()[-1].startswith("error: config.micro_batch=3")
