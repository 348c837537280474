"""The network model: how long a message between two regions takes, and a ring all-reduce.

Plans and schedule builders ask only this interface; `from_environment` picks the model an
environment describes. `BandwidthOnly` is the reference model of the paper's simulator
(docs/algorithms.md 3): a transfer costs bytes / bandwidth of its directed link,
with no latency, no sharing of a link between concurrent transfers and no variability; the
ring all-reduce runs over the best ring of regions. `WithLatency` adds a latency per link;
`traces.TimeVarying` lets links' bandwidth change over time; `sharing` shares links between
concurrent transfers (`link_sharing: fair`); `select.from_environment` picks the model an
environment describes. Failures are not modelled yet.

All times are float64 milliseconds of virtual time. Plain Python + numpy.
"""
from __future__ import annotations

import abc
import functools

import numpy as np

from halos_jax.network import ring as ring_lib


def transfer_ms(message_bytes: float, bandwidth_gbps: float) -> float:
  """One message over one link: B * 8 / (b * 1e9) * 1e3 ms (no latency term)."""
  return message_bytes * 8 / (bandwidth_gbps * 1e9) * 1e3


def allreduce_ms(message_bytes: float, num_workers: int, bandwidth_gbps: float) -> float:
  """Ring all-reduce of B bytes over n workers: 2 (n - 1) / n * B * 8 / (b * 1e9) * 1e3 ms.

  Zero for one worker (nothing to exchange).
  """
  n = num_workers
  if n == 1:
    return 0.0
  # Same operation order as the reference: (2 (n - 1) (B * 8 / n)) / (b * 1e9) * 1e3.
  return (2 * (n - 1) * (message_bytes * 8 / n)) / (bandwidth_gbps * 1e9) * 1e3


class NetworkModel(abc.ABC):
  """Times of the messages of a schedule between regions 0 .. num_regions - 1."""

  num_regions: int

  @abc.abstractmethod
  def transfer_ms(self, src: int, dst: int, message_bytes: float) -> float:
    """Milliseconds for `message_bytes` from region `src` to region `dst` (src == dst: inside
    one region)."""

  @property
  @abc.abstractmethod
  def ring(self) -> ring_lib.Ring:
    """The ring of regions the all-reduce runs over."""

  @abc.abstractmethod
  def allreduce_ms(self, message_bytes: float, num_workers: int) -> float:
    """Milliseconds of a ring all-reduce of `message_bytes` over `num_workers` workers laid
    out region by region along `ring`."""


class BandwidthOnly(NetworkModel):
  """The reference model: bytes / bandwidth of the directed link, nothing else.

  Args:
    bandwidth_gbps: R x R matrix, row = from region, column = to region (the diagonal is the
      link inside a region).
  """

  def __init__(self, bandwidth_gbps):
    self.bandwidth_gbps = np.asarray(bandwidth_gbps, dtype=np.float64)
    self.num_regions = int(self.bandwidth_gbps.shape[0])

  def transfer_ms(self, src: int, dst: int, message_bytes: float) -> float:
    return transfer_ms(message_bytes, float(self.bandwidth_gbps[src, dst]))

  @functools.cached_property
  def ring(self) -> ring_lib.Ring:
    return ring_lib.best_ring(self.bandwidth_gbps)

  def allreduce_ms(self, message_bytes: float, num_workers: int) -> float:
    return allreduce_ms(message_bytes, num_workers, self.ring.bandwidth_gbps)


class WithLatency(BandwidthOnly):
  """`BandwidthOnly` plus a one-way latency per directed link (docs/schedule.md, "Latency").

  A transfer of B bytes from i to j: latency[i][j] + B * 8 / (b[i][j] * 1e9) * 1e3 ms. The ring
  all-reduce runs 2 (n - 1) synchronous phases, each paying the largest latency among the hops
  it uses (the ring's inter-region links in order, and a region's own link when it holds more
  than one worker), on top of the reference bandwidth term.

  Args:
    bandwidth_gbps: R x R, Gbps (row = from).
    latency_ms: R x R, ms (row = from).
    region_workers: workers per region (the all-reduce's hops inside a region).
  """

  def __init__(self, bandwidth_gbps, latency_ms, region_workers):
    super().__init__(bandwidth_gbps)
    self.latency_ms = np.asarray(latency_ms, dtype=np.float64)
    self.region_workers = tuple(int(n) for n in region_workers)

  def transfer_ms(self, src: int, dst: int, message_bytes: float) -> float:
    return float(self.latency_ms[src, dst]) + super().transfer_ms(src, dst, message_bytes)

  def ring_latency_ms(self) -> float:
    """The largest latency among the hops of the all-reduce ring (workers region by region
    along `ring.order`)."""
    order = self.ring.order
    hops = [self.latency_ms[r, r] for r in order if self.region_workers[r] > 1]
    if len(order) > 1:
      hops += [self.latency_ms[a, b] for a, b in zip(order, order[1:] + order[:1])]
    return float(max(hops, default=0.0))

  def allreduce_ms(self, message_bytes: float, num_workers: int) -> float:
    if num_workers == 1:
      return 0.0
    return 2 * (num_workers - 1) * self.ring_latency_ms() + super().allreduce_ms(
        message_bytes, num_workers)
