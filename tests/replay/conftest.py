"""Fixtures of the replay tests."""
import pytest

from tiny_configs import TINY_ENV


@pytest.fixture(scope="session")
def tiny_env(tmp_path_factory):
  path = tmp_path_factory.mktemp("env") / "tiny2x2.yaml"
  path.write_text(TINY_ENV)
  return str(path)
