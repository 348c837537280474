"""The paper-shaped study (configs/paper_shape.py): its runs, their reuse, and the choices.

A run is an algorithm's `paper_shape` config with some fields set (`RunSpec.fields`, dotted
paths). Its directory is WORKDIR/<algorithm>/<slug>, the slug naming only the fields whose value
differs from the algorithm's config (`seed` stands for config.seed and data.seed together), so
two stages asking for the same run (the tuning grid's centre and the seeds stage's seed 0, an
ablation's reference value and the headline run) share one directory and run once.

Several processes may work on one WORKDIR: a process claims a run by creating <dir>.claim (with
O_EXCL, holding its host and pid) and skips runs claimed by a live process; a finished run (its
summary.json) is reused, an interrupted one resumes from its checkpoint
(train.train_and_evaluate).
"""
from __future__ import annotations

import dataclasses
import json
import math
import os
import socket
import subprocess
import time
from typing import Any, Callable

import ml_collections

from halos_jax.compare.entries import _get_path, _has_path, _set_path, load_algorithm_config
from halos_jax.compare.entries import parse_overrides
from halos_jax.compare.results import read_run
from halos_jax.replay.nonfinite import NonFiniteError

SEED = "seed"  # the pseudo-field: config.seed (initialisation) and config.data.seed (data order)


@dataclasses.dataclass(frozen=True)
class RunSpec:
  """One run of the study: an algorithm and the fields set on its config."""
  algorithm: str
  fields: tuple[tuple[str, Any], ...]  # (dotted path, value), SEED included

  def value(self, field: str, default: Any = None) -> Any:
    return dict(self.fields).get(field, default)


def _fmt(v: Any) -> str:
  if isinstance(v, float):
    return repr(v)
  return str(v)


def base_config(sweep: ml_collections.ConfigDict, algorithm: str) -> ml_collections.ConfigDict:
  """configs/<algorithm>.py:get_config(sweep.arg) with the sweep's overrides."""
  c = load_algorithm_config(algorithm, sweep.arg, sweep.configs_dir)
  for key, value in parse_overrides(sweep.overrides):
    if not _has_path(c, key):
      raise ValueError(f"overrides: {algorithm} has no field {key!r}")
    _set_path(c, key, value, "overrides")
  return c


def default_value(c: ml_collections.ConfigDict, field: str) -> Any:
  return int(c.seed) if field == SEED else _get_path(c, field)


def run_config(sweep: ml_collections.ConfigDict, spec: RunSpec) -> ml_collections.ConfigDict:
  """The full config of one run."""
  c = base_config(sweep, spec.algorithm)
  for field, value in spec.fields:
    if field == SEED:
      c.seed = int(value)
      c.data.seed = int(value)
    else:
      if not _has_path(c, field):
        raise ValueError(f"{spec.algorithm} has no config field {field!r}")
      _set_path(c, field, value, f"run {spec}")
  return c


def run_dir(sweep: ml_collections.ConfigDict, workdir: str, spec: RunSpec) -> str:
  """WORKDIR/<algorithm>/<the fields that differ from the algorithm's config, or 'default'>."""
  c = base_config(sweep, spec.algorithm)
  parts = []
  for field, value in sorted(spec.fields):
    default = default_value(c, field)
    same = value == default  # 0.001 == 1e-3; a float 8.0 == an int 8
    if not same:
      parts.append(f"{field}={_fmt(value)}")
  return os.path.join(workdir, spec.algorithm, "__".join(parts) or "default")


# ------------------------------------------------------------------------------------------------
# The stages' runs.
# ------------------------------------------------------------------------------------------------


def server_grid(sweep, algorithm: str):
  """(field, values) of the algorithm's server-LR grid, or None (DDP has none)."""
  grids = sweep.tuning.server_lr
  if algorithm not in grids:
    return None
  return grids[algorithm].field, tuple(grids[algorithm].points)


def tuning_runs(sweep) -> list[RunSpec]:
  """Worker max_lr grid at the default server LR, server-LR grid at the default max_lr."""
  out = []
  seed = ((SEED, int(sweep.tuning.seed)),)
  for alg in sweep.algorithms:
    for lr in sweep.tuning.worker_lr:
      out.append(RunSpec(alg, seed + (("worker.max_lr", float(lr)),)))
    grid = server_grid(sweep, alg)
    if grid:
      field, values = grid
      for v in values:
        out.append(RunSpec(alg, seed + ((field, float(v)),)))
  return out


def _final_tune_loss(summary: dict) -> float:
  x = summary.get("final_tune_loss")
  if x is None:
    raise ValueError("a tuning run has no final_tune_loss (data.tune_sequences is 0)")
  return x if math.isfinite(x) else math.inf  # a diverged run is never chosen


def choose(sweep, workdir: str) -> dict[str, dict[str, float]]:
  """{algorithm: {field: chosen value}} from the finished tuning runs (lowest tuning loss).

  Raises:
    FileNotFoundError: a tuning run has not finished.
  """
  chosen = {}
  for alg in sweep.algorithms:
    c = base_config(sweep, alg)
    pick = {}
    grids = [("worker.max_lr", tuple(sweep.tuning.worker_lr))]
    if server_grid(sweep, alg):
      grids.append(server_grid(sweep, alg))
    for field, values in grids:
      losses = []
      for v in values:
        spec = RunSpec(alg, ((SEED, int(sweep.tuning.seed)), (field, float(v))))
        d = run_dir(sweep, workdir, spec)
        loss = math.inf if diverged(d) else _final_tune_loss(read_run(d)[1])
        losses.append((loss, float(v)))
      best = min(losses)[1]
      if not math.isfinite(min(losses)[0]):
        best = float(default_value(c, field))
      pick[field] = best
    chosen[alg] = pick
  return chosen


def seed_runs(sweep, chosen) -> list[RunSpec]:
  return [RunSpec(alg, ((SEED, int(s)),) + tuple(sorted(chosen[alg].items())))
          for alg in sweep.algorithms for s in sweep.seeds]


def ablation_runs(sweep, chosen) -> dict[str, list[tuple[Any, RunSpec]]]:
  """{ablation: [(value, run)]}, each value for each of its algorithms, seed 0."""
  out = {}
  for name in sweep.ablations:
    a = sweep.ablations[name]
    fields = tuple(a.fields)
    runs = []
    for alg in a.algorithms:
      for value in a.points:
        parts = tuple(value) if isinstance(value, (tuple, list)) else (value,)
        if len(parts) != len(fields):
          raise ValueError(f"ablations.{name}: value {value!r} must set {len(fields)} field(s)")
        set_ = dict(chosen[alg])
        set_.update(zip(fields, parts))
        set_[SEED] = int(sweep.seeds[0])
        runs.append((value, RunSpec(alg, tuple(sorted(set_.items())))))
    out[name] = runs
  return out


# ------------------------------------------------------------------------------------------------
# Running, shared between processes.
# ------------------------------------------------------------------------------------------------


DIVERGED = "diverged.json"  # written instead of a summary when a run's loss stops being finite


def finished(directory: str) -> bool:
  """The run ended: its summary.json, or the record that it diverged."""
  return any(os.path.exists(os.path.join(directory, f)) for f in ("summary.json", DIVERGED))


def diverged(directory: str) -> dict | None:
  """The divergence record of a run (nonfinite='stop' stopped it), or None."""
  path = os.path.join(directory, DIVERGED)
  if not os.path.exists(path):
    return None
  with open(path) as f:
    return json.load(f)


def _claim_alive(claim: str) -> bool:
  try:
    with open(claim) as f:
      host, pid = f.read().split()
  except FileNotFoundError:
    return False
  except (OSError, ValueError):  # being written right now, or garbled: alive for a minute
    try:
      return time.time() - os.path.getmtime(claim) < 60
    except OSError:
      return False
  if host != socket.gethostname():
    return True  # another machine's claim: trust it
  try:
    os.kill(int(pid), 0)
  except ProcessLookupError:
    return False
  except PermissionError:
    return True
  return True


def claim(directory: str) -> bool:
  """True if this process may run `directory` now (it created or took over the claim)."""
  os.makedirs(os.path.dirname(directory), exist_ok=True)
  path = directory + ".claim"
  for _ in range(2):
    try:
      fd = os.open(path, os.O_CREAT | os.O_EXCL | os.O_WRONLY)
    except FileExistsError:
      if _claim_alive(path):
        return False
      try:
        os.remove(path)  # its process is gone (killed): take it over, the run resumes
      except FileNotFoundError:
        pass  # another process took it over first; the next O_EXCL decides
      continue
    with os.fdopen(fd, "w") as f:
      f.write(f"{socket.gethostname()} {os.getpid()}\n")
    return True
  return False


def release(directory: str) -> None:
  try:
    os.remove(directory + ".claim")
  except FileNotFoundError:
    pass


def code_commit() -> str:
  """The git commit of this checkout ('+dirty' when tracked files differ), or 'unknown'."""
  root = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
  try:
    head = subprocess.run(["git", "rev-parse", "--short=12", "HEAD"], cwd=root, check=True,
                          capture_output=True, text=True).stdout.strip()
    dirty = subprocess.run(["git", "status", "--porcelain", "--untracked-files=no"], cwd=root,
                           check=True, capture_output=True, text=True).stdout.strip()
  except (OSError, subprocess.CalledProcessError):
    return "unknown"
  return head + ("+dirty" if dirty else "")


def run_all(sweep, workdir: str, specs: list[RunSpec], *, train_fn: Callable,
            machine: str, log=print, wait: bool = True) -> None:
  """Runs every spec not yet finished (claiming each); with `wait`, returns when all are done."""
  pending = list(dict.fromkeys(specs))
  while True:
    left = [s for s in pending if not finished(run_dir(sweep, workdir, s))]
    if not left:
      return
    started = False
    for spec in left:
      d = run_dir(sweep, workdir, spec)
      if finished(d) or not claim(d):
        continue
      started = True
      try:
        if not finished(d):
          log(f"[paper_shape] {spec.algorithm}: {d}")
          os.makedirs(d, exist_ok=True)
          info = os.path.join(d, "sweep.json")
          if not os.path.exists(info):  # the code and machine that started the run
            with open(info, "w") as f:
              json.dump({"commit": code_commit(), "machine": machine,
                         "fields": [list(x) for x in spec.fields]}, f, indent=1)
          try:
            train_fn(run_config(sweep, spec), d)
          except NonFiniteError as e:  # a learning rate too high: recorded, never chosen
            log(f"[paper_shape] {d}: diverged: {e}")
            with open(os.path.join(d, DIVERGED), "w") as f:
              json.dump({"error": str(e)}, f)
      finally:
        release(d)
    if not wait:
      return
    if not started:  # everything left is another process's: wait for it
      time.sleep(10)
