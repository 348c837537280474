"""Environments: regions, the bandwidth matrix between them, and the workers' speeds.

An environment is R regions with a bandwidth matrix in Gbps (row = from region, column = to
region; the diagonal is the intra-region link; the matrix may be asymmetric) and, per region, the
raw relative speeds of its workers. Workers are numbered region by region (region 0's workers
first); their speeds are normalised by the largest one, so the fastest worker has speed 1.

Environments live in YAML files in the format of the HALoS reference simulator::

  num_regions: 2                 # optional; checked against the matrix if given
  network_bandwidths:            # Gbps, R x R, row = from, column = to
    - [100.0, 0.5]
    - [0.5, 100.0]
  worker_speeds:                 # raw relative speeds, one list per region
    - [1.0, 1.0]
    - [0.5, 0.25]

Presets (`configs/envs/<name>.yaml`): 'geo4' (the paper's 4 x 4 environment), 'homogeneous4x4',
'single_region'.

References:
  Kim et al., "HALoS: Hierarchical Asynchronous Local SGD over Slow Networks for
  Geo-Distributed Large Language Model Training", ICML 2025 (arXiv 2506.04531).
"""
from __future__ import annotations

import dataclasses
import math
import numbers
import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np
import yaml

# Where the preset environments live: halos_jax/configs/envs/<name>.yaml (package data).
from halos_jax.configs import ENVS_DIR
from halos_jax.network import jitter as jitter_lib
from halos_jax.network import sharing as sharing_lib
from halos_jax.schedule import failures as failures_lib

_KEYS = ("num_regions", "network_bandwidths", "worker_speeds", "network_latencies_ms",
         "compute_jitter", "bandwidth_traces", "bandwidth_jitter", "link_sharing",
         "uplink_gbps", "downlink_gbps", "failures", "failure_rate", "failure_policy")


class InvalidEnvironment(ValueError):
  """An environment (YAML file, preset name or mapping) that cannot be used, and why."""


def _is_number(x) -> bool:
  return isinstance(x, numbers.Real) and not isinstance(x, bool)


def _positive_finite(x, what: str) -> float:
  if not _is_number(x):
    raise InvalidEnvironment(f"{what} must be a number, got {x!r}")
  try:
    x = float(x)
  except OverflowError:  # an integer beyond float64
    raise InvalidEnvironment(
        f"{what} must be positive and finite, got an integer of {x.bit_length()} bits, too "
        "large for a float") from None
  if not math.isfinite(x) or x <= 0.0:
    raise InvalidEnvironment(f"{what} must be positive and finite, got {x!r}")
  return x


def _latency_matrix(rows, num_regions: int) -> np.ndarray | None:
  """`network_latencies_ms` as a read-only R x R array of finite ms >= 0 (None: all zero)."""
  if rows is None:
    return None
  if isinstance(rows, np.ndarray):
    rows = rows.tolist()
  if (isinstance(rows, (str, bytes)) or not hasattr(rows, "__len__") or len(rows) != num_regions
      or any(isinstance(r, (str, bytes)) or not hasattr(r, "__len__") or len(r) != num_regions
             for r in rows)):
    raise InvalidEnvironment(
        f"network_latencies_ms must be an R x R matrix with R = {num_regions} (row: from "
        f"region, column: to region), got {rows!r}")
  out = np.zeros((num_regions, num_regions), dtype=np.float64)
  for i, row in enumerate(rows):
    for j, x in enumerate(row):
      ok = _is_number(x)
      value = float(x) if ok else math.nan
      if not ok or not math.isfinite(value) or value < 0.0:
        raise InvalidEnvironment(
            f"network_latencies_ms[{i}][{j}] must be a finite number of ms >= 0, got {x!r}")
      out[i, j] = value
  if not out.any():
    return None
  out.flags.writeable = False
  return out


def _jitter_fields(spec, key: str, extra: tuple = ()) -> dict | None:
  """The checked fields of a jitter entry ({distribution, sigma, seed} + `extra`), or None when
  there is none (absent, or sigma 0)."""
  allowed = ("distribution", "sigma", "seed") + extra
  if not isinstance(spec, Mapping):
    raise InvalidEnvironment(
        f"{key} must be a mapping with keys {', '.join(allowed)}, got {spec!r}")
  unknown = sorted(str(k) for k in spec if k not in allowed)
  if unknown:
    raise InvalidEnvironment(f"{key}: unknown key(s) {unknown}; allowed: {', '.join(allowed)}")
  dist = spec.get("distribution", "lognormal")
  if dist not in jitter_lib.DISTRIBUTIONS:
    raise InvalidEnvironment(f"{key}.distribution must be one of "
                             f"{', '.join(jitter_lib.DISTRIBUTIONS)}, got {dist!r}")
  sigma = spec.get("sigma")
  if not _is_number(sigma) or not math.isfinite(float(sigma)) or float(sigma) < 0:
    raise InvalidEnvironment(f"{key}.sigma must be a finite number >= 0, got {sigma!r}")
  seed = spec.get("seed", 0)
  if not isinstance(seed, numbers.Integral) or isinstance(seed, bool) or seed < 0:
    raise InvalidEnvironment(f"{key}.seed must be an integer >= 0, got {seed!r}")
  out = {"distribution": dist, "sigma": float(sigma), "seed": int(seed)}
  for name in extra:
    out[name] = _positive_finite(spec.get(name), f"{key}.{name}")
  return None if out["sigma"] == 0.0 else out


def _compute_jitter(spec) -> jitter_lib.ComputeJitter | None:
  """`compute_jitter` ({distribution, sigma, seed}) as a ComputeJitter (None: sigma 0)."""
  if spec is None or isinstance(spec, jitter_lib.ComputeJitter):
    return spec if spec is None or spec.sigma > 0 else None
  fields_ = _jitter_fields(spec, "compute_jitter")
  return None if fields_ is None else jitter_lib.ComputeJitter(**fields_)


def _bandwidth_jitter(spec) -> jitter_lib.BandwidthJitter | None:
  """`bandwidth_jitter` ({distribution, sigma, seed, interval_ms}) (None: sigma 0)."""
  if spec is None or isinstance(spec, jitter_lib.BandwidthJitter):
    return spec if spec is None or spec.sigma > 0 else None
  fields_ = _jitter_fields(spec, "bandwidth_jitter", ("interval_ms",))
  return None if fields_ is None else jitter_lib.BandwidthJitter(**fields_)


def _bandwidth_traces(entries, num_regions: int) -> tuple | None:
  """`bandwidth_traces` as sorted (from, to, times_ms, gbps) tuples (None: none)."""
  if entries is None or (isinstance(entries, tuple) and all(
      isinstance(e, tuple) for e in entries)):
    return entries or None
  if isinstance(entries, (str, bytes, Mapping)) or not hasattr(entries, "__iter__"):
    raise InvalidEnvironment(
        f"bandwidth_traces must be a list of {{from, to, times_ms, gbps}}, got {entries!r}")
  out = {}
  for n, e in enumerate(entries):
    where = f"bandwidth_traces[{n}]"
    if not isinstance(e, Mapping) or sorted(e) != ["from", "gbps", "times_ms", "to"]:
      raise InvalidEnvironment(f"{where} must have exactly the keys from, to, times_ms, gbps, "
                               f"got {e!r}")
    ij = []
    for key in ("from", "to"):
      r = e[key]
      if not isinstance(r, numbers.Integral) or isinstance(r, bool) or not 0 <= r < num_regions:
        raise InvalidEnvironment(f"{where}.{key} must be a region in [0, {num_regions}), got "
                                 f"{r!r}")
      ij.append(int(r))
    times, gbps = e["times_ms"], e["gbps"]
    if (not hasattr(times, "__len__") or not hasattr(gbps, "__len__") or len(times) == 0
        or len(times) != len(gbps)):
      raise InvalidEnvironment(f"{where}: times_ms and gbps must be lists of the same length "
                               f">= 1, got {times!r} and {gbps!r}")
    t = [float(x) if _is_number(x) else math.nan for x in times]
    if t[0] != 0.0 or any(not math.isfinite(a) or b <= a for a, b in zip(t, t[1:] + [math.inf])):
      raise InvalidEnvironment(f"{where}.times_ms must start at 0 and increase strictly, got "
                               f"{times!r}")
    b = tuple(_positive_finite(x, f"{where}.gbps[{k}]") for k, x in enumerate(gbps))
    if tuple(ij) in out:
      raise InvalidEnvironment(f"{where}: link {ij[0]} -> {ij[1]} has two traces")
    out[tuple(ij)] = (ij[0], ij[1], tuple(t), b)
  return tuple(out[k] for k in sorted(out)) or None


def _link_sharing(mode) -> str:
  """`link_sharing`: 'none' (absent: the reference) or 'fair'."""
  if mode is None:
    return "none"
  if mode not in sharing_lib.MODES:
    raise InvalidEnvironment(
        f"link_sharing must be one of {', '.join(sharing_lib.MODES)}, got {mode!r}")
  return mode


def _region_caps(caps, key: str, num_regions: int) -> tuple | None:
  """`uplink_gbps` / `downlink_gbps`: one entry per region, Gbps > 0 or null (no cap); None
  when absent or all null."""
  if caps is None:
    return None
  if isinstance(caps, np.ndarray):
    caps = caps.tolist()
  if (isinstance(caps, (str, bytes, Mapping)) or not hasattr(caps, "__len__")
      or len(caps) != num_regions):
    raise InvalidEnvironment(
        f"{key} must be a list of {num_regions} entries (Gbps, or null for no cap), one per "
        f"region, got {caps!r}")
  out = tuple(None if c is None else _positive_finite(c, f"{key}[{r}] (Gbps)")
              for r, c in enumerate(caps))
  return None if all(c is None for c in out) else out


def _nonnegative_ms(x, what: str) -> float:
  if not _is_number(x) or not math.isfinite(float(x)) or float(x) < 0:
    raise InvalidEnvironment(f"{what} must be a finite number of ms >= 0, got {x!r}")
  return float(x)


def _index(x, what: str, count: int, noun: str) -> int:
  if not isinstance(x, numbers.Integral) or isinstance(x, bool) or not 0 <= x < count:
    raise InvalidEnvironment(f"{what} must be a {noun} in [0, {count}), got {x!r}")
  return int(x)


def _failures(entries, num_regions: int, num_workers: int) -> tuple | None:
  """`failures` as a tuple of failures.Failure (None: none); see failures.py."""
  if entries is None or (isinstance(entries, tuple) and all(
      isinstance(e, failures_lib.Failure) for e in entries)):
    return entries or None
  if isinstance(entries, (str, bytes, Mapping)) or not hasattr(entries, "__iter__"):
    raise InvalidEnvironment(
        "failures must be a list of {kind, worker | region, at_ms, down_ms}, got "
        f"{entries!r}")
  out = []
  for n, e in enumerate(entries):
    where = f"failures[{n}]"
    if not isinstance(e, Mapping):
      raise InvalidEnvironment(f"{where} must be a mapping {{kind, worker | region, at_ms, "
                               f"down_ms}}, got {e!r}")
    kind = e.get("kind")
    if kind not in failures_lib.KINDS:
      raise InvalidEnvironment(f"{where}.kind must be one of {', '.join(failures_lib.KINDS)}, "
                               f"got {kind!r}")
    key = "worker" if kind == "worker_crash" else "region"
    allowed = ("kind", key, "at_ms", "down_ms")
    if sorted(str(k) for k in e) != sorted(allowed):
      raise InvalidEnvironment(f"{where} ({kind}) must have exactly the keys "
                               f"{', '.join(allowed)}, got {sorted(str(k) for k in e)}")
    if key == "worker":
      target = _index(e[key], f"{where}.worker", num_workers, "worker index")
    else:
      target = _index(e[key], f"{where}.region", num_regions, "region")
    at = _nonnegative_ms(e["at_ms"], f"{where}.at_ms")
    down = _positive_finite(e["down_ms"], f"{where}.down_ms")
    out.append(failures_lib.Failure(kind, target, at, down))
  spans = {}
  for n, f in enumerate(out):
    if f.kind != "worker_crash":
      continue
    for m, (a, b) in spans.get(f.target, []):
      if f.at_ms < b and a < f.end_ms:
        raise InvalidEnvironment(
            f"failures[{m}] and failures[{n}] overlap: worker {f.target} is down on "
            f"[{a}, {b}) and [{f.at_ms}, {f.end_ms}) ms")
    spans.setdefault(f.target, []).append((n, (f.at_ms, f.end_ms)))
  return tuple(out) or None


def _check_keys(spec, name: str, allowed) -> None:
  """`spec` is a mapping whose keys are among `allowed` (else one InvalidEnvironment)."""
  if not isinstance(spec, Mapping):
    raise InvalidEnvironment(
        f"{name} must be a mapping with keys {', '.join(allowed)}, got {spec!r}")
  unknown = sorted(str(k) for k in spec if k not in allowed)
  if unknown:
    raise InvalidEnvironment(f"{name}: unknown key(s) {unknown}; allowed: "
                             f"{', '.join(allowed)}")


def _failure_rate(spec) -> failures_lib.FailureRate | None:
  """`failure_rate` ({worker_crashes_per_hour, mean_down_ms, seed, until_ms}) (None: rate 0)."""
  if spec is None or isinstance(spec, failures_lib.FailureRate):
    return spec if spec is None or spec.worker_crashes_per_hour > 0 else None
  allowed = failures_lib.FailureRate._fields
  _check_keys(spec, "failure_rate", allowed)
  missing = [k for k in allowed if k not in spec and k != "seed"]
  if missing:
    raise InvalidEnvironment(f"failure_rate: missing key(s) {missing}")
  rate = spec["worker_crashes_per_hour"]
  if not _is_number(rate) or not math.isfinite(float(rate)) or float(rate) < 0:
    raise InvalidEnvironment(
        f"failure_rate.worker_crashes_per_hour must be a finite number >= 0, got {rate!r}")
  seed = spec.get("seed", 0)
  if not isinstance(seed, numbers.Integral) or isinstance(seed, bool) or seed < 0:
    raise InvalidEnvironment(f"failure_rate.seed must be an integer >= 0, got {seed!r}")
  out = failures_lib.FailureRate(
      float(rate), _positive_finite(spec["mean_down_ms"], "failure_rate.mean_down_ms"),
      int(seed), _positive_finite(spec["until_ms"], "failure_rate.until_ms"))
  return out if out.worker_crashes_per_hour > 0 else None


def _failure_policy(spec) -> failures_lib.FailurePolicy | None:
  """`failure_policy` ({synchronous: wait | quorum, quorum: (0, 1], lps: continue | wait})."""
  if spec is None or isinstance(spec, failures_lib.FailurePolicy):
    return spec
  allowed = failures_lib.FailurePolicy._fields
  _check_keys(spec, "failure_policy", allowed)
  default = failures_lib.FailurePolicy()
  sync = spec.get("synchronous", default.synchronous)
  if sync not in failures_lib.SYNCHRONOUS_POLICIES:
    raise InvalidEnvironment(f"failure_policy.synchronous must be one of "
                             f"{', '.join(failures_lib.SYNCHRONOUS_POLICIES)}, got {sync!r}")
  quorum = spec.get("quorum", default.quorum)
  if not _is_number(quorum) or not 0.0 < float(quorum) <= 1.0:
    raise InvalidEnvironment(f"failure_policy.quorum must be a fraction in (0, 1], got "
                             f"{quorum!r}")
  lps = spec.get("lps", default.lps)
  if lps not in failures_lib.LPS_POLICIES:
    raise InvalidEnvironment(f"failure_policy.lps must be one of "
                             f"{', '.join(failures_lib.LPS_POLICIES)}, got {lps!r}")
  return failures_lib.FailurePolicy(sync, float(quorum), lps)


@dataclasses.dataclass(frozen=True, eq=False)
class Environment:
  """Regions, links and workers (immutable; arrays are read-only).

  Attributes:
    bandwidth_gbps: R x R float64 array, Gbps; row = from region, column = to region; the
      diagonal holds the intra-region links.
    worker_speeds_raw: per region, the raw relative speeds of its workers.
    name: a label (preset name or file stem); not part of the environment's identity.
    num_regions: R (derived).
    num_workers: W (derived).
    worker_region: int64 array [W], the region of each worker (workers numbered region by
      region) (derived).
    worker_speed: float64 array [W], raw speeds divided by the largest one, in (0, 1]
      (derived).
    latency_ms: R x R float64 array of one-way latencies in ms (row = from), or None: no
      latency (the reference). An all-zero matrix is stored as None.
    compute_jitter: a `network.jitter.ComputeJitter` (seeded random factor on each round's
      compute), or None: none (the reference). sigma = 0 is stored as None.
    bandwidth_traces: piecewise-constant bandwidth of some links over virtual time, a tuple of
      (from, to, times_ms, gbps) (network/traces.py), or None: constant bandwidths.
    bandwidth_jitter: a `network.jitter.BandwidthJitter` (a seeded factor per link and
      interval), or None. sigma = 0 is stored as None.
    link_sharing: 'none' (the reference: every transfer has its link to itself) or 'fair'
      (concurrent transfers share links max-min fairly, network/sharing.py).
    uplink_gbps, downlink_gbps: per region, a cap in Gbps (or None) shared by all transfers
      leaving / entering the region (fair sharing only); None: no caps.
    failures: listed worker crashes, partitions and region outages, a tuple of
      `failures.Failure`, or None (the reference: nothing fails).
    failure_rate: a `failures.FailureRate` drawing seeded worker crashes, or None.
    failure_policy: a `failures.FailurePolicy` (None: the defaults, when anything fails).
  """
  bandwidth_gbps: np.ndarray
  worker_speeds_raw: tuple
  name: str | None = None
  latency_ms: np.ndarray | None = None
  compute_jitter: jitter_lib.ComputeJitter | None = None
  bandwidth_traces: tuple | None = None
  bandwidth_jitter: jitter_lib.BandwidthJitter | None = None
  link_sharing: str = "none"
  uplink_gbps: tuple | None = None
  downlink_gbps: tuple | None = None
  failures: tuple | None = None
  failure_rate: failures_lib.FailureRate | None = None
  failure_policy: failures_lib.FailurePolicy | None = None
  num_regions: int = dataclasses.field(init=False)
  num_workers: int = dataclasses.field(init=False)
  worker_region: np.ndarray = dataclasses.field(init=False)
  worker_speed: np.ndarray = dataclasses.field(init=False)

  def __post_init__(self):
    speeds = self.worker_speeds_raw
    if isinstance(speeds, (str, bytes)) or not hasattr(speeds, "__len__"):
      raise InvalidEnvironment(
          f"worker_speeds must be a list with one list of speeds per region, got {speeds!r}")
    if len(speeds) == 0:
      raise InvalidEnvironment("worker_speeds is empty: an environment needs at least one region")
    speeds_t = []
    for r, region in enumerate(speeds):
      if isinstance(region, (str, bytes)) or not hasattr(region, "__len__"):
        raise InvalidEnvironment(
            f"worker_speeds[{r}] must be a list of speeds, got {region!r}")
      if len(region) == 0:
        raise InvalidEnvironment(f"worker_speeds[{r}] is empty: region {r} has no workers")
      speeds_t.append(tuple(
          _positive_finite(s, f"worker_speeds[{r}][{i}]") for i, s in enumerate(region)))
    num_regions = len(speeds_t)

    rows = self.bandwidth_gbps
    if isinstance(rows, np.ndarray):
      rows = rows.tolist()
    if isinstance(rows, (str, bytes)) or not hasattr(rows, "__len__"):
      raise InvalidEnvironment(
          f"network_bandwidths must be a list of {num_regions} rows, got {rows!r}")
    if len(rows) != num_regions:
      raise InvalidEnvironment(
          f"network_bandwidths has {len(rows)} rows but worker_speeds has {num_regions} "
          f"regions; the matrix must be R x R with R = {num_regions}")
    for i, row in enumerate(rows):
      if isinstance(row, (str, bytes)) or not hasattr(row, "__len__") or len(row) != num_regions:
        raise InvalidEnvironment(
            f"network_bandwidths row {i} must have {num_regions} entries (R x R matrix), "
            f"got {row!r}")
    bw = np.array([[_positive_finite(b, f"network_bandwidths[{i}][{j}] (Gbps)")
                    for j, b in enumerate(row)] for i, row in enumerate(rows)],
                  dtype=np.float64).reshape(num_regions, num_regions)
    bw.flags.writeable = False

    flat = [s for region in speeds_t for s in region]
    speed = np.asarray(flat, dtype=np.float64)
    speed = speed / speed.max()  # s_w = raw_w / max raw, in (0, 1]
    speed.flags.writeable = False
    region = np.repeat(np.arange(num_regions, dtype=np.int64), [len(s) for s in speeds_t])
    region.flags.writeable = False
    set_ = object.__setattr__
    set_(self, "latency_ms", _latency_matrix(self.latency_ms, num_regions))
    set_(self, "compute_jitter", _compute_jitter(self.compute_jitter))
    set_(self, "bandwidth_traces", _bandwidth_traces(self.bandwidth_traces, num_regions))
    set_(self, "bandwidth_jitter", _bandwidth_jitter(self.bandwidth_jitter))
    set_(self, "link_sharing", _link_sharing(self.link_sharing))
    set_(self, "uplink_gbps", _region_caps(self.uplink_gbps, "uplink_gbps", num_regions))
    set_(self, "downlink_gbps", _region_caps(self.downlink_gbps, "downlink_gbps", num_regions))
    if self.link_sharing != "fair":
      for key in ("uplink_gbps", "downlink_gbps"):
        if getattr(self, key) is not None:
          raise InvalidEnvironment(f"{key} needs link_sharing: fair (the cap is shared by the "
                                   "region's concurrent transfers)")
    else:
      for key in ("bandwidth_traces", "bandwidth_jitter"):
        if getattr(self, key) is not None:
          raise InvalidEnvironment(f"link_sharing: fair cannot be combined with {key} (fair "
                                   "sharing needs constant link capacities)")
    set_(self, "failures", _failures(self.failures, num_regions, len(flat)))
    set_(self, "failure_rate", _failure_rate(self.failure_rate))
    set_(self, "failure_policy", _failure_policy(self.failure_policy))
    if self.failures is None and self.failure_rate is None:
      if self.failure_policy is not None:
        raise InvalidEnvironment("failure_policy needs failures or failure_rate")
    else:
      for key in ("link_sharing", "bandwidth_traces", "bandwidth_jitter", "compute_jitter"):
        value = getattr(self, key)
        if value is not None and value != "none":
          raise InvalidEnvironment(
              f"failures cannot be combined with {key} (not supported: failures are timed on "
              "the fixed network, with latency, and without compute jitter)")
    set_(self, "bandwidth_gbps", bw)
    set_(self, "worker_speeds_raw", tuple(speeds_t))
    set_(self, "num_regions", num_regions)
    set_(self, "num_workers", len(flat))
    set_(self, "worker_region", region)
    set_(self, "worker_speed", speed)

  def __eq__(self, other):
    if not isinstance(other, Environment):
      return NotImplemented
    same_latency = (self.latency_ms is None and other.latency_ms is None) or (
        self.latency_ms is not None and other.latency_ms is not None
        and np.array_equal(self.latency_ms, other.latency_ms))
    return (self.worker_speeds_raw == other.worker_speeds_raw
            and np.array_equal(self.bandwidth_gbps, other.bandwidth_gbps) and same_latency
            and self.compute_jitter == other.compute_jitter
            and self.bandwidth_traces == other.bandwidth_traces
            and self.bandwidth_jitter == other.bandwidth_jitter
            and self.link_sharing == other.link_sharing
            and self.uplink_gbps == other.uplink_gbps
            and self.downlink_gbps == other.downlink_gbps
            and self.failures == other.failures and self.failure_rate == other.failure_rate
            and self.failure_policy == other.failure_policy)

  def __hash__(self):
    latency = b"" if self.latency_ms is None else self.latency_ms.tobytes()
    return hash((self.worker_speeds_raw, self.bandwidth_gbps.tobytes(), latency,
                 self.compute_jitter, self.bandwidth_traces, self.bandwidth_jitter,
                 self.link_sharing, self.uplink_gbps, self.downlink_gbps, self.failures,
                 self.failure_rate, self.failure_policy))

  @property
  def has_failures(self) -> bool:
    """True when anything can fail (listed failures or a failure rate)."""
    return self.failures is not None or self.failure_rate is not None

  def failure_timeline(self) -> failures_lib.Timeline | None:
    """The failures as down intervals (failures.Timeline, cached); None when nothing fails."""
    if not self.has_failures:
      return None
    got = self.__dict__.get("_timeline")
    if got is None:
      got = failures_lib.Timeline(self.failures, self.failure_rate, self.failure_policy,
                                  self.num_workers, self.worker_region, self.num_regions)
      object.__setattr__(self, "_timeline", got)
    return got

  def region_workers(self, region: int) -> range:
    """Global indices of the workers of `region`."""
    start = sum(len(s) for s in self.worker_speeds_raw[:region])
    return range(start, start + len(self.worker_speeds_raw[region]))

  def to_dict(self) -> dict:
    """The YAML/JSON form (without the name): num_regions, network_bandwidths, worker_speeds."""
    d = {
        "num_regions": self.num_regions,
        "network_bandwidths": self.bandwidth_gbps.tolist(),
        "worker_speeds": [list(s) for s in self.worker_speeds_raw],
    }
    if self.latency_ms is not None:  # absent without latency: the reference's format and hash
      d["network_latencies_ms"] = self.latency_ms.tolist()
    if self.compute_jitter is not None:
      d["compute_jitter"] = self.compute_jitter.to_dict()
    if self.bandwidth_traces is not None:
      d["bandwidth_traces"] = [{"from": i, "to": j, "times_ms": list(t), "gbps": list(b)}
                               for i, j, t, b in self.bandwidth_traces]
    if self.bandwidth_jitter is not None:
      d["bandwidth_jitter"] = self.bandwidth_jitter.to_dict()
    if self.link_sharing != "none":  # absent without sharing: the reference's format and hash
      d["link_sharing"] = self.link_sharing
    for key in ("uplink_gbps", "downlink_gbps"):
      if getattr(self, key) is not None:
        d[key] = list(getattr(self, key))
    if self.failures is not None:  # absent without failures: the reference's format and hash
      d["failures"] = [f.to_dict() for f in self.failures]
    if self.failure_rate is not None:
      d["failure_rate"] = self.failure_rate.to_dict()
    if self.failure_policy is not None:
      d["failure_policy"] = self.failure_policy.to_dict()
    return d


def environment_from_dict(d: Mapping, name: str | None = None, *,
                          source: str | None = None) -> Environment:
  """Builds an Environment from a mapping with the keys of the YAML format.

  Args:
    d: mapping with `network_bandwidths`, `worker_speeds` and optionally `num_regions`.
    name: label for the environment.
    source: where it comes from, for error messages (default: the name).

  Returns:
    The validated Environment.

  Raises:
    InvalidEnvironment: unknown or missing keys, or any invalid value.
  """
  where = f"{source}: " if source else (f"environment {name!r}: " if name else "")
  if not isinstance(d, Mapping):
    raise InvalidEnvironment(
        f"{where}expected a mapping with keys {', '.join(_KEYS)}, got {type(d).__name__}")
  unknown = sorted(str(k) for k in d if k not in _KEYS)
  if unknown:
    raise InvalidEnvironment(
        f"{where}unknown key(s) {unknown}; allowed: {', '.join(_KEYS)}")
  for key in ("network_bandwidths", "worker_speeds"):
    if key not in d:
      raise InvalidEnvironment(f"{where}missing key {key!r}")
  try:
    env = Environment(d["network_bandwidths"], d["worker_speeds"], name=name,
                      latency_ms=d.get("network_latencies_ms"),
                      compute_jitter=d.get("compute_jitter"),
                      bandwidth_traces=d.get("bandwidth_traces"),
                      bandwidth_jitter=d.get("bandwidth_jitter"),
                      link_sharing=d.get("link_sharing"),
                      uplink_gbps=d.get("uplink_gbps"),
                      downlink_gbps=d.get("downlink_gbps"),
                      failures=d.get("failures"),
                      failure_rate=d.get("failure_rate"),
                      failure_policy=d.get("failure_policy"))
  except InvalidEnvironment as e:
    raise InvalidEnvironment(f"{where}{e}") from None
  if "num_regions" in d:
    n = d["num_regions"]
    if not isinstance(n, numbers.Integral) or isinstance(n, bool) or n < 1:
      raise InvalidEnvironment(f"{where}num_regions must be a positive integer, got {n!r}")
    if n != env.num_regions:
      raise InvalidEnvironment(
          f"{where}num_regions is {n} but network_bandwidths/worker_speeds describe "
          f"{env.num_regions} regions")
  return env


def _is_file(path: Path) -> bool:
  """Path.is_file(), False also for names the OS rejects (too long, NUL bytes)."""
  try:
    return path.is_file()
  except (OSError, ValueError):
    return False


def _exists(path: Path) -> bool:
  try:
    return path.exists()
  except (OSError, ValueError):
    return False


def presets() -> tuple[str, ...]:
  """Names of the preset environments in halos_jax/configs/envs/."""
  if not ENVS_DIR.is_dir():
    return ()
  return tuple(sorted(p.stem for p in ENVS_DIR.glob("*.yaml")))


def load_environment(name_or_path: Any) -> Environment:
  """Loads a preset ('geo4', 'homogeneous4x4', 'single_region'), a YAML file or a mapping.

  Args:
    name_or_path: a preset name, a path to a YAML file (str or Path), or a mapping in the YAML
      format (e.g. a ConfigDict's `to_dict()`).

  Returns:
    The validated Environment.

  Raises:
    InvalidEnvironment: unknown preset, missing file, YAML syntax error or invalid content.
  """
  if isinstance(name_or_path, Environment):
    return name_or_path
  if hasattr(name_or_path, "to_dict") and not isinstance(name_or_path, (str, os.PathLike)):
    name_or_path = name_or_path.to_dict()  # an ml_collections ConfigDict
  if isinstance(name_or_path, Mapping):
    return environment_from_dict(name_or_path, name="inline")
  if not isinstance(name_or_path, (str, os.PathLike)):
    raise InvalidEnvironment(
        f"env must be a preset name, a path to a YAML file or a mapping, got {name_or_path!r}")
  text = os.fspath(name_or_path)
  looks_like_path = (isinstance(name_or_path, os.PathLike) or os.sep in text
                     or text.endswith((".yaml", ".yml")) or _is_file(Path(text)))
  if looks_like_path:
    path, name = Path(text), Path(text).stem
    if not _is_file(path):
      what = "is not a regular file" if _exists(path) else "does not exist"
      raise InvalidEnvironment(f"environment file {text!r} {what}")
  else:
    path, name = ENVS_DIR / f"{text}.yaml", text
    if not _is_file(path):
      known = ", ".join(presets()) or f"none found in {ENVS_DIR}"
      raise InvalidEnvironment(
          f"unknown environment preset {text!r}; presets: {known}; or give a path to a YAML file")
  try:
    content = path.read_text()
  except (OSError, UnicodeDecodeError) as e:
    raise InvalidEnvironment(f"environment file {str(path)!r}: cannot read: {e}") from None
  try:
    data = yaml.safe_load(content)
  # Besides YAMLError, constructors raise ValueError/OverflowError on bad tagged scalars
  # (`!!int abc`, `!!timestamp 2020-99-99`), and deep nesting exhausts the recursion limit.
  except (yaml.YAMLError, ValueError, OverflowError, RecursionError) as e:
    detail = " ".join(str(e).split()) or type(e).__name__
    raise InvalidEnvironment(f"environment file {str(path)!r}: malformed YAML: {detail}") from None
  if data is None:
    raise InvalidEnvironment(f"environment file {str(path)!r} is empty")
  return environment_from_dict(data, name=name, source=f"environment file {str(path)!r}")
