"""Multi-controller runs: the same program in every process, one device mesh over all of them.

JAX's own multi-controller runtime does the work (no runtime of ours): every process (one per
TPU VM host, per GPU node or GPU, or per CPU test process) runs `experiments.train` with the same
config, calls `initialize` before any computation, and then

  * builds the schedule and reads the data itself (both are deterministic, so every process
    holds the same host-side state);
  * lays the worker slots out over a mesh of *all* devices (`jax.devices()`, by process):
    each process holds, feeds and computes only its own devices' slots, and keeps its own copy
    of the servers' state on its first device, computing the server rules redundantly (same
    program, same inputs -> same bits; halos_jax/replay/layout.py, docs/scale.md);
  * leaves writing metrics, plots, summary.json and final_model to process 0 (`is_primary`);
    checkpoints are collective (each process writes its shards), periodic ones when process 0's
    clock says so (`decide`); a resumed run reads the checkpoint in every process and `agree`
    checks that they all resumed from the same event.

On a single process every function here is a no-op or the obvious single-process operation.
"""
from __future__ import annotations

from typing import Sequence

import jax
import numpy as np


def initialize(coordinator_address: str | None = None, num_processes: int | None = None,
               process_id: int | None = None, cpu_collectives: str = "gloo") -> None:
  """Joins the multi-controller runtime (must come before any JAX computation).

  Arguments left None are detected by JAX on Cloud TPU, under SLURM and under Open MPI. On CPU,
  cross-process collectives go through `cpu_collectives` ('gloo' needs nothing installed;
  'mpi' needs an MPI library).

  Args:
    coordinator_address: 'host:port' of process 0, reachable from every process.
    num_processes: number of processes.
    process_id: this process's index in [0, num_processes).
    cpu_collectives: the CPU collectives implementation ('gloo' or 'mpi').
  """
  if num_processes is not None and num_processes < 1:
    raise ValueError(f"num_processes={num_processes}: must be >= 1")
  if process_id is not None and num_processes is not None and not 0 <= process_id < num_processes:
    raise ValueError(f"process_id={process_id}: must be in [0, num_processes={num_processes})")
  jax.config.update("jax_cpu_collectives_implementation", cpu_collectives)
  jax.distributed.initialize(coordinator_address=coordinator_address,
                             num_processes=num_processes, process_id=process_id)


def is_primary() -> bool:
  """True in the process that writes the run's files (process 0)."""
  return jax.process_index() == 0


def mesh_devices(num_devices: int = 0) -> list[jax.Device]:
  """The devices a run's mesh spans: all of them (0) or the first n / P of every process.

  Devices are ordered by process, so consecutive round slots (workers in order, hence regions
  in order) land on one host before the next. In a multi-process run every process must take
  part in the mesh, so `num_devices` must be a multiple of the process count.

  Raises:
    ValueError: `num_devices` is out of range or not a multiple of the process count.
  """
  devices = sorted(jax.devices(), key=lambda d: (d.process_index, d.id))
  procs = jax.process_count()
  n = int(num_devices)
  if n < 0 or n > len(devices) or n % procs:
    raise ValueError(
        f"replay.num_devices={n}: must be 0 (all) or a multiple of the {procs} process(es) "
        f"up to the {len(devices)} devices")
  if n == 0:
    return devices
  per = n // procs
  return [d for p in range(procs) for d in [e for e in devices if e.process_index == p][:per]]


def home_device(devices: Sequence[jax.Device]) -> jax.Device:
  """This process's first device of `devices`: where its copy of the simulation state lives."""
  me = jax.process_index()
  return next(d for d in devices if d.process_index == me)


def agree(value: int, what: str) -> None:
  """Checks that every process holds the same integer `value` (e.g. the event resumed from).

  Raises:
    ValueError: the processes disagree (named by `what`); e.g. a workdir that is not shared.
  """
  if jax.process_count() == 1:
    return
  from jax.experimental import multihost_utils  # pylint: disable=g-import-not-at-top
  values = np.asarray(multihost_utils.process_allgather(np.asarray(value, np.int64)))
  if not (values == values[0]).all():
    raise ValueError(
        f"the processes disagree on {what}: {values.tolist()} (is the workdir one directory "
        "that every process sees, e.g. NFS or a GCS fuse mount?)")


def decide(flag: bool) -> bool:
  """Process 0's `flag`, in every process (a wall-clock decision that must be taken together,
  e.g. a periodic checkpoint, which every process writes its share of)."""
  if jax.process_count() == 1:
    return bool(flag)
  from jax.experimental import multihost_utils  # pylint: disable=g-import-not-at-top
  return bool(multihost_utils.broadcast_one_to_all(np.asarray(bool(flag))))
