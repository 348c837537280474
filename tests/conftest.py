"""Shared test setup: strict numerics, and the device count each pytest process expects.

scripts/test.sh runs the suite twice: tests marked `mesh` in a process with 8 fake CPU devices
(XLA_FLAGS=--xla_force_host_platform_device_count=8), everything else in a plain process.
"""
import os

import jax
import pytest
from hypothesis import HealthCheck, settings

jax.config.update("jax_numpy_rank_promotion", "raise")

# Hypothesis: no per-example deadline (first calls compile), a modest default example count.
settings.register_profile(
    "halos", deadline=None, max_examples=40, suppress_health_check=[HealthCheck.too_slow]
)
settings.load_profile("halos")


def pytest_collection_modifyitems(config, items):
  """Skips mesh tests in a process without 8 devices, with a reason saying how to run them."""
  fake8 = "xla_force_host_platform_device_count=8" in os.environ.get("XLA_FLAGS", "")
  if fake8:
    return
  skip = pytest.mark.skip(reason="mesh test: run via scripts/test.sh (needs 8 fake CPU devices)")
  for item in items:
    if "mesh" in item.keywords:
      item.add_marker(skip)
