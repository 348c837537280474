"""halos_jax.validation: hand-picked boundaries, the project's configs, workdirs, env files."""
import os
import stat

import ml_collections
import numpy as np
import pytest

from halos_jax import cli
from halos_jax import train
from halos_jax import validation
from halos_jax.data import mmidx
from halos_jax.schedule import InvalidEnvironment, load_environment

import validation_testlib as vt

MOMENTA = ("worker.b1", "worker.b2", "outer.momentum", "ps.beta", "lps.beta", "gps.beta")


def _algorithm_of(path):
  return {"outer": "diloco", "ps": "async_local_sgd", "lps": "halos", "gps": "halos"}.get(
      path.split(".")[0], "halos")


@pytest.fixture
def env_path(tmp_path):
  path = tmp_path / "tiny.yaml"
  path.write_text(vt.TINY_ENV)
  return str(path)


def _config(env_path, path=None, value=None, algorithm=None, **more):
  d = vt.tiny_config(algorithm or _algorithm_of(path or ""), env_path).to_dict()
  if path is not None:
    vt.set_path(d, path, value)
  for k, v in more.items():
    vt.set_path(d, k.replace("__", "."), v)
  return ml_collections.ConfigDict(d)


# --- The project's configs ----------------------------------------------------------------------


@pytest.mark.parametrize("algorithm", vt.ALGORITHMS)
def test_the_projects_configs_pass(algorithm, tmp_path):
  for arg in ("runlocal", "quadratic"):
    validation.validate_config(vt.load_config(algorithm, arg))
  # The reference config needs the Pile: without a data path it names the field ...
  reference = vt.load_config(algorithm, "")
  with pytest.raises(validation.ConfigError, match=r"^config\.data\.path='': must be"):
    validation.validate_config(reference)
  # ... and with an MMIDIDX pair of Pythia-shaped entries (2,049 tokens) it passes.
  prefix = mmidx.write_mmidx(tmp_path / "pile", [np.arange(2049) % 50_000] * 3)
  reference.data.path = str(prefix)
  validation.validate_config(reference)
  validation.validate_schedule_config(reference)


# --- Boundaries ---------------------------------------------------------------------------------


@pytest.mark.parametrize("path, value", [
    ("alpha", 0), ("alpha", 0.0), ("alpha", 1), ("alpha", 1.0),
    *[(m, 0.0) for m in MOMENTA], *[(m, 0.999999) for m in MOMENTA],
    ("H", 1), ("K", 1), ("workers_per_lps", 1), ("workers_per_lps", 2), ("total_local_steps", 1),
    ("lps.N", 1), ("gps.N", 1), ("ps.N", 1), ("lps.c", 1 / 16), ("gps.c", 0.5),
    ("worker.t_warmup", 0), ("worker.t_warmup", 11), ("worker.min_lr_ratio", 0),
    ("worker.min_lr_ratio", 1), ("worker.eps", 0.0), ("worker.weight_decay", 0.0),
    ("worker.clip_norm", float("inf")), ("checkpoint_every", 0), ("checkpoint_every_s", 0.0),
    ("seed", 0), ("seed", 2**32 - 1), ("message_bytes", None), ("message_bytes", 1),
    ("nonfinite", "stop"), ("nonfinite", "skip"), ("global_batch", 2), ("step_time_ms", 1e-9),
    ("outer.lr", 1e-12), ("data.seq_len", 256), ("data.val_sequences", 0),
    ("replay.num_devices", 0), ("replay.num_devices", 1), ("rescale_local_steps", np.bool_(True)),
    ("H", np.int64(3)),
])
def test_valid_boundaries_pass(env_path, path, value):
  # tiny config: local_batch 2, t_max 12, lps.N 16, gps.N 2, the tiny model's max_seq_len 256
  validation.validate_config(_config(env_path, path, value))


@pytest.mark.parametrize("path, value, message", [
    ("K", 0, "config.K=0: must be an integer >= 1"),
    ("H", 0, "config.H=0: must be an integer >= 1"),
    ("H", True, "config.H=True: must be an integer >= 1"),
    ("H", 2.0, "config.H=2.0: must be an integer >= 1"),
    ("alpha", -1e-9, "config.alpha=-1e-09: must be a number in [0, 1]"),
    ("alpha", 1.000001, "config.alpha=1.000001: must be a number in [0, 1]"),
    ("alpha", float("nan"), "config.alpha=nan: must be a number in [0, 1]"),
    *[(m, 1.0, f"config.{m}=1.0: must be a number in [0, 1)") for m in MOMENTA],
    *[(m, -0.1, f"config.{m}=-0.1: must be a number in [0, 1)") for m in MOMENTA],
    ("lps.N", 0, "config.lps.N=0: must be an integer >= 1"),
    ("gps.c", 0.5000001, "config.gps.c=0.5000001: must be in [0, 1/N] = [0, 0.5]"),
    ("worker.max_lr", 0.0, "config.worker.max_lr=0.0: must be a finite number > 0"),
    ("worker.max_lr", float("inf"), "config.worker.max_lr=inf: must be a finite number > 0"),
    ("lps.eta", -1.0, "config.lps.eta=-1.0: must be a finite number > 0"),
    ("step_time_ms", 0, "config.step_time_ms=0: must be a finite number > 0"),
    ("total_local_steps", 0, "config.total_local_steps=0: must be an integer >= 1"),
    ("global_batch", 3, "config.global_batch=3: must be a multiple of config.local_batch=2"),
    ("worker.t_max", 2, "config.worker.t_max=2: must be > config.worker.t_warmup=2"),
    ("seed", 2**32, "config.seed=4294967296: must be an integer in [0, 4294967295]"),
    ("nonfinite", "ignore", "config.nonfinite='ignore': must be one of stop, skip"),
    ("algorithm", "sgd", "config.algorithm='sgd': must be one of async_local_sgd, ddp, diloco,"),
    ("workers_per_lps", 3, "config.workers_per_lps=3 does not divide the 4 workers"),
    ("workers_per_lps", 4, "config.workers_per_lps=4: LPS 0 would hold workers 0..3 from "
                           "regions [0, 1]"),
    ("message_bytes", 0, "config.message_bytes=0: must be None or an integer >= 1"),
    ("data.seq_len", 257, "config.data.seq_len=257: must be <= 256"),
    ("data.tokenizer", "gpt2", "config.model.name='tiny': must be a model whose vocabulary"),
    ("replay.num_devices", 10**6, "config.replay.num_devices=1000000: must be 0 (all) or"),
    ("env", "nope", "config.env: unknown environment preset 'nope'"),
    ("env", 3, "config.env=3: must be a preset name"),
    ("replay", 3, "config.replay=3: must be a block of fields"),
    ("H", "8\nK=2", r"config.H='8\nK=2': must be an integer >= 1"),
])
def test_invalid_values_name_field_value_and_allowed(env_path, path, value, message):
  with pytest.raises(validation.ConfigError) as e:
    validation.validate_config(_config(env_path, path, value))
  assert str(e.value).startswith(message), str(e.value)
  assert "\n" not in str(e.value)


def test_missing_fields_and_blocks(env_path):
  d = vt.tiny_config("halos", env_path).to_dict()
  del d["gps"]
  with pytest.raises(validation.ConfigError, match=r"^config\.gps is missing: algorithm 'halos'"):
    validation.validate_config(d)  # a plain mapping is accepted too
  d = vt.tiny_config("diloco", env_path).to_dict()
  del d["worker"]["b2"]
  with pytest.raises(validation.ConfigError, match=r"^config\.worker\.b2 is missing"):
    validation.validate_config(d)
  with pytest.raises(validation.ConfigError, match=r"^config=None: must be an ml_collections"):
    validation.validate_config(None)


def test_a_config_of_your_own_problem_skips_model_and_data(env_path):
  c = _config(env_path, "data.source", "mmidx")  # no data path: only the problem reads it
  with pytest.raises(validation.ConfigError, match="config.data.path"):
    validation.validate_config(c)
  validation.validate_config(c, with_problem=False)


def test_schedule_only_configs(env_path):
  c = ml_collections.ConfigDict(dict(
      algorithm="halos", env=env_path, H=2, K=2, workers_per_lps=2, total_local_steps=10,
      local_batch=2, global_batch=8, step_time_ms=1000.0, message_bytes=10**6))
  assert validation.validate_schedule_config(c).num_workers == 4
  del c.message_bytes  # then the size comes from the model
  with pytest.raises(validation.ConfigError, match=r"config\.model\.name is missing"):
    validation.validate_schedule_config(c)
  c = ml_collections.ConfigDict(dict(algorithm="halos", H=2, total_local_steps=10, local_batch=2,
                                     global_batch=8, step_time_ms=1.0, message_bytes=1))
  with pytest.raises(validation.ConfigError, match=r"^config\.K is missing"):
    validation.validate_schedule_config(c)


# --- Workdirs -----------------------------------------------------------------------------------


def test_workdirs(tmp_path):
  validation.validate_workdir(str(tmp_path))  # existing folder
  validation.validate_workdir(tmp_path / "a" / "b" / "c")  # creatable, and not created
  assert not (tmp_path / "a").exists()
  (tmp_path / "f").write_text("x")
  cases = {
      str(tmp_path / "f"): "is an existing file; must be a folder",
      str(tmp_path / "f" / "sub" / "run"): f"cannot be created: {str(tmp_path / 'f')!r} is a file",
      "": "must be the path of a folder",
      None: "must be the path of a folder",
      "a\0b": "must not contain a NUL character",
      str(tmp_path / ("x" * 300)): "cannot be used: File name too long",
  }
  for workdir, fragment in cases.items():
    with pytest.raises(validation.ConfigError) as e:
      validation.validate_workdir(workdir)
    message = str(e.value)
    assert message.startswith(f"workdir={workdir!r}: "[:60]) and fragment in message, message
  assert (tmp_path / "f").read_text() == "x"


def test_unwritable_workdirs(tmp_path, monkeypatch):
  target = tmp_path / "ro"
  target.mkdir()
  if os.geteuid() != 0:  # a real read-only folder (root may write anywhere)
    target.chmod(stat.S_IRUSR | stat.S_IXUSR)
    try:
      with pytest.raises(validation.ConfigError, match="cannot be created: no write permission"):
        validation.validate_workdir(target / "run")
    finally:
      target.chmod(stat.S_IRWXU)
  monkeypatch.setattr(validation.os, "access", lambda path, mode: False)
  with pytest.raises(validation.ConfigError, match=r"ro': the folder is not writable$"):
    validation.validate_workdir(target)
  with pytest.raises(validation.ConfigError, match="cannot be created: no write permission in"):
    validation.validate_workdir(target / "run")


def test_train_and_evaluate_validates_before_it_writes(env_path, tmp_path):
  workdir = tmp_path / "run"
  with pytest.raises(train.ConfigError, match=r"^config\.lps\.beta=1\.0: must be"):
    train.train_and_evaluate(_config(env_path, "lps.beta", 1.0), str(workdir))
  assert not workdir.exists()
  (tmp_path / "f").write_text("x")  # a valid config, a workdir under a file
  vt.assert_one_line_error(_config(env_path), str(tmp_path / "f" / "x"), "workdir=")
  vt.assert_one_line_error(_config(env_path), str(tmp_path / "f"), "workdir=",
                           existing_file=b"x")


# --- Environment files that used to escape as other exceptions ----------------------------------


@pytest.mark.parametrize("content, fragment", [
    ("network_bandwidths: !!int abc\n", "malformed YAML: invalid literal for int()"),
    ("a: !!timestamp 2020-99-99\n", "malformed YAML: month must be in 1..12"),
    ("[" * 600, "malformed YAML: maximum recursion depth exceeded"),
    ("network_bandwidths: [[%d]]\nworker_speeds: [[1]]\n" % 10**400,
     "network_bandwidths[0][0] (Gbps) must be positive and finite, got an integer of 1329 bits"),
    ("network_bandwidths: [[.nan]]\nworker_speeds: [[1]]\n",
     "must be positive and finite, got nan"),
    ("- 1\n", "expected a mapping"),
])
def test_environment_file_errors_are_one_line(tmp_path, content, fragment):
  path = tmp_path / "env.yaml"
  path.write_text(content)
  with pytest.raises(InvalidEnvironment) as e:
    load_environment(str(path))
  assert fragment in str(e.value) and "\n" not in str(e.value), str(e.value)


def test_environment_paths_the_os_rejects(tmp_path):
  with pytest.raises(InvalidEnvironment, match="does not exist"):
    load_environment("x" * 300 + ".yaml")  # ENAMETOOLONG, not an OSError
  with pytest.raises(InvalidEnvironment, match="is not a regular file"):
    load_environment(str(tmp_path))


def test_error_line_keeps_the_last_line_of_an_embedded_traceback():
  text = ("flag --config=c.py:x: Error whilst parsing config file:\n\nTraceback (most recent "
          "call last):\n  File \"c.py\", line 3\n    raise ValueError\nValueError: bad arg\n")
  assert cli.error_line(text) == "flag --config=c.py:x: ValueError: bad arg"
