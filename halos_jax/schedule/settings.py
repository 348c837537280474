"""The scheduler's settings: everything that decides WHEN things happen, nothing else.

Learning rates, momenta and the HALoS merge weight alpha are deliberately absent: the schedule
cannot depend on them. The field names are top-level keys of the project's ml_collections
configs, so `ScheduleSettings.from_config(config)` reads a whole run config and ignores the
rest.
"""
from __future__ import annotations

import dataclasses
import math
import numbers
from typing import Any

import numpy as np

from halos_jax import algorithms


class InvalidSettings(ValueError):
  """A scheduler setting (or its combination with the environment) that cannot be used."""


def _check_int(name: str, value, minimum: int = 1) -> int:
  if not isinstance(value, numbers.Integral) or isinstance(value, bool):
    raise InvalidSettings(f"{name} must be an integer >= {minimum}, got {value!r}")
  if value < minimum:
    raise InvalidSettings(f"{name} must be an integer >= {minimum}, got {value!r}")
  return int(value)


@dataclasses.dataclass(frozen=True)
class ScheduleSettings:
  """What the schedule depends on, besides the environment.

  Attributes:
    algorithm: a module of halos_jax.algorithms (`algorithms.names()`), e.g. 'halos'.
    H: local steps per worker round (before DynUpd rescaling); the algorithm may fix it
      (`local_H`: ddp always uses 1).
    total_local_steps: run length, in local steps counted at the evaluated model's server.
    local_batch: sequences per local step.
    global_batch: sequences per global iteration (position in the LR schedule).
    step_time_ms: milliseconds of one local step at relative speed 1.
    message_bytes: bytes of every message (model, pseudo-gradient, Delta, gradient).
    rescale_local_steps: DynUpd/DyLU, H_w = max(1, ceil(H * s_w)); the algorithm may force
      or ignore it (`rescale`).
    K: LPS updates between two Deltas, counted from the last merge (hierarchical algorithms).
    workers_per_lps: LPS l holds workers [l * wpl, (l + 1) * wpl), all in one region
      (hierarchical algorithms).
  """
  algorithm: str
  H: int
  total_local_steps: int
  local_batch: int
  global_batch: int
  step_time_ms: float
  message_bytes: int
  rescale_local_steps: bool = False
  K: int | None = None
  workers_per_lps: int | None = None

  def __post_init__(self):
    try:
      algorithm = algorithms.get(self.algorithm)
    except algorithms.UnknownAlgorithm as e:
      raise InvalidSettings(str(e)) from None
    set_ = object.__setattr__
    set_(self, "H", _check_int("H", self.H))
    set_(self, "total_local_steps", _check_int("total_local_steps", self.total_local_steps))
    set_(self, "local_batch", _check_int("local_batch", self.local_batch))
    set_(self, "global_batch", _check_int("global_batch", self.global_batch))
    set_(self, "message_bytes", _check_int("message_bytes", self.message_bytes))
    st = self.step_time_ms
    if (not isinstance(st, numbers.Real) or isinstance(st, bool) or not math.isfinite(st)
        or st <= 0):
      raise InvalidSettings(f"step_time_ms must be a positive finite number, got {st!r}")
    set_(self, "step_time_ms", float(st))
    if not isinstance(self.rescale_local_steps, (bool, np.bool_)):
      raise InvalidSettings(
          f"rescale_local_steps must be True or False, got {self.rescale_local_steps!r}")
    set_(self, "rescale_local_steps", bool(self.rescale_local_steps))
    for key in algorithm.REQUIRED_SETTINGS:
      if getattr(self, key) is None:
        raise InvalidSettings(f"{key} is required for algorithm {self.algorithm!r}")
    for key in ("K", "workers_per_lps"):  # ignored by the other algorithms, but never garbage
      if getattr(self, key) is not None:
        set_(self, key, _check_int(key, getattr(self, key)))

  # -- derived ---------------------------------------------------------------------------------

  @property
  def algorithm_module(self):
    """The module of `algorithm` in halos_jax.algorithms."""
    return algorithms.get(self.algorithm)

  @property
  def synchronous(self) -> bool:
    return self.algorithm_module.SYNCHRONOUS

  @property
  def effective_H(self) -> int:
    """H as the builders use it (the algorithm's `local_H`: 1 for ddp)."""
    return self.algorithm_module.local_H(self)

  @property
  def effective_rescale(self) -> bool:
    """Whether DynUpd rescaling applies (the algorithm's `rescale`)."""
    return self.algorithm_module.rescale(self)

  def local_steps(self, worker_speed) -> np.ndarray:
    """H_w for every worker: H, or max(1, ceil(H * s_w)) with DynUpd (docs/algorithms.md 2.1).

    Args:
      worker_speed: float array [W] of normalised speeds s_w in (0, 1].

    Returns:
      int64 array [W].
    """
    s = np.asarray(worker_speed, dtype=np.float64)
    h = self.effective_H
    if not self.effective_rescale:
      return np.full(s.shape, h, dtype=np.int64)
    # H_w = max(1, ceil(H * s_w)), the product in float64 like the reference simulator.
    return np.array([max(1, math.ceil(h * float(x))) for x in s], dtype=np.int64)

  def to_dict(self) -> dict:
    return dataclasses.asdict(self)

  # -- from a run config -----------------------------------------------------------------------

  @classmethod
  def from_config(cls, config: Any, *, default_message_bytes: int | None = None
                  ) -> "ScheduleSettings":
    """Reads the scheduler's keys from a run config (ConfigDict or mapping); ignores the rest.

    Args:
      config: has top-level keys algorithm, H, rescale_local_steps, K, workers_per_lps,
        total_local_steps, local_batch, global_batch, step_time_ms, message_bytes.
      default_message_bytes: used when `config.message_bytes` is None (the caller derives it
        from the model, e.g. `halos_jax.models.param_bytes`).

    Returns:
      The validated settings.

    Raises:
      InvalidSettings: a missing key or an invalid value.
    """
    def get(key, required=True, default=None):
      try:
        return config[key]
      except (KeyError, AttributeError, TypeError):
        if hasattr(config, key):
          return getattr(config, key)
        if required:
          raise InvalidSettings(f"config has no key {key!r} (a scheduler setting)") from None
        return default

    message_bytes = get("message_bytes", required=False)
    if message_bytes is None:
      message_bytes = default_message_bytes
    if message_bytes is None:
      raise InvalidSettings(
          "message_bytes is None and no default was given: set config.message_bytes or pass "
          "default_message_bytes (e.g. halos_jax.models.param_bytes of the model)")
    return cls(
        algorithm=get("algorithm"),
        H=get("H"),
        total_local_steps=get("total_local_steps"),
        local_batch=get("local_batch"),
        global_batch=get("global_batch"),
        step_time_ms=get("step_time_ms"),
        message_bytes=message_bytes,
        rescale_local_steps=get("rescale_local_steps", required=False, default=False),
        K=get("K", required=False),
        workers_per_lps=get("workers_per_lps", required=False),
    )
