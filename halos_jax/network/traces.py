"""Bandwidth traces: piecewise-constant bandwidth per link over virtual time.

An environment's `bandwidth_traces` lists links whose bandwidth changes:
`{from: i, to: j, times_ms: [0, t1, t2, ...], gbps: [b0, b1, b2, ...]}` means b0 Gbps on
[0, t1), b1 on [t1, t2), ..., the last value forever. Other links keep the matrix's bandwidth. A
transfer that spans a change is timed by integrating: it sends b(t) * 1e9 / 1e3 bits per ms
until its bits are through (after the link's latency, if any). The ring all-reduce sends its
2 (n - 1) / n * B * 8 bits at the ring's bottleneck bandwidth of each moment (the minimum over
its inter-region links), after its 2 (n - 1) phase latencies. Plain Python + numpy.
"""
from __future__ import annotations

import bisect
import functools

from halos_jax.network import model as model_lib


_INF = float("inf")


def end_ms(link, t0: float, bits: float) -> float:
  """When `bits` sent over `link` from `t0` are through: b(t) * 1e9 / 1e3 bits per ms, summed
  piece by piece (`link` has gbps_at(t) and next_change(t), the first change after t)."""
  t = t0
  while True:
    rate = link.gbps_at(t) * 1e9 / 1e3  # bits per ms
    nxt = link.next_change(t)
    if nxt == _INF or bits <= rate * (nxt - t):
      return t + bits / rate
    bits -= rate * (nxt - t)
    t = nxt


class Trace:
  """One link's piecewise-constant bandwidth: `gbps[k]` from `times_ms[k]` on."""

  def __init__(self, times_ms, gbps):
    self.times = [float(t) for t in times_ms]
    self.gbps = [float(b) for b in gbps]

  def gbps_at(self, t: float) -> float:
    return self.gbps[max(0, bisect.bisect_right(self.times, t) - 1)]

  def next_change(self, t: float) -> float:
    k = bisect.bisect_right(self.times, t)
    return self.times[k] if k < len(self.times) else _INF


class Jittered:
  """A link whose bandwidth is multiplied by a seeded random factor per interval
  (network/jitter.py `BandwidthJitter`): factor k on [k * interval, (k + 1) * interval)."""

  def __init__(self, link, factor, interval_ms: float):
    self.link, self.factor, self.interval = link, factor, float(interval_ms)

  def gbps_at(self, t: float) -> float:
    return self.link.gbps_at(t) * self.factor(int(t // self.interval))

  def next_change(self, t: float) -> float:
    return min(self.link.next_change(t), (t // self.interval + 1) * self.interval)


class MinOf:
  """The pointwise minimum of several links (the ring's bottleneck over time)."""

  def __init__(self, links):
    self.links = list(links)

  def gbps_at(self, t: float) -> float:
    return min(link.gbps_at(t) for link in self.links)

  def next_change(self, t: float) -> float:
    return min(link.next_change(t) for link in self.links)


class TimeVarying(model_lib.NetworkModel):
  """A network model (bandwidth, optional latency) whose traced links vary over time.

  `transfer_ms` and `allreduce_ms` give the durations of a message starting at t = 0 (the
  plan's nominal times); `transfer_end_ms` and `allreduce_end_ms` time a message from any
  start. Builders use the latter when the environment has traces.
  """

  def __init__(self, base: model_lib.NetworkModel, traces: dict, region_workers,
               jitter=None):
    self.base = base
    self.num_regions = base.num_regions
    self.traces = dict(traces)  # (from, to) -> Trace
    self.region_workers = tuple(region_workers)
    self.latency_ms = getattr(base, "latency_ms", None)
    self.jitter = jitter  # a jitter.BandwidthJitter, or None
    self._links = {}

  def _trace(self, src, dst):
    """The link src -> dst over time: its trace (or constant bandwidth), jittered if asked."""
    link = self._links.get((src, dst))
    if link is None:
      link = self.traces.get((src, dst)) or Trace([0.0], [self.base.bandwidth_gbps[src, dst]])
      if self.jitter is not None:
        link = Jittered(link, self.jitter.stream(src, dst), self.jitter.interval_ms)
      self._links[(src, dst)] = link
    return link

  def _latency(self, src, dst) -> float:
    return 0.0 if self.latency_ms is None else float(self.latency_ms[src, dst])

  def transfer_end_ms(self, src: int, dst: int, message_bytes: float, t0: float) -> float:
    return end_ms(self._trace(src, dst), t0 + self._latency(src, dst), message_bytes * 8)

  def transfer_ms(self, src: int, dst: int, message_bytes: float) -> float:
    return self.transfer_end_ms(src, dst, message_bytes, 0.0)

  @property
  def ring(self):
    return self.base.ring

  @functools.cached_property
  def _ring_trace(self) -> MinOf:
    order = self.ring.order
    links = [(a, b) for a, b in zip(order, order[1:] + order[:1])] if len(order) > 1 else [
        (order[0], order[0])]
    return MinOf([self._trace(a, b) for a, b in links])

  def allreduce_end_ms(self, message_bytes: float, num_workers: int, t0: float) -> float:
    n = num_workers
    if n == 1:
      return t0
    lat = self.base.ring_latency_ms() if hasattr(self.base, "ring_latency_ms") else 0.0
    bits = 2 * (n - 1) * (message_bytes * 8 / n)
    return end_ms(self._ring_trace, t0 + 2 * (n - 1) * lat, bits)

  def allreduce_ms(self, message_bytes: float, num_workers: int) -> float:
    return self.allreduce_end_ms(message_bytes, num_workers, 0.0)


def from_spec(entries) -> dict:
  """{(from, to): Trace} of an Environment's `bandwidth_traces` ((from, to, times, gbps)
  tuples, validated by the environment)."""
  return {(i, j): Trace(times, gbps) for i, j, times, gbps in entries}

