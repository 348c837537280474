"""Checkpoints: an unreadable newest step falls back to the previous one; leftovers of a killed
save are ignored. Both end in the uninterrupted run's bits (quadratic problem: seconds)."""
import json
import logging
import os

from halos_jax import train
from tiny_configs import tiny_config


def _steps(workdir):
  d = os.path.join(workdir, "checkpoints")
  return sorted(int(n) for n in os.listdir(d) if n.isdigit())


def _config(env, **kw):
  return tiny_config("halos", env, problem="quadratic", total_local_steps=200,
                     checkpoint_every=2, checkpoint_keep=3, **kw)


def test_corrupt_newest_checkpoint_falls_back_to_the_previous(tiny_env, tmp_path, caplog):
  want = train.train_and_evaluate(_config(tiny_env), str(tmp_path / "ref"))
  workdir = str(tmp_path / "run")
  train.train_and_evaluate(_config(tiny_env), workdir)
  steps = _steps(workdir)
  assert len(steps) >= 2
  # Truncate every file of the newest step: it can no longer be restored.
  newest = os.path.join(workdir, "checkpoints", str(steps[-1]))
  for root, _, files in os.walk(newest):
    for f in files:
      open(os.path.join(root, f), "wb").close()
  with caplog.at_level(logging.WARNING, logger="halos_jax.replay.checkpoint"):
    got = train.train_and_evaluate(_config(tiny_env), workdir)
  assert f"checkpoint step {steps[-1]} unreadable" in caplog.text
  assert got["params_sha256"] == want["params_sha256"]
  metrics = [json.loads(l) for l in open(os.path.join(workdir, "metrics.jsonl"))]
  ref = [json.loads(l) for l in open(tmp_path / "ref" / "metrics.jsonl")]
  strip = lambda rs: [{k: v for k, v in r.items() if k != "wall_s"} for r in rs]  # noqa: E731
  assert strip(metrics) == strip(ref)


def test_leftover_of_a_killed_save_is_ignored(tiny_env, tmp_path):
  want = train.train_and_evaluate(_config(tiny_env), str(tmp_path / "ref"))
  workdir = str(tmp_path / "run")
  # A save killed half-way leaves orbax's temporary directory behind, never a numbered step.
  os.makedirs(os.path.join(workdir, "checkpoints"), exist_ok=True)
  os.makedirs(os.path.join(workdir, "checkpoints", "999.orbax-checkpoint-tmp-1"))
  got = train.train_and_evaluate(_config(tiny_env), workdir)
  assert got["params_sha256"] == want["params_sha256"]
