"""Parallel replay on a mesh of 8 fake CPU devices equals sequential replay, bit for bit."""
import pytest

import jax
from halos_jax import train
from tiny_configs import tiny_config

pytestmark = pytest.mark.mesh


@pytest.mark.parametrize("algorithm", ["halos", "diloco_dynupd"])
def test_mesh_parallel_equals_sequential(algorithm, tiny_env, tmp_path):
  assert jax.device_count() == 8
  out = {}
  for parallel in (True, False):
    config = tiny_config(algorithm, tiny_env, total_local_steps=24,
                         **{"replay.parallel": parallel})
    out[parallel] = train.train_and_evaluate(config, str(tmp_path / str(parallel)))
  assert out[True]["devices"] == 8
  assert out[True]["params_sha256"] == out[False]["params_sha256"]
  assert out[True]["final_val_loss"] == out[False]["final_val_loss"]
