"""Interrupting a replay: SIGINT/SIGTERM ask the walk to checkpoint at the next event boundary.

Handlers only record the request (`request_interrupt`); `Replay.run` reads it at every event
boundary, saves a checkpoint and raises `Interrupted` (docs/replay.md, "Faults").
"""
from __future__ import annotations

import contextlib
import signal
import threading


class Interrupted(KeyboardInterrupt):
  """The run was interrupted (SIGINT/SIGTERM); a checkpoint was saved at an event boundary.

  Attributes:
    signum: the signal that asked for the interruption.
    cursor: events replayed when the checkpoint was taken.
    num_events: events in the schedule.
    checkpoint: the directory of the checkpoint saved, or None (no checkpointer).
  """

  def __init__(self, signum: int, cursor: int, num_events: int, checkpoint: str | None):
    super().__init__(signum, cursor, num_events, checkpoint)
    self.signum, self.cursor, self.num_events, self.checkpoint = (
        signum, cursor, num_events, checkpoint)

  def __str__(self):
    name = signal.Signals(self.signum).name
    if self.checkpoint is None:
      return f"{name} at event {self.cursor} of {self.num_events}; no checkpointer, nothing saved"
    return (f"{name}: checkpoint saved at event {self.cursor} of {self.num_events} "
            f"({self.checkpoint}); re-run the same command to resume")


# The interruption request (a signal number), set by a signal handler and read by Replay.run at
# every event boundary: handlers only set it, the walk itself saves.
interrupt_request: list[int] = []


def request_interrupt(signum: int = signal.SIGINT) -> None:
  """Asks a running `Replay.run` to checkpoint at the next event boundary and raise
  `Interrupted` (safe to call from a signal handler or from an `on_event` observer)."""
  interrupt_request[:] = [int(signum)]


@contextlib.contextmanager
def interrupt_on_signals(signums=(signal.SIGINT, signal.SIGTERM)):
  """Within the block, the first SIGINT/SIGTERM requests an interruption (`request_interrupt`);
  the handlers in place before are then restored, so a second signal acts as usual (Ctrl-C
  twice quits at once, without saving). Outside the main thread this does nothing."""
  if threading.current_thread() is not threading.main_thread():
    yield
    return
  previous = {s: signal.getsignal(s) for s in signums}

  def restore():
    for s, h in previous.items():
      signal.signal(s, h if h is not None else signal.SIG_DFL)

  def handler(signum, frame):
    del frame
    request_interrupt(signum)
    restore()

  for s in signums:
    signal.signal(s, handler)
  try:
    yield
  finally:
    restore()
    interrupt_request.clear()
