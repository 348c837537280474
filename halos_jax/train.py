"""train_and_evaluate(config, workdir): one whole simulated run, resumable.

config -> environment -> schedule (every event, before any compute) -> replay (problem x server
rules x mesh) -> metrics, plots, checkpoints. `experiments/train.py` is a thin absl main over
this function; a notebook can call it directly.

Workdir layout:
  config.json          the resolved config of the run
  schedule.jsonl       every event (docs/schedule.md)
  metrics.jsonl        train loss per server update and per window, validation loss
  summary.json         final_val_loss, simulated_time_ms, local_steps, tokens, hashes, wall time
  val_loss_vs_time.png, val_loss_vs_tokens.png, gantt.png
  checkpoints/         whole-simulation checkpoints (orbax); a re-run resumes from the newest
  final_model/         the evaluated model's parameters (orbax)
"""
from __future__ import annotations

import hashlib
import json
import os
import time
from typing import Any, NamedTuple

import ml_collections

from halos_jax import algorithms
from halos_jax import codecs
from halos_jax import config_lib
from halos_jax import distributed
from halos_jax import memory as memory_lib
from halos_jax import schedule as schedule_lib
from halos_jax import validation
from halos_jax.replay import checkpoint as ckpt_lib
from halos_jax.schedule import analysis
from halos_jax.replay import metrics as metrics_lib
from halos_jax.replay.engine import Replay
from halos_jax.replay.interrupts import interrupt_on_signals
from halos_jax.replay.problem import Problem, make_problem, params_sha256
from halos_jax.replay.layout import Layout
from halos_jax.replay.rounds import RoundRunner

# Config blocks that may change between a run and its resumption (they do not change results).
_RESUMABLE_KEYS = ("replay", "checkpoint_every", "checkpoint_every_s", "checkpoint_keep")


# A config value is invalid (the message names the field, the value and what is allowed).
ConfigError = validation.ConfigError


def config_hash(config: ml_collections.ConfigDict) -> str:
  d = {k: v for k, v in config.to_dict().items() if k not in _RESUMABLE_KEYS}
  return hashlib.sha256(json.dumps(d, sort_keys=True, default=str).encode()).hexdigest()


def _devices(config) -> list[Any]:
  """The mesh's devices: those of every process in a multi-process run (docs/scale.md)."""
  try:
    return distributed.mesh_devices(int(config.replay.num_devices))
  except ValueError as e:
    raise ConfigError(str(e)) from None


def train_and_evaluate(config: ml_collections.ConfigDict, workdir: str,
                       problem: Problem | None = None, on_event=None) -> dict:
  """Runs (or resumes) the configured simulation in `workdir`; returns the summary dict.

  Args:
    config: an algorithm config from configs/ (with overrides).
    workdir: output directory; an existing checkpoint there is resumed.
    problem: optional problem to train instead of the one the config names (bring your own
      model: see halos_jax.replay.problem.Problem).
    on_event: optional observer of every replayed event (see halos_jax.replay.Replay).
  """
  wall_start = time.time()
  # Every input checked before anything is built or written (a ConfigError names the field).
  validation.validate_run(config, workdir, with_problem=problem is None)
  run = build(config, workdir, problem, on_event)
  config, schedule, problem, rules, layout, runner, checkpointer, replay = (
      run.config, run.schedule, run.problem, run.rules, run.layout, run.runner,
      run.checkpointer, run.replay)
  primary = distributed.is_primary()
  final = _run_or_resume(replay, checkpointer, config, workdir, primary)
  evaluated = rules.evaluated(final.tree["servers"])
  summary = _summary(config, schedule, problem, final.meta, evaluated, runner.num_devices)
  # The simulation state as it lives on the devices (docs/replay.md, "Layout").
  summary["state_bytes_total"], summary["state_bytes_max_device"] = layout.state_bytes(
      final.tree)
  if primary:
    _write_outputs(workdir, config, schedule, problem, final.meta, evaluated, summary)
    summary["process_wall_s"] = round(time.time() - wall_start, 3)
    metrics_lib.write_json(os.path.join(workdir, "summary.json"), summary)
  return summary


class Run(NamedTuple):
  """What `build` makes of a config: the pieces of one run, before it starts."""
  config: ml_collections.ConfigDict  # resolved
  schedule: Any
  problem: Problem
  rules: Any
  layout: Layout
  runner: RoundRunner
  checkpointer: ckpt_lib.Checkpointer
  replay: Replay


def build(config: ml_collections.ConfigDict, workdir: str, problem: Problem | None = None,
          on_event=None) -> Run:
  """The schedule, problem, server rules, layout, round runner, checkpointer and replay of a
  (validated) config; refuses a run that does not fit its devices. Creates `workdir`."""
  config = config_lib.resolve(config)
  schedule = schedule_lib.schedule_from_config(config)
  problem = problem or make_problem(config)
  rules = algorithms.get(config.algorithm).server_rules(
      config, problem, schedule.env.num_workers, schedule.num_servers)
  h_max = max((ev.H for ev in schedule.events if ev.kind == "start"), default=1)
  layout = Layout(_devices(config), schedule.env.worker_region, schedule.server_region,
                  rules.global_region)
  _check_memory(config, layout, problem)
  # Several processes (halos_jax.distributed): all compute, process 0 alone writes and logs.
  if distributed.is_primary():
    os.makedirs(workdir, exist_ok=True)
  else:
    config.replay.progress = False
  runner = RoundRunner(problem, layout, h_max=h_max, local_batch=config.local_batch,
                       micro_batch=config.micro_batch, gradient_rounds=rules.gradient_rounds,
                       params_rounds=rules.params_rounds, parallel=config.replay.parallel,
                       skip_nonfinite=config.get("nonfinite", "stop") == "skip",
                       codec=codecs.from_config(config.get("exchange"), "codec"))
  identity = {"config": config_hash(config), "schedule": schedule.sha256(),
              "data": problem.data.fingerprint()}
  checkpointer = ckpt_lib.Checkpointer(
      os.path.join(workdir, "checkpoints"), keep=config.checkpoint_keep, identity=identity)
  replay = Replay(config, schedule, problem, rules, runner, checkpointer=checkpointer,
                  on_event=on_event)
  return Run(config, schedule, problem, rules, layout, runner, checkpointer, replay)


def _check_memory(config, layout: Layout, problem: Problem) -> None:
  """Refuses a run that the memory plan says cannot fit its devices (halos_jax/memory.py).

  Checked when the device memory is known: `replay.device_memory_gb`, or what a GPU/TPU
  reports; a CPU host reports none (no check).
  """
  device_memory = memory_lib.device_memory_bytes(config)
  if device_memory is None:
    return
  p = memory_lib.plan(config, layout.num_devices, problem=problem)
  if not p.fits(device_memory):
    d = p.fullest
    raise ConfigError(
        f"the run does not fit: device {d} needs {p.peak(d) / memory_lib.GB:.2f} GB (resident "
        f"state {p.resident[d] / memory_lib.GB:.2f} GB, round temporaries "
        f"{(p.temporaries or 0) / memory_lib.GB:.2f} GB, inputs "
        f"{p.batch_inputs / memory_lib.GB:.2f} GB) of {device_memory / memory_lib.GB:.2f} GB; "
        "python -m experiments.memory with this config suggests micro_batch / model.remat")


def _run_or_resume(replay, checkpointer, config, workdir: str, primary: bool):
  """Resumes from the newest checkpoint (or starts), runs to the stop, saves the final state."""
  # SIGINT/SIGTERM: checkpoint at the next event boundary, then `interrupts.Interrupted`.
  with interrupt_on_signals():
    try:
      template = replay.initial_state()
      state = checkpointer.latest(template)
      # Every process resumes from the same event (this also orders process 0's next save
      # after every process's read).
      distributed.agree(-1 if state is None else int(state.meta.cursor),
                        "the event to resume from")
      if primary:  # only now: a workdir of a different run was refused above, untouched
        metrics_lib.write_json(os.path.join(workdir, "config.json"), config.to_dict())
      if state is not None and primary:
        print(f"[train] resuming from event {state.meta.cursor} of {len(replay.events)} "
              f"({state.meta.counted_steps} local steps)", flush=True)
      start = template if state is None else state
      del template, state  # a resumed run must not keep the fresh state alive (memory)
      final = replay.run(start)
      checkpointer.save(final)
    finally:
      checkpointer.close()
  return final


def _summary(config, schedule, problem: Problem, meta, evaluated, num_devices: int) -> dict:
  """The run's summary.json (without the process's wall time)."""
  val = [m for m in meta.metrics if m["kind"] == "val"]
  summary = {
      "algorithm": config.algorithm,
      "problem": problem.name,
      "runlocal": bool(config.runlocal),
      "final_val_loss": val[-1]["val_loss"],
      "simulated_time_ms": float(schedule.events[-1].t),
      "local_steps": int(meta.counted_steps),
      "tokens": int(meta.counted_steps) * int(config.local_batch) * problem.tokens_per_sequence,
      "server_updates": int(meta.server_updates),
      "rounds_computed": int(meta.rounds_computed),
      "steps_computed": int(meta.steps_computed),
      "skipped_updates": int(meta.skipped_updates),  # nonfinite='skip'
      "schedule_sha256": schedule.sha256(),
      # Bytes of one message of each kind the algorithm sends (docs/codecs.md).
      "message_bytes": analysis.message_bytes(schedule),
      # Per directed link "i->j": bytes carried and time busy by the stop (docs/schedule.md).
      "links": _links(schedule),
      "params_sha256": params_sha256(evaluated),
      "wall_time_s": round(meta.wall_s, 3),
      "devices": num_devices,
      "parallel": bool(config.replay.parallel),
  }
  if "tune_loss" in val[-1]:  # the tuning split's loss (data.tune_sequences > 0)
    summary["final_tune_loss"] = val[-1]["tune_loss"]
  if schedule.env.has_failures:  # lost rounds, down and idle time (docs/schedule.md)
    summary["failures"] = analysis.failure_summary(schedule)
  if config.runlocal and config.problem == "lm":
    summary["note"] = (f"runlocal: {config.model.name} model on the embedded corpus; simulated "
                       "time uses the paper's timing (Pythia-70M messages, 238.391 ms per step)")
  return summary


def _links(schedule) -> dict:
  """{"bytes": {link: bytes}, "busy_ms": {link: ms}} of the links that carried anything."""
  n = schedule.env.num_regions
  out = {}
  for key, m in (("bytes", analysis.link_bytes(schedule)),
                 ("busy_ms", analysis.link_busy_ms(schedule))):
    out[key] = {f"{i}->{j}": float(m[i, j]) for i in range(n) for j in range(n) if m[i, j] > 0}
  return out


def _write_outputs(workdir: str, config, schedule, problem: Problem, meta, evaluated,
                   summary: dict) -> None:
  """metrics.jsonl, schedule.jsonl, the final model and the plots (process 0)."""
  metrics_lib.write_jsonl(os.path.join(workdir, "metrics.jsonl"), meta.metrics)
  schedule.write_jsonl(os.path.join(workdir, "schedule.jsonl"))
  ckpt_lib.save_params(os.path.join(workdir, "final_model"), evaluated)
  if config.replay.plots:
    title = f"{config.algorithm} ({problem.name}, {config.env})"
    summary["plots"] = metrics_lib.plot_validation(
        meta.metrics, os.path.join(workdir, "val_loss"), title)
    from halos_jax.schedule import plots  # pylint: disable=g-import-not-at-top
    gantt = os.path.join(workdir, "gantt.png")
    plots.gantt(schedule, gantt)
    summary["plots"].append(gantt)


def format_summary(summary: dict) -> str:
  """A short table for the terminal."""
  rows = [
      ("algorithm", summary["algorithm"]),
      ("final validation loss", f"{summary['final_val_loss']:.4f}"),
      ("simulated time", f"{summary['simulated_time_ms'] / 3.6e6:.4f} h "
                         f"({summary['simulated_time_ms'] / 1e3:.1f} s)"),
      ("local steps", f"{summary['local_steps']:,}"),
      ("tokens", f"{summary['tokens']:,}"),
      ("server updates", f"{summary['server_updates']:,}"),
      ("wall time", f"{summary['wall_time_s']:.1f} s"),
      ("params_sha256", summary["params_sha256"][:16] + "..."),
  ]
  width = max(len(k) for k, _ in rows)
  lines = [f"  {k:<{width}}  {v}" for k, v in rows]
  if summary.get("note"):
    lines.append(f"  ({summary['note']})")
  for p in summary.get("plots", []):
    lines.append(f"  plot: {p}")
  return "\n".join(lines)
