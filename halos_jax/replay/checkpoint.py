"""Whole-simulation checkpoints with orbax: every server, worker and round in flight.

A checkpoint is one orbax step (numbered by the schedule cursor) holding two items:
`state` (all arrays: servers, worker optimizer states, snapshot and result slots) and `meta`
(JSON: schedule cursor, round status, counters, metrics so far, the config and schedule hashes).
The array tree has a fixed structure, so it is restored onto a template built from the initial
parameters. orbax writes each step to a temporary directory and renames it when complete, so a
kill during a save leaves the previous step intact; a step that fails to restore (a truncated or
corrupt array file: OCDBT checks CRC-32C; a corrupt or incomplete meta JSON) is reported in one
warning line and the next older one is tried; the unreadable step is replaced when the run
reaches it again. A save that fails (disk full, ...) raises one `CheckpointError` naming the
path and the cause, and leaves nothing half-written that could be taken for a checkpoint.
"""
from __future__ import annotations

import contextlib
import errno
import glob
import logging
import os
import re
import shutil
import sys
import threading
import time
from typing import Any

import jax
import orbax.checkpoint as ocp

from halos_jax.replay.state import ReplayMeta, ReplayState

log = logging.getLogger(__name__)


class CheckpointError(RuntimeError):
  """A checkpoint cannot be used (corrupt, or made by a different config) or written."""


_OS_CAUSES = tuple(os.strerror(e) for e in (
    errno.ENOSPC, errno.EDQUOT, errno.EROFS, errno.EACCES, errno.EIO, errno.ENOENT))


def reason(e: BaseException, limit: int = 240) -> str:
  """A one-line cause of an orbax / tensorstore failure (no tensorstore spec, no traceback).

  Tensorstore errors put the most specific cause last ('... Error reading Byte range [0, 889)
  of local file "...": CRC-32C checksum verification failed ...'), so a long message keeps its
  tail; a known OS cause (disk full, read-only, ...) is named alone.
  """
  if isinstance(e, OSError) and e.strerror:
    return e.strerror
  text = " ".join(str(e).split("\n")[0].split())
  text = re.sub(r"\s*\[tensorstore_spec.*$", "", text)
  for cause in _OS_CAUSES:
    if cause in text:
      return cause
  text = f"{type(e).__name__}: {text}" if text else type(e).__name__
  return text if len(text) <= limit else "..." + text[-limit:]


def _ignore_closed_loop(unraisable, _previous=[]):  # noqa: B006  # pylint: disable=dangerous-default-value
  """sys.unraisablehook: drops the 'Event loop is closed' callbacks orbax leaves behind after a
  failed read or write (tensorstore completions arriving after its event loop closed)."""
  exc = unraisable.exc_value
  if isinstance(exc, RuntimeError) and str(exc) == "Event loop is closed":
    return
  (_previous[0] if _previous else sys.__unraisablehook__)(unraisable)


def _install_unraisable_filter() -> None:
  if sys.unraisablehook is not _ignore_closed_loop:
    _ignore_closed_loop.__defaults__[0][:] = [sys.unraisablehook]
    sys.unraisablehook = _ignore_closed_loop


def _join_orbax_threads(timeout: float = 60.0) -> None:
  """Waits for orbax's background threads (a failed save leaves some finishing their writes)."""
  deadline = time.monotonic() + timeout
  for t in threading.enumerate():
    if t is not threading.current_thread() and type(t).__module__.startswith("orbax."):
      with contextlib.suppress(Exception):  # orbax's join re-raises the thread's failure
        t.join(max(0.0, deadline - time.monotonic()))


class _Unretrieved(logging.Filter):
  """Drops asyncio's 'Future/Task exception was never retrieved' (orbax after a failure)."""

  def filter(self, record):
    return "exception was never retrieved" not in str(record.msg)


_UNRETRIEVED = _Unretrieved()


class _Held(logging.Filter):
  """Holds back orbax's log records (absl logger) while an operation runs."""

  def __init__(self):
    super().__init__()
    self.records = []

  def filter(self, record):
    self.records.append(record)
    return False


@contextlib.contextmanager
def _orbax_quiet_on_failure():
  """orbax logs a failed save or restore as several ERROR tracebacks from its threads; the
  caller reports it in one line instead. Records are let through when the operation succeeds."""
  _install_unraisable_filter()  # they may come from orbax's threads before the failure shows
  logger = logging.getLogger("absl")
  held = _Held()
  logger.addFilter(held)
  try:
    yield
  except Exception:
    logger.removeFilter(held)
    for r in held.records:
      log.debug("orbax: %s", r.getMessage())
    # Futures of the failed operation that nobody awaits are reported when collected.
    logging.getLogger("asyncio").addFilter(_UNRETRIEVED)
    raise
  logger.removeFilter(held)
  for r in held.records:
    logger.handle(r)


def _process_local() -> dict:
  """orbax options for what process 0 alone writes in a multi-process run (the final model):
  each process uses orbax on its own, without cross-process barriers. Empty in a single
  process."""
  if jax.process_count() == 1:
    return {}
  p = jax.process_index()
  return {"multiprocessing_options": ocp.options.MultiprocessingOptions(
      primary_host=p, active_processes={p})}


def _global(x) -> bool:
  """A global array spanning several processes (the worker slots, replay/layout.py)."""
  return isinstance(x, jax.Array) and not x.is_fully_addressable


def _savable(tree):
  """orbax refuses process-local arrays in a multi-process run: those (the servers, the same in
  every process) save as NumPy, written by process 0; global arrays save shard by shard, each
  process writing its own."""
  if jax.process_count() == 1:
    return tree
  return jax.tree.map(lambda x: x if _global(x) else jax.device_get(x), tree)


def _restorable(tree):
  """What to restore into: the template's arrays; in a multi-process run process-local ones as
  NumPy of their shape, global ones with their sharding (each process reads its shards)."""
  if jax.process_count() == 1:
    return jax.tree.map(ocp.utils.to_shape_dtype_struct, tree)
  return jax.tree.map(lambda x: ocp.utils.to_shape_dtype_struct(x) if _global(x)
                      else jax.ShapeDtypeStruct(x.shape, x.dtype), tree)


def _placed(tree, template):
  """Multi-process: restored NumPy arrays placed like the template's (this process's device)."""
  if jax.process_count() == 1:
    return tree
  return jax.tree.map(lambda r, t: r if _global(t) else jax.device_put(r, t.sharding),
                      tree, template)


class Checkpointer:
  """Saves and restores `ReplayState`s under `directory` (keeps the newest `keep`)."""

  def __init__(self, directory: str, *, keep: int = 2, identity: dict[str, str] | None = None):
    self.directory = os.path.abspath(directory)
    self.identity = dict(identity or {})
    self._unreadable: set[int] = set()
    self._failed = False  # a save failed (and was reported)
    # Every process takes part in a save (collective: each writes its shards of the worker
    # slots, process 0 the rest); orbax's barriers run over jax.distributed.
    options = ocp.CheckpointManagerOptions(
        max_to_keep=max(1, int(keep)), enable_async_checkpointing=False)
    self.manager = ocp.CheckpointManager(self.directory, options=options)

  def step_path(self, step: int) -> str:
    return os.path.join(self.directory, str(int(step)))

  def latest_step(self) -> int | None:
    """The newest step on disk that was not found unreadable (None: there is none)."""
    steps = [s for s in self.manager.all_steps() if s not in self._unreadable]
    return max(steps) if steps else None

  def save(self, state: ReplayState) -> None:
    """Saves `state` as step `cursor` (a no-op if that step exists).

    Raises:
      CheckpointError: the save failed ('could not save checkpoint to PATH: CAUSE'); whatever
        it had written is removed, older steps are untouched.
    """
    meta = state.meta.to_json()
    meta["identity"] = self.identity
    step = int(meta["cursor"])
    if step in self._unreadable:  # replace an unreadable step by a good one
      self.manager.delete(step)
      self._unreadable.discard(step)
    if step in self.manager.all_steps():
      return
    # orbax's threads log the failure as they end: cleaning up happens while they are held.
    with _orbax_quiet_on_failure():
      try:
        self.manager.save(step, args=ocp.args.Composite(
            state=ocp.args.StandardSave(_savable(state.tree)), meta=ocp.args.JsonSave(meta)))
        self.manager.wait_until_finished()
      except Exception as e:  # pylint: disable=broad-except
        self._remove_partial(step)
        raise CheckpointError(
            f"could not save checkpoint to {self.step_path(step)}: {reason(e)}") from e

  def _remove_partial(self, step: int) -> None:
    """Deletes what a failed save of `step` left (its temporary directory, or the step)."""
    self._failed = True
    with contextlib.suppress(Exception):
      self.manager.wait_until_finished()  # collects the failures of orbax's other threads
    _join_orbax_threads()  # they may still be writing into the temporary directory
    # Writes already queued in tensorstore can recreate the directory for a moment.
    paths = lambda: [self.step_path(step)] + glob.glob(  # noqa: E731
        self.step_path(step) + ".orbax-checkpoint-tmp*")
    quiet = 0
    for _ in range(50):
      found = [p for p in paths() if os.path.exists(p)]
      for p in found:
        shutil.rmtree(p, ignore_errors=True)
      quiet = 0 if found else quiet + 1
      if quiet == 3:
        break
      time.sleep(0.1)
    with contextlib.suppress(Exception):
      self.manager.reload()

  def latest(self, template: ReplayState) -> ReplayState | None:
    """The newest restorable checkpoint, or None when there is none.

    Raises:
      CheckpointError: the checkpoints were made by a different run (config, schedule or data),
        or none of the existing ones can be read.
    """
    steps = sorted(self.manager.all_steps(), reverse=True)
    if not steps:
      return None
    abstract = _restorable(template.tree)
    errors = []
    for i, step in enumerate(steps):
      try:
        # The meta first: a checkpoint of another run is refused before its arrays are read.
        with _orbax_quiet_on_failure():
          meta = dict(self.manager.restore(
              step, args=ocp.args.Composite(meta=ocp.args.JsonRestore()))["meta"])
        ident = meta.pop("identity", None)
        if not isinstance(ident, dict):
          raise ValueError("its meta JSON has no run identity")
        other = next((k for k, want in self.identity.items() if ident.get(k) != want), None)
        if other is None:
          ReplayMeta.check_json(meta, template.num_workers)
          with _orbax_quiet_on_failure():
            # strict=False: the worker slots are padded to a multiple of the device count, so a
            # resume on another device count may hold more or fewer padding slots (rows past
            # the last worker: never used); every other shape is fixed by the run's identity.
            tree = self.manager.restore(step, args=ocp.args.Composite(
                state=ocp.args.StandardRestore(abstract, strict=False)))["state"]
      except Exception as e:  # pylint: disable=broad-except
        self._unreadable.add(step)
        errors.append(f"step {step}: {reason(e)}")
        fallback = f"falling back to step {steps[i + 1]}" if i + 1 < len(steps) else "no older one"
        log.warning("checkpoint step %d unreadable (%s): %s; %s",
                    step, self.step_path(step), reason(e), fallback)
        continue
      if other is not None:
        raise CheckpointError(
            f"the checkpoints in {self.directory} were made with a different {other} "
            f"({ident.get(other)!s:.16} != {self.identity[other]!s:.16}); use a new --workdir "
            "or the same config")
      return ReplayState(_placed(tree, template.tree), ReplayMeta.from_json(meta))
    raise CheckpointError(
        f"no readable checkpoint in {self.directory} ({'; '.join(errors)}); move it away to "
        "start over")

  def close(self) -> None:
    """Waits for orbax and closes; after a failed save (already reported) errors are dropped."""
    try:
      with _orbax_quiet_on_failure():
        self.manager.close()
    except Exception as e:  # pylint: disable=broad-except
      if not self._failed:
        raise CheckpointError(
            f"could not finish writing checkpoints to {self.directory}: {reason(e)}") from e


def save_params(path: str, params: Any) -> None:
  """Writes one parameter pytree as a standalone orbax checkpoint (the final evaluated model).

  Raises:
    CheckpointError: the save failed (one line naming the path and the cause).
  """
  path = os.path.abspath(path)
  try:
    with _orbax_quiet_on_failure(), ocp.StandardCheckpointer(**_process_local()) as ckptr:
      ckptr.save(path, _savable(params), force=True)
  except Exception as e:  # pylint: disable=broad-except
    for p in [path] + glob.glob(path + ".orbax-checkpoint-tmp*"):
      shutil.rmtree(p, ignore_errors=True)
    raise CheckpointError(f"could not save the final model to {path}: {reason(e)}") from e
