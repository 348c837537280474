"""The network model an environment describes (`from_environment`)."""
from __future__ import annotations

from halos_jax.network import model
from halos_jax.network import sharing
from halos_jax.network import traces


def from_environment(env) -> model.NetworkModel:
  """The reference `BandwidthOnly`; `WithLatency` when the environment has
  `network_latencies_ms`; wrapped in `traces.TimeVarying` when it has `bandwidth_traces` or
  `bandwidth_jitter`; `sharing.FairRing` (on the matrix capped by `uplink_gbps` /
  `downlink_gbps`) with `link_sharing: fair`."""
  region_workers = [len(s) for s in env.worker_speeds_raw]
  if getattr(env, "link_sharing", "none") == "fair":
    bw = sharing.effective_bandwidth(env.bandwidth_gbps, env.uplink_gbps, env.downlink_gbps)
    base = (model.BandwidthOnly(bw) if env.latency_ms is None
            else model.WithLatency(bw, env.latency_ms, region_workers))
    return sharing.FairRing(base, env.bandwidth_gbps, region_workers)
  if getattr(env, "latency_ms", None) is None:
    base = model.BandwidthOnly(env.bandwidth_gbps)
  else:
    base = model.WithLatency(env.bandwidth_gbps, env.latency_ms, region_workers)
  spec = getattr(env, "bandwidth_traces", None)
  jitter = getattr(env, "bandwidth_jitter", None)
  if not spec and jitter is None:
    return base
  return traces.TimeVarying(base, traces.from_spec(spec or ()), region_workers, jitter=jitter)
