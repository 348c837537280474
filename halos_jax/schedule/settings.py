"""The scheduler's settings: everything that decides WHEN things happen, nothing else.

Learning rates, momenta and the HALoS merge weight alpha are deliberately absent: the schedule
cannot depend on them. The field names are top-level keys of the project's ml_collections
configs, so `ScheduleSettings.from_config(config)` reads a whole run config and ignores the
rest.
"""
from __future__ import annotations

import dataclasses
import math
from typing import Any

import numpy as np

from halos_jax import algorithms
from halos_jax import fields


class InvalidSettings(fields.FieldError):
  """A scheduler setting (or its combination with the environment) that cannot be used.

  For one field's value, `field`, `value` and `allowed` say which (the message reads
  `<field>=<value>: must be <allowed>`)."""


# The kinds of message, each with its size (docs/schedule.md, "Messages").
MESSAGE_KINDS = ("upload", "download", "delta", "global")
MESSAGE_SIZE_FIELDS = tuple(k + "_bytes" for k in MESSAGE_KINDS)
# The settings of streaming algorithms (fragments synchronised in turn).
STREAMING_FIELDS = ("fragments", "overlap_steps", "fragment_bytes")


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
    upload_bytes, download_bytes, delta_bytes, global_bytes: the size of each kind of message
      when it differs from `message_bytes` (a codec's payload, docs/codecs.md; None: message_bytes):
      worker -> server (pseudo-gradient, gradient, all-reduce), server -> worker (the model a
      round starts from), LPS -> GPS (Delta), GPS -> LPS (global model).
    fragments: P, the fragments a streaming algorithm synchronises in turn (one every H / P
      local steps; halos_jax/algorithms/streaming_diloco.py). None for other algorithms.
    overlap_steps: tau, local steps a fragment's outer step runs behind (its all-reduce
      overlaps them; 0 <= tau < H / P). None for other algorithms.
    fragment_bytes: the all-reduced bytes of each of the P fragments (config_lib.resolve
      derives them from the model); None: `upload` bytes split evenly.
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
  upload_bytes: int | None = None
  download_bytes: int | None = None
  delta_bytes: int | None = None
  global_bytes: int | None = None
  fragments: int | None = None
  overlap_steps: int | None = None
  fragment_bytes: tuple | None = None

  def __post_init__(self):
    set_ = object.__setattr__

    def check(key, rule, convert):
      set_(self, key, convert(fields.check(key, getattr(self, key), rule, InvalidSettings)))

    fields.check("algorithm", self.algorithm, fields.one_of(algorithms.names()), InvalidSettings)
    for key in ("H", "total_local_steps", "local_batch", "global_batch", "message_bytes"):
      check(key, fields.INT1, int)
    check("step_time_ms", fields.POSITIVE, float)
    check("rescale_local_steps", fields.BOOL, bool)
    for key in self.algorithm_module.REQUIRED_SETTINGS:
      if getattr(self, key) is None:
        raise InvalidSettings(f"{key} is required for algorithm {self.algorithm!r}", field=key)
    for key in ("K", "workers_per_lps") + MESSAGE_SIZE_FIELDS:  # None, or a positive integer
      if getattr(self, key) is not None:
        check(key, fields.INT1, int)
    if self.fragments is not None:
      check("fragments", fields.INT1, int)
    if self.overlap_steps is not None:
      check("overlap_steps", fields.INT0, int)
    if self.fragment_bytes is not None:
      sizes = self.fragment_bytes
      if (isinstance(sizes, (str, bytes)) or not hasattr(sizes, "__len__")
          or not all(isinstance(b, (int, np.integer)) and not isinstance(b, bool) and b >= 0
                     for b in sizes)):
        raise InvalidSettings(f"fragment_bytes={sizes!r}: must be a list of byte counts >= 0",
                              field="fragment_bytes")
      set_(self, "fragment_bytes", tuple(int(b) for b in sizes))

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

  def bytes_of(self, kind: str) -> int:
    """The size of one message of `kind` (MESSAGE_KINDS)."""
    if kind not in MESSAGE_KINDS:
      raise ValueError(f"message kind {kind!r}: must be one of {MESSAGE_KINDS}")
    size = getattr(self, kind + "_bytes")
    return self.message_bytes if size is None else size

  def message_sizes(self) -> dict:
    """{kind: bytes} of every kind of message."""
    return {k: self.bytes_of(k) for k in MESSAGE_KINDS}

  def to_dict(self) -> dict:
    """The fields; the optional ones (per-kind sizes, fragments) only when set, so a schedule
    that does not use them keeps its header and its sha256."""
    d = dataclasses.asdict(self)
    for key in MESSAGE_SIZE_FIELDS + STREAMING_FIELDS:
      if d[key] is None:
        del d[key]
    if d.get("fragment_bytes") is not None:
      d["fragment_bytes"] = list(d["fragment_bytes"])
    return d

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
        fragments=get("fragments", required=False),
        overlap_steps=get("overlap_steps", required=False),
        fragment_bytes=get("fragment_bytes", required=False),
        **_message_sizes(get("exchange", required=False)),
    )


def _message_sizes(exchange) -> dict:
  """The per-kind sizes a run config derived (`config.exchange.<kind>_bytes`, set by
  config_lib.resolve from the codecs), or none."""
  out = {}
  for key in MESSAGE_SIZE_FIELDS:
    value = None
    if exchange is not None:
      try:
        value = exchange[key]
      except (KeyError, TypeError):
        value = getattr(exchange, key, None)
    if value is not None:
      out[key] = value
  return out
