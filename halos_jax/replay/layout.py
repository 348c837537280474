"""Where the simulation state lives: worker slots sharded over the mesh, servers in their regions.

The replay's state (docs/replay.md, "Layout") is laid out on the devices of the run's mesh
(axis 'workers'), regions in order:

- **Workers.** Worker w owns slot w of arrays stacked along a leading worker axis of `slots`
  rows (the number of workers rounded up to a multiple of the device count), sharded over the
  mesh: slot w is on device `w // per_device` for the whole run. Workers are numbered region
  by region, so a region's workers share one device or a run of consecutive devices. A slot
  holds the worker's optimizer state, its last round's mean loss and one model-sized row `x`:
  the round's start snapshot while the round is pending, its result (pseudo-gradient or
  gradient) once computed; a worker has at most one round in flight, so one row serves both.
- **Servers.** A server of region r lives on one of region r's devices (the first for the first
  server of the region, the next for the next, ...); the GPS of HALoS on a device of its own
  region after that region's LPS. Algorithm rules put their state there (`ServerRules.place`)
  and move the messages between servers (`to_server`, `to_global`).
- **Messages.** A start copies the server's model into the worker's slot (server device ->
  worker device); an arrival copies the slot's row to the server's device. With the LPS/GPS
  exchanges these are the only copies between devices; a batch of rounds runs in place on the
  devices that own the slots (`RoundRunner`).

Several processes (docs/scale.md): the worker arrays are global arrays, each process holding
only the shards of its own devices; the servers are replicated, one copy per process on its first
mesh device (every process applies the same server programs to the same inputs). Reading a row
for an arrival is then a small collective program that every process runs at the same event.
"""
from __future__ import annotations

import collections
import functools
from typing import Any, Sequence

import jax
import numpy as np
from jax import lax
from jax.sharding import Mesh, NamedSharding, PartitionSpec as P

from halos_jax import distributed


@functools.partial(jax.jit, donate_argnums=0)
def _set_row(block, i, value):
  """block[i] = value, leaf by leaf, in place (the block is donated)."""
  return jax.tree.map(
      lambda b, v: lax.dynamic_update_index_in_dim(b, v.astype(b.dtype), i, 0), block, value)


@jax.jit
def _get_row(block, i):
  return jax.tree.map(lambda b: lax.dynamic_index_in_dim(b, i, 0, keepdims=False), block)


def placement(num_devices: int, worker_region: Sequence[int], server_region: Sequence[int],
              global_region: int | None = None) -> tuple[list[int], list[int], int | None]:
  """Device indices (in mesh order) of each worker, each server and the global server.

  Worker w: device w // per_device (per_device = ceil(W / D)). A region's servers take its
  devices in turn, then the global server takes the next device of its region; a region
  without workers uses device 0. Plain Python: the memory plan uses it without devices.
  """
  per_device = -(-len(worker_region) // num_devices)
  workers = [w // per_device for w in range(len(worker_region))]
  region_devices = collections.defaultdict(list)
  for w, r in enumerate(worker_region):
    if workers[w] not in region_devices[int(r)]:
      region_devices[int(r)].append(workers[w])
  used = collections.Counter()

  def next_device(region):
    devs = region_devices.get(int(region)) or [0]
    d = devs[used[int(region)] % len(devs)]
    used[int(region)] += 1
    return d

  servers = [next_device(r) for r in server_region]
  return workers, servers, None if global_region is None else next_device(global_region)


class Layout:
  """The devices of a run and what lives where (see the module docstring).

  Args:
    devices: the mesh's devices, in mesh order (all processes' devices in a multi-process run).
    worker_region: the region of each worker (numbered region by region).
    server_region: the region of each server (LPS for HALoS; one server otherwise).
    global_region: HALoS's GPS region (None: no GPS).
  """

  def __init__(self, devices: Sequence[jax.Device], worker_region: Sequence[int],
               server_region: Sequence[int], global_region: int | None = None):
    self.devices = list(devices)
    self.num_devices = len(self.devices)
    self.num_workers = len(worker_region)
    self.slots = -(-self.num_workers // self.num_devices) * self.num_devices
    self.per_device = self.slots // self.num_devices
    self.mesh = Mesh(np.asarray(self.devices), ("workers",))
    self.sharding = NamedSharding(self.mesh, P("workers"))
    self.replicated = NamedSharding(self.mesh, P())
    self.multiprocess = not self.sharding.is_fully_addressable
    self.home = distributed.home_device(self.devices)
    w_dev, s_dev, g_dev = placement(self.num_devices, worker_region, server_region,
                                    global_region)
    self.worker_device = [self.devices[i] for i in w_dev]
    self._server_device = [self.devices[i] for i in s_dev]
    self._global_device = None if g_dev is None else self.devices[g_dev]

  # -- where -----------------------------------------------------------------------------------

  def server_device(self, server: int) -> jax.Device:
    """The device of server `server` (this process's first device in a multi-process run)."""
    return self.home if self.multiprocess else self._server_device[server]

  def global_device(self) -> jax.Device:
    """The device of HALoS's GPS."""
    if self._global_device is None:
      raise ValueError("this layout has no global server")
    return self.home if self.multiprocess else self._global_device

  def to(self, tree: Any, device: jax.Device) -> Any:
    """A copy of `tree` on `device` (no copy for leaves already there)."""
    return jax.device_put(tree, device)

  # -- worker slots ----------------------------------------------------------------------------

  def stacked(self, tree: Any) -> Any:
    """`tree` broadcast into every worker slot: global arrays of `slots` rows over the mesh."""
    host = jax.device_get(tree)

    def leaf(x):
      x = np.asarray(x)
      shape = (self.slots,) + x.shape
      return jax.make_array_from_callback(
          shape, self.sharding, lambda idx: np.broadcast_to(x, (self.per_device,) + x.shape))
    return jax.tree.map(leaf, host)

  @staticmethod
  def _shards(arr) -> dict:
    return {s.device: s.data for s in arr.addressable_shards}

  def write(self, tree: Any, worker: int, value: Any) -> Any:
    """`tree` (stacked) with worker `worker`'s row set to `value` (copied to its device).

    Only the block of the worker's device changes, in place: it is donated, so the arrays of
    `tree` are invalid afterwards (use the returned tree). In a multi-process run only the
    process owning that device writes (every process holds the same `value`).
    """
    device = self.worker_device[worker]
    if device.process_index != jax.process_index():
      return tree
    leaves, treedef = jax.tree.flatten(tree)
    shapes = [a.shape for a in leaves]
    shards = [self._shards(a) for a in leaves]
    block = [s[device] for s in shards]
    value = jax.device_put(treedef.flatten_up_to(value), device)
    new = _set_row(block, np.int32(worker % self.per_device), value)
    out = []
    for s, b, shape in zip(shards, new, shapes):
      s[device] = b
      order = self.sharding.addressable_devices_indices_map(shape)
      out.append(jax.make_array_from_single_device_arrays(
          shape, self.sharding, [s[d] for d in order]))
    return jax.tree.unflatten(treedef, out)

  def read(self, tree: Any, worker: int, device: jax.Device) -> Any:
    """A copy of worker `worker`'s row of `tree` (stacked) on `device`.

    Multi-process: a collective program that every process runs; each gets the row on its own
    `device`.
    """
    i = np.int32(worker % self.per_device)
    if not self.multiprocess:
      src = self.worker_device[worker]
      row = _get_row(jax.tree.map(lambda a: self._shards(a)[src], tree), i)
      return jax.device_put(row, device)
    rows = self._replicated_row(tree, np.int32(worker))
    return jax.tree.map(lambda a: jax.device_put(self._shards(a)[self.home], device), rows)

  @functools.cached_property
  def _replicated_row(self):
    return jax.jit(lambda tree, i: _get_row.__wrapped__(tree, i),
                   out_shardings=self.replicated)

  # -- measuring -------------------------------------------------------------------------------

  def state_bytes(self, tree: Any) -> tuple[int, int]:
    """(bytes summed over all devices, bytes on the fullest device) of the live arrays' shards.

    A replicated array counts once per device holding it. Multi-process: every process's
    shards (a small all-gather).
    """
    per_device = collections.Counter()
    for leaf in jax.tree.leaves(tree):
      if isinstance(leaf, jax.Array):
        for s in leaf.addressable_shards:
          per_device[s.device.id] += s.data.nbytes
      else:
        per_device[self.home.id] += np.asarray(leaf).nbytes
    if jax.process_count() > 1:
      from jax.experimental import multihost_utils  # pylint: disable=g-import-not-at-top
      ids = sorted(d.id for d in jax.devices())
      mine = np.asarray([per_device.get(i, 0) for i in ids], np.int64)
      every = np.asarray(multihost_utils.process_allgather(mine)).reshape(-1, len(ids))
      values = every.sum(axis=0)
    else:
      values = np.asarray(list(per_device.values()) or [0], np.int64)
    return int(values.sum()), int(values.max())
