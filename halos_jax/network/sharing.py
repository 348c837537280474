"""Fair link sharing: concurrent transfers share their links max-min fairly (flow level).

With `link_sharing: fair` in an environment (docs/schedule.md, "Link sharing") a message is a
*flow* over the resources of its path: the directed link (i, j) (capacity bandwidth[i][j]; i = j:
inside region i) and, for a message between two regions, the optional caps `uplink_gbps[i]`
(everything leaving region i) and `downlink_gbps[j]` (everything entering region j). At every
moment each flow gets its max-min fair rate over the resources it uses (progressive filling:
all rates rise together and a flow stops rising when one of its resources is full). Rates are
recomputed whenever a flow starts or ends; in between every flow sends at a constant rate. A
flow's latency (network_latencies_ms) is paid once, after its last bit (propagation), so one
transfer alone takes exactly latency + bits / bandwidth, as without sharing.

Flows with the same (source, destination) use the same resources, so they always have the same
rate: the simulator keeps one processor-sharing queue per directed link, with a virtual clock
(bits sent per flow since the link was last idle) and the flows' finishing tags in a heap; a
start or an end changes only its own link's rate unless caps couple the inter-region links, and
then progressive filling runs over the links in use. The event loops of the asynchronous
builders (Async Local-SGD, HALoS) hold the simulator's "next completion of link (i, j)" entries
in their own heap.

`FairRing` is the network model of a `fair` environment for the plan and the synchronous
algorithms: a transfer's nominal time is its time alone (capped by the region's caps), and the
ring all-reduce, whose hops all send at once, runs at its slowest hop's fair share.

Plain Python + numpy.
"""
from __future__ import annotations

import functools
import heapq
from typing import NamedTuple

import numpy as np

from halos_jax.network import model as model_lib

MODES = ("none", "fair")
_INF = float("inf")


def effective_bandwidth(bandwidth_gbps, uplink_gbps=None, downlink_gbps=None) -> np.ndarray:
  """R x R: what one transfer alone gets, min(bandwidth[i][j], uplink[i], downlink[j]) between
  two regions (caps: per-region Gbps or None for none), bandwidth[i][i] inside a region."""
  b = np.array(bandwidth_gbps, dtype=np.float64)
  r = b.shape[0]
  off = ~np.eye(r, dtype=bool)
  for caps, axis in ((uplink_gbps, 0), (downlink_gbps, 1)):
    if caps is None:
      continue
    cap = np.array([np.inf if c is None else float(c) for c in caps])
    grid = cap[:, None] if axis == 0 else cap[None, :]
    b = np.where(off, np.minimum(b, np.broadcast_to(grid, b.shape)), b)
  return b


class FairRing(model_lib.NetworkModel):
  """The network model of `link_sharing: fair` for plans and synchronous algorithms.

  `transfer_ms` is a message's time alone: the base model (bandwidth, latency) on the
  effective matrix (`effective_bandwidth`: the caps included). The ring all-reduce sends over
  all its hops at once: a region with n workers carries n - 1 of them on its own link (all W
  when there is one region), each inter-region hop is the only flow on its link, its source's
  uplink and its destination's downlink. Its bottleneck is therefore
  min(best ring of the effective matrix, bandwidth[r][r] / hops inside r), and with neither
  caps nor crowded intra-region links it is the reference all-reduce, bit for bit.

  Args:
    base: `BandwidthOnly` or `WithLatency` on the effective matrix.
    bandwidth_gbps: the environment's matrix (for the intra-region links).
    region_workers: workers per region.
  """

  def __init__(self, base: model_lib.BandwidthOnly, bandwidth_gbps, region_workers):
    self.base = base
    self.num_regions = base.num_regions
    self.bandwidth_gbps = base.bandwidth_gbps
    self._intra = np.asarray(bandwidth_gbps, dtype=np.float64).diagonal()
    self.region_workers = tuple(int(n) for n in region_workers)

  def transfer_ms(self, src: int, dst: int, message_bytes: float) -> float:
    return self.base.transfer_ms(src, dst, message_bytes)

  @functools.cached_property
  def ring(self):
    ring = self.base.ring
    w = sum(self.region_workers)
    hops = [(self.region_workers[r] - 1) if self.num_regions > 1 else w
            for r in range(self.num_regions)]
    shares = [float(self._intra[r]) / k for r, k in enumerate(hops) if k > 1]
    if not shares or min(shares) >= ring.bandwidth_gbps:
      return ring
    b = min(shares)
    return ring._replace(bandwidth_gbps=b, upper_bound_gbps=min(ring.upper_bound_gbps, b))

  def allreduce_ms(self, message_bytes: float, num_workers: int) -> float:
    if num_workers == 1:
      return 0.0
    lat = self.base.ring_latency_ms() if hasattr(self.base, "ring_latency_ms") else 0.0
    return 2 * (num_workers - 1) * lat + model_lib.allreduce_ms(
        message_bytes, num_workers, self.ring.bandwidth_gbps)


class Record(NamedTuple):
  """What the simulator saw up to the end of the run.

  Attributes:
    busy_ms: R x R, time each directed link carried at least one flow.
    wait_ms: total over the completed flows of (duration - duration alone): the time lost to
      other flows on shared links (latency excluded from both).
    flows: number of completed flows.
    download_end: float64 [rounds], when each worker round's model download was through (its
      compute starts), NaN if not by the end (set by the builders).
  """
  busy_ms: np.ndarray
  wait_ms: float
  flows: int
  download_end: np.ndarray | None = None


class FlowSimulator:
  """Max-min fair rates of the flows in progress, driven by an event loop's heap.

  The simulator pushes `(t, -1, kind, link, version)` onto `heap` for the next completion of a
  link (link = src * R + dst); an entry whose version is no longer the link's is stale. The
  loop calls `complete(t, link, version)` when it pops one: it returns the finished flow's
  owner (None when stale), and `start(t, src, dst, bits, owner)` when a message leaves.

  Args:
    bandwidth_gbps: R x R link capacities in Gbps (row = from).
    heap: the event loop's heap (a list kept by heapq).
    kind: the loop's code for a completion entry.
    uplink_gbps, downlink_gbps: per-region caps (entries None: no cap), or None.
  """

  def __init__(self, bandwidth_gbps, heap: list, kind: int, uplink_gbps=None,
               downlink_gbps=None):
    b = np.asarray(bandwidth_gbps, dtype=np.float64)
    r = self.num_regions = int(b.shape[0])
    self.heap, self.kind = heap, kind
    self.cap = b.ravel().tolist()  # Gbps per link
    self.alone = effective_bandwidth(b, uplink_gbps, downlink_gbps).ravel().tolist()
    n_links = r * r
    self.count = [0] * n_links  # flows in progress per link
    self.rate = [0.0] * n_links  # Gbps per flow
    self.vclock = [0.0] * n_links  # bits sent per flow since the link was last idle, at `since`
    self.at = [0.0] * n_links  # time of vclock
    self.version = [0] * n_links
    self.queues = [[] for _ in range(n_links)]  # (tag, seq, owner, t0, alone_ms)
    self.busy_since = [0.0] * n_links
    self.busy = [0.0] * n_links
    self.wait = 0.0
    self.done = 0
    self._seq = 0
    # Caps couple the inter-region links: resources of each link (index into self._res_cap).
    up = [None] * r if uplink_gbps is None else list(uplink_gbps)
    down = [None] * r if downlink_gbps is None else list(downlink_gbps)
    self.coupled = any(c is not None for c in up + down)
    self._res_cap = list(self.cap) + [0.0 if c is None else float(c) for c in up + down]
    self._res_of = []
    for i in range(r):
      for j in range(r):
        res = [i * r + j]
        if i != j and up[i] is not None:
          res.append(n_links + i)
        if i != j and down[j] is not None:
          res.append(n_links + r + j)
        self._res_of.append(tuple(res))
    self._active = set()  # inter-region links with flows, when coupled

  # -- rates -------------------------------------------------------------------------------------

  def _advance(self, c: int, t: float) -> None:
    self.vclock[c] += (t - self.at[c]) * self.rate[c] * 1e6
    self.at[c] = t

  def _reschedule(self, c: int) -> None:
    """Push link c's next completion (the flow with the smallest tag)."""
    v = self.version[c] = self.version[c] + 1
    left = self.queues[c][0][0] - self.vclock[c]
    t = self.at[c] + (left / (self.rate[c] * 1e9) * 1e3 if left > 0 else 0.0)
    heapq.heappush(self.heap, (t, -1, self.kind, c, v))

  def _refill(self, t: float) -> None:
    """Progressive filling over the inter-region links in use (caps couple them); links whose
    rate changes get a new completion entry.

    A resource only one link's flows use (its own capacity; a cap no other link in use
    shares) bounds that link's rate privately, at cap / flows. Filling raises all rates
    together: the next link to stop is either the one with the smallest private bound or all
    the links of the shared resource that fills first, whichever level is lower.
    """
    active = self._active
    for c in active:
      self._advance(c, t)
    res_of, count, res_cap = self._res_of, self.count, self._res_cap
    users = {}
    for c in active:
      for x in res_of[c]:
        if x in users:
          users[x].append(c)
        else:
          users[x] = [c]
    bound, shared = {}, {}  # link -> private bound; shared resource -> [capacity left, flows]
    for c in active:
      n, p = count[c], _INF
      for x in res_of[c]:
        if len(users[x]) == 1:
          p = min(p, res_cap[x] / n)
        elif x not in shared:
          shared[x] = [res_cap[x], sum(count[u] for u in users[x])]
      bound[c] = p
    order = sorted(active, key=bound.__getitem__)
    new = {}
    k = 0
    while len(new) < len(active):
      level, full = _INF, None
      for x, (left, cnt) in shared.items():
        if cnt > 0 and left / cnt < level:
          level, full = left / cnt, x
      while order[k] in new:
        k += 1
      if bound[order[k]] <= level:
        level, frozen = bound[order[k]], (order[k],)
      else:
        frozen = [c for c in users[full] if c not in new]
      for c in frozen:
        new[c] = level
        for x in res_of[c]:
          if x in shared:
            entry = shared[x]
            entry[0] = max(0.0, entry[0] - count[c] * level)
            entry[1] -= count[c]
    for c, rate in new.items():
      if rate != self.rate[c]:
        self.rate[c] = rate
        self._reschedule(c)

  # -- flows -------------------------------------------------------------------------------------

  def start(self, t: float, src: int, dst: int, bits: float, owner: int) -> None:
    """A flow of `bits` from region src to dst starts sending at t."""
    c = src * self.num_regions + dst
    n = self.count[c]
    if n == 0:
      self.busy_since[c] = self.at[c] = t
      self.vclock[c] = 0.0
    else:
      self._advance(c, t)
    alone = bits / (self.alone[c] * 1e9) * 1e3
    heapq.heappush(self.queues[c], (self.vclock[c] + bits, self._seq, owner, t, alone))
    self._seq += 1
    self.count[c] = n + 1
    if self.coupled and src != dst:
      self._active.add(c)
      if n == 0:
        self.rate[c] = 0.0  # new in the filling: any rate it gets is a change
      version = self.version[c]
      self._refill(t)
      if self.version[c] == version and self.queues[c][0][2] == owner:
        self._reschedule(c)  # same rate, but the new flow finishes first
    else:
      self.rate[c] = self.cap[c] / (n + 1)
      self._reschedule(c)

  def complete(self, t: float, c: int, version: int):
    """Link c's entry at t popped: the owner of the flow that finished, or None if stale."""
    if version != self.version[c]:
      return None
    tag, _, owner, t0, alone = heapq.heappop(self.queues[c])
    self.vclock[c], self.at[c] = tag, t
    self.wait += (t - t0) - alone
    self.done += 1
    n = self.count[c] = self.count[c] - 1
    inter = self.coupled and c // self.num_regions != c % self.num_regions
    if n == 0:
      self.busy[c] += t - self.busy_since[c]
      self.version[c] += 1
      if inter:
        self._active.discard(c)
        self.rate[c] = 0.0
        if self._active:
          self._refill(t)
    elif inter:
      self._refill(t)
      if self.version[c] == version:  # rate unchanged: the next flow's entry is still due
        self._reschedule(c)
    else:
      self.rate[c] = self.cap[c] / n
      self._reschedule(c)
    return owner

  def record(self, t_end: float) -> Record:
    """Busy time per link (links still busy count up to t_end) and the time lost to sharing."""
    busy = [b + (t_end - s if n else 0.0)
            for b, s, n in zip(self.busy, self.busy_since, self.count)]
    r = self.num_regions
    return Record(np.asarray(busy, dtype=np.float64).reshape(r, r), float(self.wait), self.done)
