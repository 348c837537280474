"""Churn and faults in virtual time: worker crashes, region partitions, region outages.

An environment may list failures (docs/schedule.md, "Failures")::

  failures:
    - {kind: worker_crash, worker: 3, at_ms: 60000, down_ms: 30000}
    - {kind: partition, region: 2, at_ms: 100000, down_ms: 50000}
    - {kind: region_down, region: 1, at_ms: 200000, down_ms: 10000}
  failure_rate: {worker_crashes_per_hour: 0.5, mean_down_ms: 60000, seed: 0, until_ms: 3.6e6}
  failure_policy: {synchronous: quorum, quorum: 0.5, lps: continue}

`worker_crash`: the worker is down on [at, at + down); `partition`: region r is cut from every
other region (links inside r work); `region_down`: every worker of r is down and r's servers
stop, and r is cut from the others. `failure_rate` draws further worker crashes, per worker,
from a Poisson process (exponential gaps, exponential down times) seeded with
(seed, 3, worker) in NumPy's PCG64, until `until_ms`.

`Timeline` turns all of that into sorted, merged down intervals per worker, per region (its
servers) and per link, and answers the builders' questions: when is a worker next up, when does
its next crash begin, when can a transfer that needs its link for `dur` ms run. Plain Python +
numpy (no JAX).
"""
from __future__ import annotations

import bisect
from typing import NamedTuple

import numpy as np

KINDS = ("worker_crash", "partition", "region_down")
SYNCHRONOUS_POLICIES = ("wait", "quorum")
LPS_POLICIES = ("continue", "wait")


class Failure(NamedTuple):
  """One listed failure: `kind` (KINDS), its worker or region (`target`), [at_ms, at_ms +
  down_ms)."""
  kind: str
  target: int
  at_ms: float
  down_ms: float

  @property
  def end_ms(self) -> float:
    return self.at_ms + self.down_ms

  def to_dict(self) -> dict:
    key = "worker" if self.kind == "worker_crash" else "region"
    return {"kind": self.kind, key: self.target, "at_ms": self.at_ms, "down_ms": self.down_ms}


class FailureRate(NamedTuple):
  """Seeded random worker crashes: a Poisson process per worker."""
  worker_crashes_per_hour: float
  mean_down_ms: float
  seed: int
  until_ms: float

  def to_dict(self) -> dict:
    return self._asdict()


class FailurePolicy(NamedTuple):
  """What the algorithms do about failures.

  Attributes:
    synchronous: 'wait' (a round waits for its crashed workers to rejoin and redo their round)
      or 'quorum' (the round goes on with the survivors if at least ceil(quorum * W) remain).
    quorum: the fraction of workers a quorum round needs, in (0, 1].
    lps: hierarchical algorithms, an LPS cut from the GPS: 'continue' (its workers keep
      training, its Delta leaves when the link returns) or 'wait' (its workers pause too).
  """
  synchronous: str = "wait"
  quorum: float = 0.5
  lps: str = "continue"

  def to_dict(self) -> dict:
    return self._asdict()


class Intervals:
  """Sorted, disjoint half-open intervals [a, b) with bisect queries."""

  __slots__ = ("starts", "ends")

  def __init__(self, pairs):
    merged = []
    for a, b in sorted(pairs):
      if b <= a:
        continue
      if merged and a <= merged[-1][1]:
        merged[-1][1] = max(merged[-1][1], b)
      else:
        merged.append([a, b])
    self.starts = [a for a, _ in merged]
    self.ends = [b for _, b in merged]

  def __bool__(self) -> bool:
    return bool(self.starts)

  def __len__(self) -> int:
    return len(self.starts)

  def pairs(self) -> list[tuple[float, float]]:
    return list(zip(self.starts, self.ends))

  def up_at(self, t: float) -> float:
    """The first time >= t outside every interval."""
    i = bisect.bisect_right(self.starts, t) - 1
    if i >= 0 and t < self.ends[i]:
      return self.ends[i]
    return t

  def next_start(self, t: float, before: float):
    """(a, b) of the first interval with t <= a < before, or None."""
    i = bisect.bisect_left(self.starts, t)
    if i < len(self.starts) and self.starts[i] < before:
      return self.starts[i], self.ends[i]
    return None

  def window(self, t: float, dur: float) -> float:
    """The first s >= t such that [s, s + dur) meets no interval (a transfer cut by an interval
    starts again, from scratch, when it ends)."""
    s = self.up_at(t)
    while True:
      nxt = self.next_start(s, s + dur)
      if nxt is None:
        return s
      s = nxt[1]

  def overlap(self, a: float, b: float) -> float:
    """The length of [a, b) covered by the intervals."""
    return float(sum(max(0.0, min(b, e) - max(a, s)) for s, e in zip(self.starts, self.ends)
                     if s < b and e > a))


def round_end(link: Intervals, t: float, download: float, compute: float, upload: float,
              nominal: float) -> float:
  """When an async round started at t arrives: download and upload over `link` (each when the
  link is up for its whole duration), compute in between; t + nominal (the round's time, to the
  bit) when the link does not delay it."""
  s1 = link.window(t, download)
  ready = s1 + download + compute
  s2 = link.window(ready, upload)
  if s1 == t and s2 == ready:
    return t + nominal
  return s2 + upload


def generated_crashes(rate: FailureRate, num_workers: int) -> list[Failure]:
  """The worker crashes of `failure_rate`: per worker w a PCG64 stream seeded (seed, 3, w);
  exponential gaps of mean 3.6e6 / rate ms after each rejoin, exponential down times."""
  out = []
  if rate.worker_crashes_per_hour <= 0:
    return out
  gap = 3.6e6 / rate.worker_crashes_per_hour
  for w in range(num_workers):
    rng = np.random.Generator(np.random.PCG64([rate.seed, 3, w]))
    t = 0.0
    while True:
      t += float(rng.exponential(gap))
      if t >= rate.until_ms:
        break
      d = float(rng.exponential(rate.mean_down_ms))
      if d > 0:
        out.append(Failure("worker_crash", w, t, d))
      t += d
  return out


class Timeline:
  """The environment's failures as down intervals (see module docstring).

  Attributes:
    failures: every failure, listed and generated, sorted by (at_ms, kind, target).
    policy: the FailurePolicy.
    worker_down: per worker, Intervals when it is down (its crashes, its region's outages).
    region_out: per region, Intervals when its servers are down (region_down).
    region_cut: per region, Intervals when it is cut from the others (partition, region_down).
  """

  def __init__(self, failures, rate, policy, num_workers: int, worker_region, num_regions: int):
    items = list(failures or ())
    if rate is not None:
      items += generated_crashes(rate, num_workers)
    self.failures = sorted(items, key=lambda f: (f.at_ms, f.kind, f.target))
    self.policy = policy or FailurePolicy()
    region = [int(r) for r in worker_region]
    down = [[] for _ in range(num_workers)]
    out = [[] for _ in range(num_regions)]
    cut = [[] for _ in range(num_regions)]
    for f in self.failures:
      span = (f.at_ms, f.end_ms)
      if f.kind == "worker_crash":
        down[f.target].append(span)
      elif f.kind == "partition":
        cut[f.target].append(span)
      else:
        out[f.target].append(span)
        cut[f.target].append(span)
        for w, r in enumerate(region):
          if r == f.target:
            down[w].append(span)
    self.worker_down = [Intervals(d) for d in down]
    self.region_out = [Intervals(o) for o in out]
    self.region_cut = [Intervals(c) for c in cut]
    self._links = {}

  def link(self, i: int, j: int) -> Intervals:
    """When messages from region i to region j cannot travel: inside a region, while it is down;
    between regions, while either is cut (partitioned or down)."""
    key = (i, j)
    got = self._links.get(key)
    if got is None:
      if i == j:
        got = self.region_out[i]
      else:
        got = Intervals(self.region_cut[i].pairs() + self.region_cut[j].pairs())
      self._links[key] = got
    return got

  def all_links(self) -> Intervals:
    """When some region is cut from the others (a ring all-reduce over every region stops)."""
    return Intervals([p for c in self.region_cut for p in c.pairs()])

  def transfer_end(self, i: int, j: int, t: float, dur: float) -> float:
    """When a message of `dur` ms from region i to j, ready at t, is through."""
    return self.link(i, j).window(t, dur) + dur

  def worker_down_ms(self, t_end: float) -> list[float]:
    """Per worker, the time it is down in [0, t_end]."""
    return [d.overlap(0.0, t_end) for d in self.worker_down]
