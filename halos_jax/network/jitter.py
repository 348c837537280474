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


class _Stream:
  """Lognormal factors of mean 1, exp(sigma z - sigma^2 / 2), of one seeded PCG64 stream,
  drawn in chunks as later indices are asked for."""

  def __init__(self, seed_words, sigma: float):
    self._rng = np.random.default_rng(list(seed_words))
    self._sigma = float(sigma)
    self.values: list = []

  def upto(self, k: int) -> list:
    """The factors 0 .. k (at least)."""
    s = self._sigma
    while len(self.values) <= k:
      z = self._rng.standard_normal(_CHUNK)
      self.values.extend(np.exp(s * z - s * s / 2).tolist())
    return self.values

  def __call__(self, k: int) -> float:
    values = self.values
    return values[k] if k < len(values) else self.upto(k)[k]


class Factors:
  """factor(w, j) of a ComputeJitter, drawn lazily per worker (stream seeded (seed, w))."""

  def __init__(self, jitter: ComputeJitter, num_workers: int):
    self.jitter = jitter
    self._streams = [_Stream((jitter.seed, w), jitter.sigma) for w in range(num_workers)]

  def factor(self, w: int, j: int) -> float:
    """The factor of worker w's j-th round."""
    return self._streams[w](j)

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
      out[sel] = self._streams[w].upto(len(sel) - 1)[:len(sel)]
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
    return _Stream((self.seed, 2, int(src), int(dst)), self.sigma)
