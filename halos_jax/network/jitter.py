"""Compute jitter: a seeded random factor on each worker round's compute time (virtual time).

Worker w's j-th round (j = 0, 1, ... in the order the worker runs them) computes for
`compute_ms[w] * factor(w, j)`. The factors come from a named distribution with mean 1:

- `lognormal`: exp(sigma * z - sigma^2 / 2), z ~ N(0, 1).

They depend only on (seed, w, j): the same seed gives the same slow rounds to every algorithm,
so algorithms are compared on one realisation. Worker w's stream is NumPy's PCG64 seeded with
(seed, w), drawn in chunks as the builders ask for later rounds. Plain Python + numpy.
"""
from __future__ import annotations

import dataclasses

import numpy as np

DISTRIBUTIONS = ("lognormal",)
_CHUNK = 1024


@dataclasses.dataclass(frozen=True)
class ComputeJitter:
  """The environment's `compute_jitter` entry: distribution, sigma (> 0), seed (>= 0)."""
  distribution: str
  sigma: float
  seed: int

  def to_dict(self) -> dict:
    return {"distribution": self.distribution, "sigma": self.sigma, "seed": self.seed}


class Factors:
  """factor(w, j) of a ComputeJitter, drawn lazily per worker."""

  def __init__(self, jitter: ComputeJitter, num_workers: int):
    self.jitter = jitter
    self._rng = [np.random.default_rng([jitter.seed, w]) for w in range(num_workers)]
    self._lists = [[] for _ in range(num_workers)]

  def _extend(self, w: int, upto: int) -> None:
    s = self.jitter.sigma
    while len(self._lists[w]) <= upto:
      z = self._rng[w].standard_normal(_CHUNK)
      self._lists[w].extend(np.exp(s * z - s * s / 2).tolist())

  def factor(self, w: int, j: int) -> float:
    """The factor of worker w's j-th round."""
    values = self._lists[w]
    if j >= len(values):
      self._extend(w, j)
    return values[j]

  def durations(self, plan):
    """duration(w) of worker w's next round: download + upload + jittered compute (the
    builders of asynchronous algorithms call it once per round a worker starts)."""
    base = (plan.transfer_ms + plan.upload_ms).tolist()
    comp = plan.compute_ms.tolist()
    nth = [0] * len(comp)
    factor = self.factor

    def duration(w: int) -> float:
      j = nth[w]
      nth[w] = j + 1
      return base[w] + comp[w] * factor(w, j)
    return duration

  def of_rounds(self, round_worker: np.ndarray) -> np.ndarray:
    """The factor of each round, rounds given by their workers in dispatch order."""
    round_worker = np.asarray(round_worker, np.int64)
    out = np.empty(len(round_worker), np.float64)
    for w in np.unique(round_worker).tolist():
      sel = np.flatnonzero(round_worker == w)
      self._extend(w, len(sel) - 1)
      out[sel] = self._lists[w][:len(sel)]
    return out


@dataclasses.dataclass(frozen=True)
class BandwidthJitter:
  """The environment's `bandwidth_jitter`: every link's bandwidth times a factor per interval.

  Link (i, j) has factor k on [k * interval_ms, (k + 1) * interval_ms), drawn from the named
  distribution (mean 1) with NumPy's PCG64 seeded with (seed, 2, i, j): the same seed gives every
  algorithm the same network weather. Applied by network.traces.TimeVarying (on top of a trace).
  """
  distribution: str
  sigma: float
  seed: int
  interval_ms: float

  def to_dict(self) -> dict:
    return {"distribution": self.distribution, "sigma": self.sigma, "seed": self.seed,
            "interval_ms": self.interval_ms}

  def stream(self, src: int, dst: int):
    """factor(k) of link src -> dst, drawn lazily."""
    rng = np.random.default_rng([self.seed, 2, int(src), int(dst)])
    values: list = []
    s = self.sigma

    def factor(k: int) -> float:
      while len(values) <= k:
        z = rng.standard_normal(_CHUNK)
        values.extend(np.exp(s * z - s * s / 2).tolist())
      return values[k]
    return factor
