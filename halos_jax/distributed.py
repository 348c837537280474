"""Multi-controller runs: the same program in every process, one device mesh over all of them.

JAX's own multi-controller runtime does the work (no runtime of ours): every process (one per
TPU VM host, per GPU node or GPU, or per CPU test process) runs `experiments.train` with the same
config, calls `initialize` before any computation, and then

  * builds the schedule and reads the data itself (both are deterministic, so every process
    holds the same host-side state);
  * keeps the servers' state and every worker slot on its own first local device, computing the
    server rules redundantly (same program, same inputs -> same bits);
  * hands batches of worker rounds to one jitted program over a mesh of *all* devices
    (`jax.devices()`): `global_batch` turns the process's copy of a batch into a global array
    of which each process supplies the slots of its own devices, and `gatherer` + `local_copy`
    bring the results back so that every process again holds the whole batch (docs/scale.md);
  * leaves writing (metrics, plots, summary.json, final_model, checkpoints) to process 0
    (`is_primary`); a resumed run reads the checkpoint in every process and `agree` checks that
    they all resumed from the same event.

On a single process every function here is a no-op or the obvious single-process operation.
"""
from __future__ import annotations

from typing import Any, Callable, Sequence

import jax
import numpy as np
from jax.sharding import NamedSharding, PartitionSpec as P


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


def global_batch(sharding: NamedSharding, size: int, part: Callable[[slice], Any]) -> Any:
  """A global array (tree) of leading dimension `size` sharded by `sharding`.

  Every process calls this with the same `size` and a `part(slots)` that returns its copy of the
  batch's rows `slots` (a tree of arrays on any local device, or NumPy arrays); only the rows of
  this process's devices are asked for, and each is placed on its device.
  """
  index = sharding.addressable_devices_indices_map((size,))
  shards = []
  for device, idx in index.items():
    shards.append(jax.device_put(part(idx[0]), device))
  treedef = jax.tree.structure(shards[0])
  leaves = [jax.make_array_from_single_device_arrays(
      (size,) + tuple(per[0].shape[1:]), sharding, list(per))
            for per in zip(*(jax.tree.leaves(s) for s in shards))]
  return jax.tree.unflatten(treedef, leaves)


def gatherer(devices: Sequence[jax.Device]) -> Callable[[Any], Any]:
  """A jitted identity that gathers a batch sharded over `devices` into every process.

  The result is replicated over processes but split over each process's own devices (the
  all-gather crosses hosts once, and no device holds the whole batch); `local_copy` then
  assembles this process's copy on one device.
  """
  procs = jax.process_count()
  grid = np.asarray(devices).reshape(procs, len(devices) // procs)
  mesh = jax.sharding.Mesh(grid, ("processes", "local"))
  return jax.jit(lambda tree: tree, out_shardings=NamedSharding(mesh, P("local")))


def local_copy(tree: Any, device: jax.Device) -> Any:
  """This process's whole copy, on `device`, of a tree gathered by `gatherer`."""
  import jax.numpy as jnp  # pylint: disable=g-import-not-at-top

  def assemble(x):
    shards = sorted(x.addressable_shards, key=lambda s: s.index[0].start or 0)
    parts = [jax.device_put(s.data, device) for s in shards]
    return parts[0] if len(parts) == 1 else jnp.concatenate(parts)
  return jax.tree.map(assemble, tree)


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
