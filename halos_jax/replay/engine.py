"""The replay engine: walks a schedule's events and executes them on real numbers.

The schedule (halos_jax.schedule) already fixed WHEN everything happens; the replay fixes WHAT:
at a `start` it takes a snapshot of the worker's server model; at an `arrive` it needs the
round's result, and if that round has not been computed yet it computes it together with every
other round whose snapshot is already known (they are independent: `RoundRunner`); server events
go to the algorithm's `ServerRules`. Same config -> same events -> same bits.

Simulation state (everything a checkpoint holds) has a fixed structure: per worker one slot for
the snapshot of its round in flight and one for that round's result (a worker has at most one
round in flight in every algorithm), its optimizer state, and the servers' state.
"""
from __future__ import annotations

import dataclasses
import math
import sys
import time
from typing import Any, Callable

import jax
import jax.numpy as jnp
import numpy as np

from halos_jax.replay.problem import Problem
from halos_jax.replay.rounds import RoundResult, RoundRunner, RoundSpec
from halos_jax.replay.rules import ServerRules

IDLE, PENDING, COMPUTED = "idle", "pending", "computed"


@dataclasses.dataclass
class ReplayState:
  """The whole simulation at an event boundary: arrays (`tree`) and host bookkeeping (`meta`)."""
  tree: dict  # servers, worker_opt[W], snapshot[W], delta[W], loss[W]
  meta: dict  # cursor, status[W], spec[W], counters, metrics so far, ...


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
    self.checkpointer = checkpointer
    self.log = log or (lambda s: print(s, flush=True))
    self.on_event = on_event
    self.num_workers = int(schedule.env.num_workers)
    self.tokens_per_step = int(config.local_batch) * int(problem.tokens_per_sequence)
    self._eval_loss = jax.jit(problem.loss)
    self._validation = None
    self._since_sync = 0
    self._last_save = time.time()

  # -- state -----------------------------------------------------------------------------------

  def initial_state(self) -> ReplayState:
    x0 = self.problem.init_params()
    opt0 = jax.jit(self.problem.worker_optimizer.init)(x0)
    w = self.num_workers
    tree = {
        "servers": self.rules.init(x0),
        "worker_opt": [opt0] * w,
        "snapshot": [x0] * w,
        "delta": [x0] * w,
        "loss": [jnp.zeros((), jnp.float32)] * w,
    }
    meta = {
        "cursor": 0,
        "status": [IDLE] * w,
        "spec": [None] * w,
        "counted_steps": 0,
        "server_updates": 0,
        "next_eval": 0,
        "next_log": int(self.config.log_interval),
        "window": [0.0, 0],  # sum of H-weighted train loss, steps, since the last train record
        "update_acc": [0.0, 0],  # the same since the last counting event
        "metrics": [],
        "wall_s": 0.0,
        "rounds_computed": 0,
        "steps_computed": 0,  # local steps actually run (in-flight rounds at the stop included)
    }
    return ReplayState(tree, meta)

  # -- evaluation ------------------------------------------------------------------------------

  def validation_loss(self, params) -> float:
    """Mean loss of the evaluated model over the validation set (in val_batch chunks)."""
    if self._validation is None:
      self._validation = np.asarray(self.problem.data.validation())
    val = self._validation
    bs = max(1, int(self.config.val_batch))
    total, count = 0.0, 0
    for i in range(0, val.shape[0], bs):
      chunk = val[i:i + bs]
      if chunk.shape[0] < bs and i > 0:
        break  # a ragged tail would compile a second program; the tail is dropped
      total += float(self._eval_loss(params, chunk)) * chunk.shape[0]
      count += chunk.shape[0]
    return total / count

  # -- the walk --------------------------------------------------------------------------------

  def run(self, state: ReplayState | None = None) -> ReplayState:
    """Runs from `state` (or the start) to the `stop` event; returns the final state."""
    state = state or self.initial_state()
    tree, meta = state.tree, state.meta
    wall0 = time.time() - meta["wall_s"]
    events = self.events
    last_progress = 0.0
    progress_every = 1.0 if sys.stdout.isatty() else 10.0  # a live line, or sparse log lines
    if meta["cursor"] == 0 and not meta["metrics"]:
      self._evaluate(tree, meta, t_ms=0.0, wall0=wall0)

    while meta["cursor"] < len(events):
      ev = events[meta["cursor"]]
      kind = ev.kind
      if kind == "start":
        w = ev.worker
        tree["snapshot"][w] = self.rules.model(tree["servers"], ev.server)
        meta["spec"][w] = RoundSpec(ev.round, w, ev.H, ev.data_start, ev.data_end, ev.lr_offset)
        meta["status"][w] = PENDING
      elif kind == "arrive":
        w = ev.worker
        self._ensure_computed(tree, meta, w)
        result = RoundResult(tree["delta"][w], None, tree["loss"][w])
        tree["servers"] = self.rules.on_arrive(tree["servers"], ev, result)
        self._account_loss(meta, tree["loss"][w], ev.H)
      elif kind == "sync":
        workers = [self._worker_of_round(meta, r) for r in ev.rounds]
        for w in workers:
          self._ensure_computed(tree, meta, w)
        results = [RoundResult(tree["delta"][w], None, tree["loss"][w]) for w in workers]
        specs = [RoundSpec(*meta["spec"][w]) for w in workers]
        tree["servers"] = self.rules.on_sync(tree["servers"], ev, results, specs)
        for w in workers:
          meta["status"][w] = IDLE
      elif kind == "stop":
        meta["cursor"] += 1
        break
      else:
        tree["servers"] = getattr(self.rules, "on_" + kind)(tree["servers"], ev)
        self.rules.check(tree["servers"], ev)
      meta["cursor"] += 1
      if self.on_event is not None:
        self.on_event(ev, tree, self.rules)

      if ev.counted_steps >= 0:
        self._on_count(tree, meta, ev, wall0)
      now = time.time()
      if self.config.replay.progress and now - last_progress > progress_every:
        last_progress = now
        self._progress(meta, ev, now - wall0)

    if self.config.replay.progress and sys.stdout.isatty():
      print(flush=True)  # end the live line
    meta["wall_s"] = time.time() - wall0
    last = meta["metrics"][-1] if meta["metrics"] else None
    if last is None or last["kind"] != "val" or last["local_steps"] != meta["counted_steps"]:
      self._evaluate(tree, meta, t_ms=float(events[meta["cursor"] - 1].t), wall0=wall0)
    self._resolve_metrics(meta)
    return ReplayState(tree, meta)

  # -- pieces of the walk ----------------------------------------------------------------------

  @staticmethod
  def _worker_of_round(meta, round_id):
    for w, spec in enumerate(meta["spec"]):
      if spec is not None and spec[0] == round_id:
        return w
    raise AssertionError(f"round {round_id} has no start event before its sync")

  def _ensure_computed(self, tree, meta, w):
    """Computes worker w's round, and with it every other round already dispatched."""
    if meta["status"][w] == COMPUTED:
      return
    if meta["status"][w] != PENDING:
      raise AssertionError(f"worker {w} arrives without a round in flight")
    if self.runner.parallel:
      todo = [v for v in range(self.num_workers) if meta["status"][v] == PENDING]
    else:
      todo = [w]
    specs = [RoundSpec(*meta["spec"][v]) for v in todo]
    results = self.runner.run(
        specs, [tree["snapshot"][v] for v in todo], [tree["worker_opt"][v] for v in todo])
    for v, res in zip(todo, results):
      tree["delta"][v] = res.delta
      tree["worker_opt"][v] = res.opt_state
      tree["loss"][v] = res.loss
      tree["snapshot"][v] = tree["delta"][v]  # the snapshot is no longer needed: free it
      meta["status"][v] = COMPUTED
    meta["rounds_computed"] += len(todo)
    meta["steps_computed"] += sum(s.H for s in specs)
    self._since_sync += 1
    if self._since_sync >= max(1, int(self.config.replay.sync_every)):
      # CPU collectives must not pile up: wait for this batch before dispatching more.
      jax.block_until_ready(results[-1].delta)
      self._since_sync = 0

  def _account_loss(self, meta, loss, steps):
    meta.setdefault("_pending_losses", []).append((loss, int(steps)))

  def _on_count(self, tree, meta, ev, wall0):
    """A server update of the evaluated model: metrics, validation, checkpoints."""
    meta["counted_steps"] = int(ev.counted_steps)
    meta["server_updates"] += 1
    t_ms = float(ev.t)
    steps = meta["counted_steps"]
    record = {"kind": "update", "server_updates": meta["server_updates"], "local_steps": steps,
              "tokens": steps * self.tokens_per_step, "t_ms": t_ms,
              "wall_s": round(time.time() - wall0, 3)}
    record["_losses"] = meta.pop("_pending_losses", [])
    meta["metrics"].append(record)
    if steps >= meta["next_log"]:
      self._resolve_metrics(meta)
      s, n = meta["window"]
      meta["metrics"].append({
          "kind": "train", "local_steps": steps, "tokens": steps * self.tokens_per_step,
          "t_ms": t_ms, "wall_s": round(time.time() - wall0, 3),
          "train_loss": (s / n) if n else None})
      meta["window"] = [0.0, 0]
      while meta["next_log"] <= steps:
        meta["next_log"] += int(self.config.log_interval)
    if steps >= meta["next_eval"]:
      self._evaluate(tree, meta, t_ms, wall0)
    if self.checkpointer is not None and self._checkpoint_due(meta):
      self._resolve_metrics(meta)
      meta["wall_s"] = time.time() - wall0
      self.checkpointer.save(ReplayState(tree, meta))
      self._last_save = time.time()

  def _checkpoint_due(self, meta) -> bool:
    """Every `checkpoint_every` server updates, and/or `checkpoint_every_s` wall seconds.

    Checkpoints are only taken right after a server update of the evaluated model; where they
    are taken does not change any result (a resumed run is bitwise the uninterrupted one).
    """
    every = int(self.config.checkpoint_every)
    if every > 0 and meta["server_updates"] % every == 0:
      return True
    every_s = float(self.config.checkpoint_every_s)
    return every_s > 0 and time.time() - self._last_save >= every_s

  def _resolve_metrics(self, meta):
    """Turns device-side losses of update records into floats (one host transfer)."""
    todo = [r for r in meta["metrics"] if "_losses" in r]
    if not todo:
      return
    flat = jax.device_get([[l for l, _ in r["_losses"]] for r in todo])
    for r, values in zip(todo, flat):
      pairs = r.pop("_losses")
      n = sum(s for _, s in pairs)
      r["train_loss"] = (sum(float(v) * s for v, (_, s) in zip(values, pairs)) / n) if n else None
      meta["window"][0] += sum(float(v) * s for v, (_, s) in zip(values, pairs))
      meta["window"][1] += n

  def _evaluate(self, tree, meta, t_ms, wall0):
    steps = meta["counted_steps"]
    loss = self.validation_loss(self.rules.evaluated(tree["servers"]))
    meta["metrics"].append({
        "kind": "val", "local_steps": steps, "tokens": steps * self.tokens_per_step,
        "t_ms": t_ms, "wall_s": round(time.time() - wall0, 3), "val_loss": loss})
    interval = int(self.config.val_interval)
    while meta["next_eval"] <= steps:
      meta["next_eval"] += interval

  def _progress(self, meta, ev, wall):
    """One line: simulated-time progress (the schedule's stop time is known), steps, val, ETA."""
    total = int(self.config.total_local_steps)
    t_stop = float(self.events[len(self.events) - 1].t) or 1.0
    frac = min(1.0, float(ev.t) / t_stop)
    vals = [m["val_loss"] for m in meta["metrics"] if m["kind"] == "val"]
    eta = wall / frac - wall if frac > 0 else float("nan")
    line = (f"sim {ev.t / 1e3:8.1f}/{t_stop / 1e3:.1f} s ({100 * frac:5.1f}%)  "
            f"local steps {meta['counted_steps']}/{total}  val {vals[-1]:.4f}  "
            f"wall {wall:6.1f}s  eta {eta if math.isfinite(eta) else 0:6.1f}s")
    if sys.stdout.isatty():
      sys.stdout.write("\r" + line + " " * 4)
      sys.stdout.flush()
    else:
      self.log(line)
