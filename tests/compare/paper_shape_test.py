"""The paper-shaped configuration (issue 17): the paper's round structure with a micro model.

Every algorithm's `configs/<algorithm>.py:paper_shape` is a valid config whose schedule has the
paper's round counts (docs/algorithms.md 6): 6,144 DDP steps, 192 DiLoCo rounds, 303 DynUpd
rounds, 4,875 Async Local-SGD updates and 396 GPS updates, over 98,304 local steps.
"""
import importlib.util
import pathlib

import pytest

from halos_jax import config_lib, models, validation
from halos_jax.configs import compare as compare_config
from halos_jax.schedule import schedule_from_config

ROOT = pathlib.Path(__file__).resolve().parents[2]
PAPER_UPDATES = {"ddp": 6_144, "diloco": 192, "diloco_dynupd": 303, "async_local_sgd": 4_875,
                 "halos": 396}


def _config(name, arg):
  spec = importlib.util.spec_from_file_location(f"_ps_{name}", ROOT / "configs" / f"{name}.py")
  module = importlib.util.module_from_spec(spec)
  spec.loader.exec_module(module)
  return module.get_config(arg)


@pytest.mark.parametrize("name", sorted(PAPER_UPDATES))
def test_paper_shape_has_the_papers_rounds(name):
  c = _config(name, "paper_shape")
  validation.validate_config(c)
  assert c.model.name == "micro" and c.local_batch == 2 and c.data.seq_len == 64
  schedule = schedule_from_config(config_lib.resolve(c))
  basic = schedule.summary_basic()
  # The data stream serves every sequence the schedule hands out (it wraps around the corpus).
  from halos_jax.replay.problem import make_problem  # pylint: disable=g-import-not-at-top
  last = schedule.summary()["sequences_dispatched"]
  assert make_problem(config_lib.resolve(c)).data.block(last - 2, last).shape == (2, 65)
  assert basic["server_updates"] == PAPER_UPDATES[name]
  assert basic["local_steps"] >= 98_304
  # The LR schedule spans the paper's 6,144 global iterations: 98,304 steps x 2 sequences / 32.
  assert c.total_local_steps * c.local_batch // c.global_batch == c.worker.t_max == 6_144
  # Same timing as the paper's configuration (only the computed model and batch shrink).
  ref = schedule_from_config(_config(name, None).to_dict() | {
      "message_bytes": config_lib.PYTHIA_70M_BYTES}).summary_basic()
  assert basic["simulated_time_ms"] == ref["simulated_time_ms"]


def test_paper_shape_words():
  assert models.get_model_config("micro").max_seq_len == 64
  with pytest.raises(ValueError, match="paper_shape stands alone"):
    _config("halos", "paper_shape,runlocal")
  assert compare_config.get_config("paper_shape").arg == "paper_shape"
