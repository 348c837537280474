"""Whole-simulation checkpoints with orbax: every server, worker and round in flight.

A checkpoint is one orbax step (numbered by the schedule cursor) holding two items:
`state` (all arrays: servers, worker optimizer states, snapshot and result slots) and `meta`
(JSON: schedule cursor, round status, counters, metrics so far, the config and schedule hashes).
The array tree has a fixed structure, so it is restored onto a template built from the initial
parameters. orbax writes each step to a temporary directory and renames it when complete, so a
kill during a save leaves the previous step intact; a step that fails to restore is reported and
the next older one is tried.
"""
from __future__ import annotations

import json
import logging
import os
from typing import Any

import jax
import orbax.checkpoint as ocp

from halos_jax.replay.engine import ReplayState

log = logging.getLogger(__name__)


class CheckpointError(RuntimeError):
  """A checkpoint cannot be used (corrupt, or made by a different config)."""


def _jsonable(meta: dict) -> dict:
  return json.loads(json.dumps({k: v for k, v in meta.items() if not k.startswith("_")}))


class Checkpointer:
  """Saves and restores `ReplayState`s under `directory` (keeps the newest `keep`)."""

  def __init__(self, directory: str, *, keep: int = 2, identity: dict[str, str] | None = None):
    self.directory = os.path.abspath(directory)
    self.identity = dict(identity or {})
    options = ocp.CheckpointManagerOptions(
        max_to_keep=max(1, int(keep)), enable_async_checkpointing=False, create=True)
    self.manager = ocp.CheckpointManager(self.directory, options=options)

  def save(self, state: ReplayState) -> None:
    meta = _jsonable(state.meta)
    meta["identity"] = self.identity
    step = int(meta["cursor"])
    if step in self.manager.all_steps():
      return
    self.manager.save(step, args=ocp.args.Composite(
        state=ocp.args.StandardSave(state.tree), meta=ocp.args.JsonSave(meta)))
    self.manager.wait_until_finished()

  def latest(self, template: ReplayState) -> ReplayState | None:
    """The newest restorable checkpoint, or None when there is none.

    Raises:
      CheckpointError: the checkpoints were made by a different run (config, schedule or data),
        or none of the existing ones can be read.
    """
    steps = sorted(self.manager.all_steps(), reverse=True)
    if not steps:
      return None
    abstract = jax.tree.map(ocp.utils.to_shape_dtype_struct, template.tree)
    errors = []
    for step in steps:
      try:
        restored = self.manager.restore(step, args=ocp.args.Composite(
            state=ocp.args.StandardRestore(abstract), meta=ocp.args.JsonRestore()))
      except Exception as e:  # pylint: disable=broad-except
        errors.append(f"step {step}: {type(e).__name__}: {str(e).splitlines()[0][:200]}")
        log.warning("checkpoint step %d unreadable, trying an older one: %s", step, e)
        continue
      meta = dict(restored["meta"])
      ident = meta.pop("identity", {})
      for key, want in self.identity.items():
        if ident.get(key) != want:
          raise CheckpointError(
              f"the checkpoints in {self.directory} were made with a different {key} "
              f"({ident.get(key)!s:.16} != {want!s:.16}); use a new --workdir or the same config")
      return ReplayState(restored["state"], meta)
    raise CheckpointError(
        f"no readable checkpoint in {self.directory}: " + "; ".join(errors))

  def close(self) -> None:
    self.manager.close()


def save_params(path: str, params: Any) -> None:
  """Writes one parameter pytree as a standalone orbax checkpoint (the final evaluated model)."""
  path = os.path.abspath(path)
  with ocp.StandardCheckpointer() as ckptr:
    ckptr.save(path, params, force=True)
