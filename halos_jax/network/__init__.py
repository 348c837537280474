"""The network between regions, behind one interface (`NetworkModel`).

  net = network.from_environment(env)
  net.transfer_ms(src_region, dst_region, message_bytes)   # one message
  net.allreduce_ms(message_bytes, num_workers)             # ring all-reduce over net.ring

Plain Python + numpy: when a message arrives never depends on model values.
"""
from halos_jax.network.model import (BandwidthOnly, NetworkModel, WithLatency, allreduce_ms,
                                     transfer_ms)
from halos_jax.network.select import from_environment
from halos_jax.network.traces import TimeVarying, Trace
from halos_jax.network.ring import Ring, best_ring, best_ring_bandwidth, ring_bandwidth

__all__ = [
    "BandwidthOnly", "NetworkModel", "Ring", "allreduce_ms", "best_ring", "best_ring_bandwidth",
    "from_environment", "ring_bandwidth", "transfer_ms", "WithLatency", "TimeVarying", "Trace",
]
