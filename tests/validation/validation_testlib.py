"""Shared pieces of the validation tests: valid base configs and the one-line error check."""
import contextlib
import importlib.util
import os
from unittest import mock

import ml_collections

from halos_jax import algorithms
from halos_jax import config_lib
from halos_jax import train
from halos_jax import validation

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
ALGORITHMS = algorithms.names()


def _tiny_configs():
  spec = importlib.util.spec_from_file_location(
      "validation_tiny_configs", os.path.join(ROOT, "tests", "replay", "tiny_configs.py"))
  module = importlib.util.module_from_spec(spec)
  spec.loader.exec_module(module)
  return module


_TINY = _tiny_configs()
TINY_ENV = _TINY.TINY_ENV  # 2 regions x 2 workers
load_config = _TINY.load_config


def tiny_config(algorithm: str, env_path: str, **overrides) -> ml_collections.ConfigDict:
  """A valid seconds-long lm run config (tests/replay/tiny_configs.py)."""
  return _TINY.tiny_config(algorithm, env_path, **overrides)


def set_path(d: dict, path: str, value) -> None:
  """d[a][b][c] = value for path 'a.b.c' (d a plain nested dict)."""
  *parents, leaf = path.split(".")
  for p in parents:
    d = d[p]
  d[leaf] = value


def del_path(d: dict, path: str) -> None:
  *parents, leaf = path.split(".")
  for p in parents:
    d = d[p]
  del d[leaf]


class ValidationPassed(Exception):
  """Raised in place of config_lib.resolve: the config got past validation."""


@contextlib.contextmanager
def stop_after_validation():
  """train_and_evaluate stops right after validation instead of building the run."""
  with mock.patch.object(config_lib, "resolve", side_effect=ValidationPassed):
    yield


def assert_one_line_error(config, workdir, field: str, *, existing_file: bytes | None = None):
  """train_and_evaluate(config, workdir) fails validation with one line naming `field`.

  Args:
    config: the (invalid) config.
    workdir: the workdir passed; it must not exist afterwards (or, if `existing_file` is given,
      must still be that file with those bytes).
    field: a substring the message must contain (e.g. 'config.K=' or 'workdir=').
    existing_file: the content of a file at `workdir`, which must be left alone.

  Returns:
    The message.
  """
  try:
    with stop_after_validation():
      train.train_and_evaluate(config, workdir)
  except validation.ConfigError as e:
    error = e
  except ValidationPassed:
    raise AssertionError(f"not rejected: {field} (workdir {workdir!r})") from None
  else:
    raise AssertionError("train_and_evaluate returned")  # unreachable with the patch
  # experiments/train.py maps ValueError to `error: ...` and exit status 2.
  assert isinstance(error, ValueError) and isinstance(error, train.ConfigError)
  message = str(error)
  assert message and "\n" not in message and len(message.splitlines()) == 1, repr(message)
  assert field in message, (field, message)
  assert "Traceback" not in message
  if existing_file is None:
    assert not os.path.lexists(workdir), f"{workdir} was created"
  else:
    with open(workdir, "rb") as f:
      assert f.read() == existing_file
  return message
