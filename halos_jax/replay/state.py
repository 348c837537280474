"""The replay's state at an event boundary: arrays (`tree`) and host bookkeeping (`ReplayMeta`).

A checkpoint holds both: the tree as orbax arrays, the meta as JSON (`ReplayMeta.to_json`). The
tree has a fixed structure: per worker one slot for the snapshot of its round in flight and one
for that round's result (a worker has at most one round in flight in every algorithm), its
optimizer state, and the servers' state (docs/replay.md).
"""
from __future__ import annotations

import dataclasses
import json

# A worker's round: none in flight, dispatched (snapshot taken), or computed (result known).
IDLE, PENDING, COMPUTED = "idle", "pending", "computed"


@dataclasses.dataclass
class ReplayMeta:
  """The host-side bookkeeping of a replay.

  Saved in checkpoints: cursor (events done), status and spec (per worker: its round's state and
  RoundSpec fields), counted_steps and server_updates (of the evaluated model), next_eval and
  next_log (local-step thresholds), window (H-weighted train-loss sum and steps since the last
  train record), metrics (records so far), wall_s, rounds_computed, steps_computed (local steps
  run, in-flight rounds at the stop included), skipped_updates (policy 'skip').

  Not saved as such: values still on the device, read in one host transfer where losses are read
  anyway. `pending_losses` ([loss, H, code] per arrival since the last update record) and
  `pending_skips` ([code, info] per skip check) are saved as host numbers only by a checkpoint
  taken between two update records (`save_pending`); `round_checks` (the non-finite codes of the
  rounds computed since the last read) are resolved before every save.
  """
  status: list
  spec: list
  next_log: int
  cursor: int = 0
  counted_steps: int = 0
  server_updates: int = 0
  next_eval: int = 0
  window: list = dataclasses.field(default_factory=lambda: [0.0, 0])
  metrics: list = dataclasses.field(default_factory=list)
  wall_s: float = 0.0
  rounds_computed: int = 0
  steps_computed: int = 0
  skipped_updates: int = 0
  pending_losses: list = dataclasses.field(default_factory=list)
  pending_skips: list = dataclasses.field(default_factory=list)
  round_checks: list = dataclasses.field(default_factory=list)
  save_pending: bool = False

  SAVED = ("cursor", "status", "spec", "counted_steps", "server_updates", "next_eval",
           "next_log", "window", "metrics", "wall_s", "rounds_computed", "steps_computed",
           "skipped_updates")

  @classmethod
  def fresh(cls, num_workers: int, log_interval: int) -> "ReplayMeta":
    return cls(status=[IDLE] * num_workers, spec=[None] * num_workers,
               next_log=int(log_interval))

  def to_json(self) -> dict:
    """The checkpoint's JSON object (plain lists and numbers)."""
    d = {k: getattr(self, k) for k in self.SAVED}
    if self.save_pending:
      if self.pending_losses:
        d["pending_losses"] = self.pending_losses
      if self.pending_skips:
        d["pending_skips"] = self.pending_skips
    return json.loads(json.dumps(d))

  @classmethod
  def from_json(cls, d: dict) -> "ReplayMeta":
    """The meta of a checkpoint's JSON (`check_json` first); unknown keys are ignored."""
    kwargs = {k: d[k] for k in cls.SAVED}
    kwargs["pending_losses"] = [list(e) for e in d.get("pending_losses", [])]
    kwargs["pending_skips"] = [list(e) for e in d.get("pending_skips", [])]
    return cls(**kwargs)

  @classmethod
  def check_json(cls, d: dict, num_workers: int) -> None:
    """A restored meta must be a whole one: every saved key, per-worker lists of the right
    length, an event index (else the JSON is corrupt or from an unknown writer).

    Raises:
      ValueError: naming what is wrong.
    """
    missing = [k for k in cls.SAVED if k not in d]
    if missing:
      raise ValueError(f"meta JSON lacks {', '.join(missing)}")
    for key in ("status", "spec"):
      if not isinstance(d[key], list) or len(d[key]) != num_workers:
        raise ValueError(f"meta JSON: '{key}' is not a list of {num_workers} workers")
    if not isinstance(d["cursor"], int) or d["cursor"] < 0:
      raise ValueError(f"meta JSON: cursor {d['cursor']!r} is not an event index")


@dataclasses.dataclass
class ReplayState:
  """The whole simulation at an event boundary: arrays (`tree`) and host bookkeeping (`meta`)."""
  tree: dict  # servers, worker_opt[W], snapshot[W], delta[W], loss[W]
  meta: ReplayMeta

  def __post_init__(self):
    if not isinstance(self.meta, ReplayMeta):
      raise TypeError(f"ReplayState.meta must be a ReplayMeta, got {type(self.meta).__name__}")

  @property
  def num_workers(self) -> int:
    return len(self.meta.status)

