"""build_schedule: the algorithm's module (halos_jax.algorithms) builds the whole schedule."""
from __future__ import annotations

from typing import Any

from halos_jax.schedule.environment import Environment, load_environment
from halos_jax.schedule.events import Schedule
from halos_jax.schedule.settings import InvalidSettings, ScheduleSettings


def check_failures_supported(env: Environment, settings: ScheduleSettings) -> None:
  """Raises InvalidSettings when the environment has failures and the algorithm's module does
  not say it handles them (`SUPPORTS_FAILURES = True`; docs/schedule.md, "Failures")."""
  if env.has_failures and not getattr(settings.algorithm_module, "SUPPORTS_FAILURES", False):
    raise InvalidSettings(
        f"algorithm {settings.algorithm!r} does not support the environment's failures "
        "(failures / failure_rate); supported: the algorithms whose module sets "
        "SUPPORTS_FAILURES", field="algorithm")


def build_schedule(env: Environment, settings: ScheduleSettings) -> Schedule:
  """The whole run's schedule (all events, before any training).

  Args:
    env: the Environment (see load_environment).
    settings: the ScheduleSettings.

  Returns:
    The Schedule.

  Raises:
    InvalidSettings: settings that do not fit the environment (e.g. an LPS across regions, an
      algorithm that does not support failures).
  """
  check_failures_supported(env, settings)
  return settings.algorithm_module.build(env, settings)


def schedule_from_config(config: Any, *, default_message_bytes: int | None = None) -> Schedule:
  """load_environment(config.env) + ScheduleSettings.from_config(config) + build_schedule."""
  try:
    env_spec = config["env"]
  except (KeyError, AttributeError, TypeError):
    env_spec = getattr(config, "env", "geo4")
  env = load_environment(env_spec)
  settings = ScheduleSettings.from_config(config, default_message_bytes=default_message_bytes)
  return build_schedule(env, settings)
