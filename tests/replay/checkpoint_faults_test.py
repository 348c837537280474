"""Damaged checkpoints and failed saves: one clear line, the previous checkpoint kept.

checkpoint_test.py covers a newest step whose files are all empty and a killed save's leftover;
here: one truncated array file, a truncated or incomplete meta JSON, no readable step at all,
the disk filling up during a save (by injection, and for real on a small tmpfs when this
machine lets us mount one). Quadratic runs: about a second each.
"""
import errno
import json
import logging
import os
import shutil
import subprocess
import sys
import uuid

import pytest
from orbax.checkpoint._src.handlers import json_checkpoint_handler

from halos_jax import config_lib
from halos_jax import schedule as schedule_lib
from halos_jax import train
from halos_jax.replay import checkpoint as ckpt_lib
from tiny_configs import ROOT, tiny_config

LOGGER = "halos_jax.replay.checkpoint"


def _config(env, **kw):
  return tiny_config("async_local_sgd", env, problem="quadratic", total_local_steps=120,
                     checkpoint_every=2, checkpoint_keep=3, **{"quadratic.dim": 8}, **kw)


def _steps(workdir):
  d = os.path.join(workdir, "checkpoints")
  return sorted(int(n) for n in os.listdir(d) if n.isdigit())


@pytest.fixture(scope="module")
def reference(tiny_env, tmp_path_factory):
  return train.train_and_evaluate(_config(tiny_env), str(tmp_path_factory.mktemp("ref")))


def _truncate(path):
  size = os.path.getsize(path)
  with open(path, "r+b") as f:
    f.truncate(size // 2)


def _damage(step_dir, how):
  if how == "array file truncated":
    (data,) = [os.path.join(step_dir, "state", "d", n)
               for n in os.listdir(os.path.join(step_dir, "state", "d"))]
    _truncate(data)
  elif how == "meta JSON truncated":
    _truncate(os.path.join(step_dir, "meta", "metadata"))
  elif how == "meta JSON incomplete":
    path = os.path.join(step_dir, "meta", "metadata")
    meta = json.load(open(path))
    del meta["status"]
    json.dump(meta, open(path, "w"))


@pytest.mark.parametrize("how", ["array file truncated", "meta JSON truncated",
                                 "meta JSON incomplete"])
def test_damaged_newest_step_falls_back_with_one_warning_line(how, tiny_env, tmp_path, reference,
                                                              caplog, capsys):
  workdir = str(tmp_path)
  train.train_and_evaluate(_config(tiny_env), workdir)
  steps = _steps(workdir)
  newest = os.path.join(workdir, "checkpoints", str(steps[-1]))
  _damage(newest, how)
  with caplog.at_level(logging.WARNING, logger=LOGGER):
    got = train.train_and_evaluate(_config(tiny_env), workdir)
  warnings = [r.getMessage() for r in caplog.records if r.name == LOGGER]
  assert len(warnings) == 1, warnings
  assert warnings[0].startswith(f"checkpoint step {steps[-1]} unreadable ({newest}): ")
  assert warnings[0].endswith(f"; falling back to step {steps[-2]}")
  assert "\n" not in warnings[0] and "tensorstore_spec" not in warnings[0]
  assert got["params_sha256"] == reference["params_sha256"]
  # The unreadable step was written anew when the run reached it again.
  caplog.clear()
  capsys.readouterr()
  with caplog.at_level(logging.WARNING, logger=LOGGER):
    again = train.train_and_evaluate(_config(tiny_env), workdir)
  assert not [r for r in caplog.records if r.name == LOGGER]
  assert f"resuming from event {steps[-1]} of {steps[-1]}" in capsys.readouterr().out
  assert again["params_sha256"] == reference["params_sha256"]


def test_no_readable_step_is_an_error_naming_each(tiny_env, tmp_path):
  workdir = str(tmp_path)
  train.train_and_evaluate(_config(tiny_env), workdir)
  steps = _steps(workdir)
  for s in steps:
    _damage(os.path.join(workdir, "checkpoints", str(s)), "meta JSON truncated")
  with pytest.raises(ckpt_lib.CheckpointError) as info:
    train.train_and_evaluate(_config(tiny_env), workdir)
  message = str(info.value)
  assert message.startswith(f"no readable checkpoint in {workdir}/checkpoints (step {steps[-1]}: ")
  assert all(f"step {s}: " in message for s in steps) and "\n" not in message


def test_disk_full_during_a_save_keeps_the_previous_checkpoint(tiny_env, tmp_path, reference,
                                                               monkeypatch):
  """The meta JSON of the third save hits ENOSPC after the arrays of that step were written."""
  calls = []
  write = json_checkpoint_handler.JsonCheckpointHandler._save_fn

  async def full_disk(self, x, directory):
    calls.append(directory)
    if len(calls) == 3:
      raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC), str(directory / "metadata"))
    return await write(self, x, directory)

  monkeypatch.setattr(json_checkpoint_handler.JsonCheckpointHandler, "_save_fn", full_disk)
  workdir = str(tmp_path)
  with pytest.raises(ckpt_lib.CheckpointError) as info:
    train.train_and_evaluate(_config(tiny_env), workdir)
  saved = _steps(workdir)
  # Saves come after every 2nd server update (a counting event); the third one failed.
  schedule = schedule_lib.schedule_from_config(config_lib.resolve(_config(tiny_env)))
  after_count = [i + 1 for i, e in enumerate(schedule.events) if e.counted_steps >= 0]
  assert saved == [after_count[1], after_count[3]]
  failed = os.path.join(workdir, "checkpoints", str(after_count[5]))
  assert str(info.value) == f"could not save checkpoint to {failed}: No space left on device"
  assert set(os.listdir(os.path.join(workdir, "checkpoints"))) == {str(s) for s in saved}
  assert not os.path.exists(os.path.join(workdir, "summary.json"))
  monkeypatch.undo()
  got = train.train_and_evaluate(_config(tiny_env), workdir)  # resumes from the previous one
  assert got["params_sha256"] == reference["params_sha256"]


@pytest.fixture
def small_tmpfs(tmp_path):
  """A 200 KiB tmpfs (two or three checkpoints of the quadratic), or skip if mounting is not
  allowed here (the injection test above covers the logic everywhere)."""
  mount = tmp_path / f"tmpfs-{uuid.uuid4().hex[:6]}"
  mount.mkdir()
  proc = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=200k", "tmpfs", str(mount)],
                        capture_output=True, text=True, check=False)
  if proc.returncode != 0:
    pytest.skip(f"cannot mount a tmpfs here: {proc.stderr.strip()}")
  try:
    yield str(mount)
  finally:
    subprocess.run(["umount", str(mount)], check=False)


def test_disk_full_on_a_real_tmpfs_is_one_error_line(tiny_env, small_tmpfs, tmp_path):
  workdir = os.path.join(small_tmpfs, "run")
  cmd = [sys.executable, "-m", "experiments.train",
         "--config=configs/async_local_sgd.py:quadratic", f"--workdir={workdir}",
         f"--config.env={tiny_env}", "--config.replay.progress=False",
         "--config.replay.plots=False", "--config.total_local_steps=120", "--config.H=4",
         "--config.checkpoint_every_s=0", "--config.checkpoint_every=1"]
  proc = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, timeout=300)
  assert proc.returncode == 2, proc.stderr[-2000:]
  lines = [l for l in proc.stderr.splitlines() if l.strip()]
  assert len(lines) == 1, proc.stderr[-3000:]
  assert lines[0].startswith(f"error: could not save checkpoint to {workdir}/checkpoints/")
  assert lines[0].endswith(": No space left on device")
  saved = _steps(workdir)
  assert saved and set(os.listdir(os.path.join(workdir, "checkpoints"))) == {str(s) for s in saved}
  # The kept checkpoints resume on a disk with room.
  moved = str(tmp_path / "moved")
  shutil.copytree(workdir, moved)
  proc = subprocess.run([*cmd[:4], f"--workdir={moved}", *cmd[5:-1],
                         "--config.checkpoint_every=0"], cwd=ROOT,  # resumable: fewer saves
                        capture_output=True, text=True, timeout=300)
  assert proc.returncode == 0, proc.stderr[-2000:]
  assert f"resuming from event {saved[-1]} of " in proc.stdout
