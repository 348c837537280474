"""build_schedule: one entry point, one builder module per algorithm."""
from __future__ import annotations

import importlib
from typing import Any

from halos_jax.schedule.environment import Environment, load_environment
from halos_jax.schedule.events import Schedule
from halos_jax.schedule.settings import ScheduleSettings

# algorithm -> module with `build(env, settings) -> Schedule`. A new algorithm is a new module
# plus a line here (and its name in settings.ALGORITHMS).
BUILDERS = {
    "ddp": "halos_jax.schedule.ddp",
    "diloco": "halos_jax.schedule.diloco",
    "diloco_dynupd": "halos_jax.schedule.diloco",
    "async_local_sgd": "halos_jax.schedule.async_local_sgd",
    "halos": "halos_jax.schedule.halos",
}


def build_schedule(env: Environment, settings: ScheduleSettings) -> Schedule:
  """The whole run's schedule (all events, before any training).

  Args:
    env: the Environment (see load_environment).
    settings: the ScheduleSettings.

  Returns:
    The Schedule.

  Raises:
    InvalidSettings: settings that do not fit the environment (e.g. an LPS across regions).
  """
  module = importlib.import_module(BUILDERS[settings.algorithm])
  return module.build(env, settings)


def schedule_from_config(config: Any, *, default_message_bytes: int | None = None) -> Schedule:
  """load_environment(config.env) + ScheduleSettings.from_config(config) + build_schedule."""
  try:
    env_spec = config["env"]
  except (KeyError, AttributeError, TypeError):
    env_spec = getattr(config, "env", "geo4")
  env = load_environment(env_spec)
  settings = ScheduleSettings.from_config(config, default_message_bytes=default_message_bytes)
  return build_schedule(env, settings)
