"""The best ring of regions for the ring all-reduce: a bottleneck travelling-salesman cycle.

The ring visits the regions in a cyclic order; the hop from region i to the next region j uses
the link i -> j (row i, column j of the bandwidth matrix: the direction the ring traverses). Its
bandwidth is the minimum over its R hops, and b* is the maximum of that over all cyclic orders,
in both orientations (for an asymmetric matrix the two orientations of one cyclic order differ).
`best_ring` finds it without enumerating the R! orders (see its docstring and docs/algorithms.md
section 3).
"""
from __future__ import annotations

import sys
from typing import NamedTuple

import numpy as np

from halos_jax.network import hamiltonian
from halos_jax.network.hamiltonian import DP_MAX_REGIONS

class Ring(NamedTuple):
  """The result of the ring search.

  Attributes:
    bandwidth_gbps: the ring's bottleneck, min over its hops of bandwidth[i, next(i)].
    order: the regions in ring order; the hop order[k] -> order[k + 1] uses row order[k],
      column order[k + 1] (and the last hop returns to order[0]).
    exact: True when `bandwidth_gbps` is proven optimal (always for R <= DP_MAX_REGIONS).
    upper_bound_gbps: a proven upper bound on the optimum (equal to bandwidth_gbps if exact).
  """
  bandwidth_gbps: float
  order: tuple
  exact: bool
  upper_bound_gbps: float


def ring_bandwidth(bandwidth_gbps: np.ndarray, order) -> float:
  """Bottleneck of the ring visiting `order` (hop i -> j uses bandwidth[i, j])."""
  b = np.asarray(bandwidth_gbps)
  r = len(order)
  if r == 1:
    return float(b[order[0], order[0]])
  return float(min(b[order[k], order[(k + 1) % r]] for k in range(r)))


def best_ring(bandwidth_gbps: np.ndarray, method: str | None = None) -> Ring:
  """The ring of regions with the largest bottleneck bandwidth (docs/algorithms.md 3).

  Method (a bottleneck travelling-salesman cycle, never R! enumeration):
    1. The candidate answers are the distinct off-diagonal bandwidths tau. The digraph G(tau)
       of links with bandwidth >= tau loses edges as tau grows, so "G(tau) has a Hamiltonian
       cycle" is monotone in tau: binary search finds the largest such tau.
    2. Upper bound first: the largest tau at which G(tau) is strongly connected and has a cycle
       cover (a perfect out/in matching) - both are implied by a Hamiltonian cycle and cheap
       (polynomial). The search for the optimum runs below it.
    3. The Hamiltonian test: for R <= DP_MAX_REGIONS an exact subset DP (O(2^R R), vectorised).
       Above: a heuristic that finds cycles (Karp-Steele patching of PATCH_TRIES seeded random
       cycle covers, O(R^3) each), then a pruned depth-first search with a node budget
       (DFS_NODE_BUDGET), exact whenever it finishes. A test that finds nothing without proof
       counts as "no" and the search continues below tau: the ring returned is always a valid
       ring; `exact` says whether it is proven optimal, `upper_bound_gbps` bounds the optimum.
       The upper bound is tested first and, for random 32-128-region matrices, patching
       reaches it (so the answer is proven optimal) in well under a second.

  Args:
    bandwidth_gbps: R x R matrix, row = from region, column = to region.
    method: 'dp' (exact subset DP) or 'search' (patching, then pruned DFS) to force the
      Hamiltonian test (tests); default: 'dp' for R <= DP_MAX_REGIONS, else 'search'.

  Returns:
    Ring(bandwidth_gbps, order, exact, upper_bound_gbps). For R = 1 the "ring" is the region's
    own link (the diagonal), for R = 2 it is 0 -> 1 -> 0.
  """
  b = np.asarray(bandwidth_gbps, dtype=np.float64)
  r = b.shape[0]
  if r == 1:
    v = float(b[0, 0])
    return Ring(v, (0,), True, v)
  if r == 2:
    v = float(min(b[0, 1], b[1, 0]))
    return Ring(v, (0, 1), True, v)
  if method is None:
    method = "dp" if r <= DP_MAX_REGIONS else "search"
  if method not in ("dp", "search"):
    raise ValueError(f"method must be 'dp' or 'search', got {method!r}")
  limit = sys.getrecursionlimit()  # the matching and the DFS recurse up to R deep
  sys.setrecursionlimit(max(limit, 4 * r + 100))
  try:
    return _best_ring(b, method)
  finally:
    sys.setrecursionlimit(limit)


def _best_ring(b: np.ndarray, method: str) -> Ring:
  r = b.shape[0]
  off = b[~np.eye(r, dtype=bool)]
  taus = np.unique(off)  # ascending; G(taus[0]) is complete, so a ring always exists there

  # Step 2: the largest tau meeting the necessary conditions (monotone, binary search).
  lo, hi = 0, len(taus) - 1  # invariant: hamiltonian.necessary(b, taus[lo])
  while lo < hi:
    mid = (lo + hi + 1) // 2
    if hamiltonian.necessary(b, float(taus[mid])):
      lo = mid
    else:
      hi = mid - 1
  ub_index = lo

  # Step 3: the largest tau <= upper bound with a Hamiltonian cycle (binary search; lo only
  # moves on a cycle found, so `best` is always a ring of G(taus[lo])).
  best = list(range(r))  # G(taus[0]) is complete: any order is a ring
  exact = True
  lo, hi = 0, ub_index
  probe = ub_index  # the upper bound first: when it holds (the usual case) one test suffices
  while lo < hi:
    cycle, finished = hamiltonian.ham_cycle(b, float(taus[probe]), method)
    if cycle is not None:
      best, lo = cycle, probe
    else:
      exact = exact and finished
      hi = probe - 1
    probe = (lo + hi + 1) // 2
  value = ring_bandwidth(b, best)
  upper = float(taus[ub_index])
  if value == upper:
    exact = True
  # Rotate so the ring starts at region 0 (a cyclic order has no first region).
  k = best.index(0)
  order = tuple(best[k:] + best[:k])
  return Ring(value, order, exact, upper if not exact else value)


def best_ring_bandwidth(bandwidth_gbps: np.ndarray) -> float:
  """b*: the maximum over cyclic orders of the regions of the ring's bottleneck (Gbps)."""
  return best_ring(bandwidth_gbps).bandwidth_gbps
