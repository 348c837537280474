"""The replay engine: walks a schedule's events and executes them on real numbers.

The schedule (halos_jax.schedule) already fixed WHEN everything happens; the replay fixes WHAT:
at a `start` it takes a snapshot of the worker's server model; at an `arrive` it needs the
round's result, and if that round has not been computed yet it computes it together with every
other round whose snapshot is already known (they are independent: `RoundRunner`); server events
go to the algorithm's `ServerRules`. Same config -> same events -> same bits.

The simulation state, what a checkpoint holds, is a `ReplayState` (state.py).

Faults (docs/replay.md, "Faults"): a non-finite round result stops the run or skips its update
(config `nonfinite`, nonfinite.py: device-side flags read where losses are read anyway); an
interruption request (interrupts.py: SIGINT/SIGTERM) checkpoints at the next event boundary.
"""
from __future__ import annotations

import sys
import time
from typing import Any, Callable

import jax
import numpy as np

from halos_jax import codecs
from halos_jax import config_lib
from halos_jax import distributed
from halos_jax.algorithms.base import ServerRules
from halos_jax.replay import interrupts
from halos_jax.replay import metrics as metrics_lib
from halos_jax.replay import nonfinite
from halos_jax.replay.problem import Problem
from halos_jax.replay.rounds import RoundResult, RoundRunner, RoundSpec
from halos_jax.replay.state import COMPUTED, IDLE, PENDING, ReplayMeta, ReplayState


class Replay:
  """Executes `schedule` for `problem` with `rules` (see module docstring).

  Args:
    config: the run's ConfigDict (val_interval, log_interval, checkpoint_every, replay.*).
    schedule: a halos_jax.schedule.Schedule.
    problem: what to train.
    rules: the algorithm's server rules.
    runner: executes worker rounds.
    checkpointer: optional `checkpoint.Checkpointer` for periodic whole-state checkpoints.
    log: function printing one progress line.
    on_event: optional observer called after every event with (event, state tree, rules);
      tests use it to record trajectories. It must not modify the tree.

  Raises (from `run`):
    NonFiniteError: policy 'stop' and a round's loss or pseudo-gradient is not finite, or the
      servers' state is not finite before a checkpoint or at the end.
    Interrupted: `request_interrupt` was called; a checkpoint was saved first.
  """

  def __init__(self, config, schedule, problem: Problem, rules: ServerRules,
               runner: RoundRunner, checkpointer=None,
               log: Callable[[str], None] | None = None,
               on_event: Callable[[Any, dict, ServerRules], None] | None = None):
    self.config = config
    self.schedule = schedule
    self.events = schedule.events
    self.problem = problem
    self.rules = rules
    self.runner = runner
    self.layout = runner.layout
    self.checkpointer = checkpointer
    self.log = log or (lambda s: print(s, flush=True))
    self.on_event = on_event
    self.num_workers = int(schedule.env.num_workers)
    self.tokens_per_step = int(config.local_batch) * int(problem.tokens_per_sequence)
    self.nonfinite = config.get("nonfinite", "stop")
    if self.nonfinite not in config_lib.NONFINITE_POLICIES:
      raise ValueError(f"nonfinite={self.nonfinite!r}: must be one of "
                       f"{config_lib.NONFINITE_POLICIES}")
    self.skip = self.nonfinite == "skip"
    self._eval_loss = jax.jit(problem.loss)
    # The server -> worker codec (docs/codecs.md): a round starts from what the worker decodes.
    model_codec = codecs.from_config(config.get("exchange"), "model_codec")
    self._received = None if model_codec is None else jax.jit(codecs.round_trip(model_codec))
    self._validation = None
    self._tuning = None  # the data's tuning split (data.tune_sequences), when it has one
    # Failures (docs/schedule.md, "Failures"): rounds that never arrive (lost to a crash, or cut
    # by the stop) are never computed, in parallel mode too, so the worker's slot (its
    # optimizer state) is the same in both modes. Without failures nothing changes.
    self._unapplied = None
    if schedule.env.has_failures:
      self._unapplied = np.isnan(schedule.rounds()["t_arrive"])
    self._since_sync = 0
    self._last_save = time.time()

  # -- state -----------------------------------------------------------------------------------

  def initial_state(self) -> ReplayState:
    x0 = self.problem.init_params()
    opt0 = jax.jit(self.problem.worker_optimizer.init)(x0)
    tree = {
        # Each server on a device of its region, the worker slots sharded over the mesh.
        "servers": self.rules.place(self.rules.init(x0), self.layout),
        "workers": self.runner.init_workers(x0, opt0),
    }
    return ReplayState(tree, ReplayMeta.fresh(self.num_workers, self.config.log_interval))

  # -- evaluation ------------------------------------------------------------------------------

  def validation_loss(self, params) -> float:
    """Mean loss of the evaluated model over the validation set (in val_batch chunks)."""
    if self._validation is None:
      self._validation = np.asarray(self.problem.data.validation())
    return metrics_lib.mean_loss(self._eval_loss, params, self._validation,
                                 max(1, int(self.config.val_batch)))

  def tuning_loss(self, params) -> float | None:
    """Mean loss over the tuning split (data.tune_sequences: a second held-out set for choosing
    hyper-parameters, docs/results.md); None when the data has none."""
    if self._tuning is None:
      tuning = getattr(self.problem.data, "tuning", None)
      self._tuning = np.asarray(tuning()) if tuning is not None else np.zeros((0,))
    if not len(self._tuning):
      return None
    return metrics_lib.mean_loss(self._eval_loss, params, self._tuning,
                                 max(1, int(self.config.val_batch)))

  # -- the walk --------------------------------------------------------------------------------

  def run(self, state: ReplayState | None = None) -> ReplayState:
    """Runs from `state` (or the start) to the `stop` event; returns the final state."""
    state = state or self.initial_state()
    tree, meta = state.tree, state.meta
    wall0 = time.time() - meta.wall_s
    events = self.events
    last_progress = 0.0
    progress_every = 1.0 if sys.stdout.isatty() else 10.0  # a live line, or sparse log lines
    if meta.cursor == 0 and not meta.metrics:
      self._evaluate(tree, meta, t_ms=0.0, wall0=wall0)
    while meta.cursor < len(events):
      ev = events[meta.cursor]
      if ev.kind == "stop":
        meta.cursor += 1
        break
      self._apply(tree, meta, ev)  # reads meta.cursor as this event's index
      meta.cursor += 1
      if self.on_event is not None:
        self.on_event(ev, tree, self.rules)
      if ev.counted_steps >= 0:
        self._on_count(tree, meta, ev, wall0)
      now = time.time()
      if self.config.replay.progress and now - last_progress > progress_every:
        last_progress = now
        self._show(metrics_lib.progress_line(
            meta, ev, now - wall0, int(self.config.total_local_steps), float(events[-1].t)))
      if interrupts.interrupt_request and meta.cursor < len(events):
        self._interrupt(tree, meta, wall0)
    return self._finish(tree, meta, wall0)

  def _apply(self, tree, meta, ev) -> None:
    """Executes one event (not the stop) on the state."""
    kind = ev.kind
    if kind == "start":
      w = ev.worker
      # The snapshot: a copy of the server's model (or the model the rules hand this worker,
      # `start_model`) into the worker's slot, on its device.
      model = self.rules.start_model(tree["servers"], ev)
      if self._received is not None:
        model = self._received(model)
      tree["workers"]["x"] = self.layout.write(tree["workers"]["x"], w, model)
      meta.spec[w] = RoundSpec(ev.round, w, ev.H, ev.data_start, ev.data_end, ev.lr_offset)
      lost = self._unapplied is not None and self._unapplied[ev.round]
      meta.status[w] = IDLE if lost else PENDING
    elif kind == "arrive":
      w = ev.worker
      self._ensure_computed(tree, meta, w)
      result = self._result(tree, w, ev.server)
      before = tree["servers"]
      tree["servers"] = self.rules.on_arrive(before, ev, result)
      code = None
      if self.skip:
        code = nonfinite.nonfinite_codes([result.delta], [result.loss])[0]
        if tree["servers"] is not before:  # this arrival updates a server
          tree["servers"] = self._skip_if_nonfinite(code, before, tree["servers"], ev, meta)
      self._account_loss(meta, result.loss, ev.H, code)
    elif kind == "sync":
      workers = [self._worker_of_round(meta, r) for r in ev.rounds]
      for w in workers:
        self._ensure_computed(tree, meta, w)
      results = [self._result(tree, w, ev.server) for w in workers]
      specs = [RoundSpec(*meta.spec[w]) for w in workers]
      before = tree["servers"]
      tree["servers"] = self.rules.on_sync(before, ev, results, specs)
      if self.skip:
        code = nonfinite.combine_codes(
            nonfinite.nonfinite_codes([r.delta for r in results], [r.loss for r in results]))
        tree["servers"] = self._skip_if_nonfinite(code, before, tree["servers"], ev, meta,
                                                  workers=workers)
      for w in workers:
        meta.status[w] = IDLE
    else:
      tree["servers"] = getattr(self.rules, "on_" + kind)(tree["servers"], ev)
      self.rules.check(tree["servers"], ev)

  def _finish(self, tree, meta, wall0) -> ReplayState:
    """After the stop: the final validation, every pending read, the last checks."""
    if self.config.replay.progress and sys.stdout.isatty():
      print(flush=True)  # end the live line
    meta.wall_s = time.time() - wall0
    last = meta.metrics[-1] if meta.metrics else None
    if last is None or last["kind"] != "val" or last["local_steps"] != meta.counted_steps:
      self._evaluate(tree, meta, t_ms=float(self.events[meta.cursor - 1].t), wall0=wall0)
    self._resolve_metrics(meta)
    # Skips after the last update record are counted too (they changed an LPS, say).
    skips, meta.pending_skips = meta.pending_skips, []
    self._count_skips(meta, jax.device_get(skips))
    self._check_servers_finite(tree, meta)
    return ReplayState(tree, meta)

  # -- pieces of the walk ----------------------------------------------------------------------

  @staticmethod
  def _worker_of_round(meta, round_id):
    for w, spec in enumerate(meta.spec):
      if spec is not None and spec[0] == round_id:
        return w
    raise AssertionError(f"round {round_id} has no start event before its sync")

  def _ensure_computed(self, tree, meta, w):
    """Computes worker w's round, and with it every other round already dispatched."""
    if meta.status[w] == COMPUTED:
      return
    if meta.status[w] != PENDING:
      raise AssertionError(f"worker {w} arrives without a round in flight")
    if self.runner.parallel:
      todo = [v for v in range(self.num_workers) if meta.status[v] == PENDING]
    else:
      todo = [w]
    specs = [RoundSpec(*meta.spec[v]) for v in todo]
    tree["workers"], checks = self.runner.run(tree["workers"], specs)
    if not self.skip:  # policy 'skip' decides at each arrival instead
      meta.round_checks += [(codes, group, meta.cursor) for codes, group in checks]
    for v in todo:
      meta.status[v] = COMPUTED
    meta.rounds_computed += len(todo)
    meta.steps_computed += sum(s.H for s in specs)
    self._since_sync += 1
    if self._since_sync >= max(1, int(self.config.replay.sync_every)):
      # CPU collectives must not pile up: wait for this batch before dispatching more.
      jax.block_until_ready(tree["workers"]["loss"])
      self._since_sync = 0

  def _result(self, tree, w, server) -> RoundResult:
    """Worker w's computed round as a message: its row and loss copied to the server's device."""
    workers = tree["workers"]
    row = self.layout.read({"x": workers["x"], "loss": workers["loss"]}, w,
                           self.layout.server_device(server))
    return RoundResult(row["x"], None, row["loss"])

  def _account_loss(self, meta, loss, steps, code=None):
    meta.pending_losses.append([loss, int(steps), code])

  def _skip_if_nonfinite(self, code, before, after, ev, meta, workers=None):
    """Policy 'skip': `after` if code == 0, else the servers with this update skipped.

    Device-side (no host sync): the decision is a select on the flag; the rules say what a
    skipped update leaves (`ServerRules.skipped`: by default the servers as they were). Only
    leaves the update changed are selected.
    """
    skipped = self.rules.skipped(before, after, ev)
    new, treedef = jax.tree.flatten(after)
    old = treedef.flatten_up_to(skipped)
    changed = [i for i, (a, b) in enumerate(zip(new, old)) if a is not b]
    chosen = nonfinite.select_if_finite(code, [new[i] for i in changed], [old[i] for i in changed])
    for i, leaf in zip(changed, chosen):
      new[i] = leaf
    workers = [ev.worker] if workers is None else list(workers)
    rounds = [RoundSpec(*meta.spec[w]).round for w in workers]
    info = {"event": meta.cursor, "kind": ev.kind, "t_ms": float(ev.t), "workers": workers,
            "rounds": rounds, "gradient": bool(self.rules.gradient_rounds)}
    meta.pending_skips.append([code, info])
    return jax.tree.unflatten(treedef, new)

  def _count_skips(self, meta, skips) -> int:
    """Counts resolved skip checks [(code, info)] into meta.skipped_updates and logs them."""
    lines = [nonfinite.skip_message(int(code), info) for code, info in skips if int(code)]
    for line in lines:
      self.log(line)
    meta.skipped_updates += len(lines)
    return len(lines)

  def _on_count(self, tree, meta, ev, wall0):
    """A server update of the evaluated model: metrics, validation, checkpoints."""
    meta.counted_steps = int(ev.counted_steps)
    meta.server_updates += 1
    t_ms = float(ev.t)
    steps = meta.counted_steps
    record = {"kind": "update", "server_updates": meta.server_updates, "local_steps": steps,
              "tokens": steps * self.tokens_per_step, "t_ms": t_ms,
              "wall_s": round(time.time() - wall0, 3)}
    record["_losses"], meta.pending_losses = meta.pending_losses, []
    if self.skip:
      record["_skips"], meta.pending_skips = meta.pending_skips, []
    meta.metrics.append(record)
    if steps >= meta.next_log:
      self._resolve_metrics(meta)
      s, n = meta.window
      meta.metrics.append({
          "kind": "train", "local_steps": steps, "tokens": steps * self.tokens_per_step,
          "t_ms": t_ms, "wall_s": round(time.time() - wall0, 3),
          "train_loss": (s / n) if n else None})
      meta.window = [0.0, 0]
      while meta.next_log <= steps:
        meta.next_log += int(self.config.log_interval)
    if steps >= meta.next_eval:
      self._evaluate(tree, meta, t_ms, wall0)
    if self.checkpointer is not None and self._checkpoint_due(meta):
      self._save(tree, meta, wall0)

  def _save(self, tree, meta, wall0):
    """Checkpoints the state at this event boundary (after checking it is all finite)."""
    self._resolve_metrics(meta)
    self._check_servers_finite(tree, meta)
    meta.wall_s = time.time() - wall0
    # Losses and skip checks not yet in an update record (an interruption between two
    # counting events) go into the checkpoint as plain numbers.
    got = jax.device_get((meta.pending_losses, meta.pending_skips))
    meta.pending_losses = [[float(v), int(s), None if c is None else int(c)] for v, s, c in got[0]]
    meta.pending_skips = [[int(c), info] for c, info in got[1]]
    meta.save_pending = True
    try:
      self.checkpointer.save(ReplayState(tree, meta))
    finally:
      meta.save_pending = False
    self._last_save = time.time()

  def _interrupt(self, tree, meta, wall0):
    signum = interrupts.interrupt_request.pop()
    path = None
    if self.checkpointer is not None:
      self._save(tree, meta, wall0)
      path = self.checkpointer.step_path(meta.cursor)
    raise interrupts.Interrupted(signum, meta.cursor, len(self.events), path)

  def _last_good(self) -> str:
    if self.checkpointer is None:
      return "no checkpointer"
    step = self.checkpointer.latest_step()
    if step is None:
      return f"no checkpoint was saved yet in {self.checkpointer.directory}"
    return f"the last good checkpoint is kept: {self.checkpointer.step_path(step)}"

  def _check_servers_finite(self, tree, meta):
    if nonfinite.all_finite_per_device(tree["servers"]):
      return
    ev = self.events[meta.cursor - 1]
    raise nonfinite.NonFiniteError(
        f"the servers' state is not finite at event {meta.cursor - 1} ({ev.kind}, simulated "
        f"time {ev.t / 1e3:.3f} s) although no non-finite round result was applied (a "
        f"diverging server optimizer? check its learning rate); {self._last_good()}")

  def _raise_nonfinite(self, code, spec, cursor):
    arrival = next((i for i in range(cursor, len(self.events))
                    if self.events[i].kind == "arrive" and self.events[i].round == spec.round),
                   None)
    raise nonfinite.NonFiniteError(nonfinite.round_message(
        code, spec, self.rules.gradient_rounds, self._last_good(),
        None if arrival is None else (arrival, float(self.events[arrival].t))))

  def _checkpoint_due(self, meta) -> bool:
    """Every `checkpoint_every` server updates, and/or `checkpoint_every_s` wall seconds.

    Checkpoints are only taken right after a server update of the evaluated model; where they
    are taken does not change any result (a resumed run is bitwise the uninterrupted one).
    """
    every = int(self.config.checkpoint_every)
    if every > 0 and meta.server_updates % every == 0:
      return True
    every_s = float(self.config.checkpoint_every_s)
    if every_s <= 0:
      return False
    # Several processes save together: process 0's clock decides for all of them.
    return distributed.decide(time.time() - self._last_save >= every_s)

  def _resolve_metrics(self, meta):
    """Turns device-side losses of update records into floats, reads the non-finite flags of
    the rounds computed since the last call (policy 'stop': raises on the first), counts the
    skipped updates (policy 'skip'); one host transfer."""
    todo = [r for r in meta.metrics if "_losses" in r]
    checks, meta.round_checks = meta.round_checks, []
    if not todo and not checks:
      return
    got = jax.device_get({
        "checks": [c for c, _, _ in checks],
        "losses": [[(l, c) for l, _, c in r["_losses"]] for r in todo],
        "skips": [r.get("_skips", []) for r in todo]})
    for codes, (_, specs, cursor) in zip(got["checks"], checks):
      for spec in specs:  # codes are per slot: worker w in slot w
        if codes[spec.worker]:
          self._raise_nonfinite(int(codes[spec.worker]), spec, cursor)
    for r, values, skips in zip(todo, got["losses"], got["skips"]):
      entries = r.pop("_losses")
      r.pop("_skips", None)
      # Skipped rounds (policy 'skip': code != 0) do not count in the train loss.
      pairs = [(v, s) for (v, c), (_, s, _) in zip(values, entries) if not c]
      n = sum(s for _, s in pairs)
      r["train_loss"] = (sum(float(v) * s for v, s in pairs) / n) if n else None
      meta.window[0] += sum(float(v) * s for v, s in pairs)
      meta.window[1] += n
      if self.skip:
        r["skipped"] = self._count_skips(meta, skips)

  def _evaluate(self, tree, meta, t_ms, wall0):
    steps = meta.counted_steps
    evaluated = self.rules.evaluated(tree["servers"])
    loss = self.validation_loss(evaluated)
    tune = self.tuning_loss(evaluated)
    record = {
        "kind": "val", "local_steps": steps, "tokens": steps * self.tokens_per_step,
        "t_ms": t_ms, "wall_s": round(time.time() - wall0, 3), "val_loss": loss}
    if tune is not None:  # only with a tuning split: other runs' metrics stay as they were
      record["tune_loss"] = tune
    meta.metrics.append(record)
    interval = int(self.config.val_interval)
    while meta.next_eval <= steps:
      meta.next_eval += interval

  def _show(self, line: str) -> None:
    """A progress line: rewritten in place on a terminal, logged otherwise."""
    if sys.stdout.isatty():
      sys.stdout.write("\r" + line + " " * 4)
      sys.stdout.flush()
    else:
      self.log(line)
