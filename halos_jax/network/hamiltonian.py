"""Hamiltonian cycles in the digraph of links at least as fast as a threshold (best ring search).

`ham_cycle(b, tau, method)` looks for a cycle through every region using only links i -> j with
b[i, j] >= tau: an exact subset DP for up to DP_MAX_REGIONS regions, above that Karp-Steele
patching of seeded random cycle covers, then a pruned depth-first search with a node budget.
`necessary(b, tau)` tests two conditions every Hamiltonian digraph meets (strongly connected, a
cycle cover), both polynomial. ring.py's `best_ring` binary-searches tau with them.
"""
from __future__ import annotations

import random

import numpy as np

# Ham-cycle tests use the exact subset DP up to this many regions (2^R * R numpy work).
DP_MAX_REGIONS = 16
# Above DP_MAX_REGIONS: random cycle covers tried for patching, then the pruned DFS's node budget.
PATCH_TRIES = 20
DFS_NODE_BUDGET = 10_000


def _adjacency(b: np.ndarray, tau: float) -> tuple[list[int], list[int]]:
  """Bitmask adjacency of the digraph of inter-region links with bandwidth >= tau."""
  r = b.shape[0]
  ok = b >= tau
  np.fill_diagonal(ok, False)
  out = [sum(1 << int(j) for j in np.flatnonzero(ok[i])) for i in range(r)]
  inn = [sum(1 << int(i) for i in np.flatnonzero(ok[:, j])) for j in range(r)]
  return out, inn


def _strongly_connected(out: list[int], inn: list[int]) -> bool:
  r = len(out)
  full = (1 << r) - 1
  for adj in (out, inn):
    seen, frontier = 1, 1
    while frontier:
      nxt = 0
      f = frontier
      while f:
        low = f & -f
        nxt |= adj[low.bit_length() - 1]
        f ^= low
      frontier = nxt & ~seen
      seen |= nxt
    if seen != full:
      return False
  return True


def _has_cycle_cover(out: list[int]) -> bool:
  """A perfect matching between out-copies and in-copies exists (Kuhn's augmenting paths)."""
  return _cycle_cover(out) is not None


def necessary(b: np.ndarray, tau: float) -> bool:
  """Conditions every Hamiltonian cycle implies: strong connectivity and a cycle cover."""
  out, inn = _adjacency(b, tau)
  return _strongly_connected(out, inn) and _has_cycle_cover(out)


def _ham_cycle_dp(out: list[int], inn: list[int]) -> list[int] | None:
  """Exact Hamiltonian-cycle test by DP over subsets (Held-Karp style), vectorised in numpy.

  reach[S] = bitmask of the vertices v such that some path starting at vertex 0 visits exactly
  the vertex set S and ends at v. S grows one vertex at a time: v in reach[S] iff
  v in S, v != 0 and some u in reach[S - {v}] has the edge u -> v. A cycle exists iff some
  v in reach[all] has the edge v -> 0. O(2^R R) elementwise work.

  Returns:
    The cycle as a vertex order starting at 0, or None.
  """
  r = len(out)
  full = (1 << r) - 1
  masks = np.arange(1 << r, dtype=np.int64)
  masks = masks[(masks & 1) == 1]  # paths start at vertex 0
  pop = np.bitwise_count(masks)
  reach = np.zeros(1 << r, dtype=np.int64)
  reach[1] = 1
  inn_np = np.array(inn, dtype=np.int64)
  by_size = [masks[pop == k] for k in range(r + 1)]
  for k in range(2, r + 1):
    layer = by_size[k]
    if layer.size == 0:
      continue
    acc = np.zeros(layer.shape, dtype=np.int64)
    for v in range(1, r):
      bit = np.int64(1 << v)
      has_v = (layer & bit) != 0
      sel = layer[has_v]
      ok = (reach[sel ^ bit] & inn_np[v]) != 0
      acc[has_v] |= np.where(ok, bit, np.int64(0))
    reach[layer] = acc
  ends = int(reach[full]) & inn[0]
  if not ends:
    return None
  # Walk back from a valid last vertex.
  v = (ends & -ends).bit_length() - 1
  path = [v]
  s = full
  while v != 0:
    s ^= 1 << v
    cand = int(reach[s]) & inn[v]
    v = (cand & -cand).bit_length() - 1
    path.append(v)
  path.reverse()  # 0, ..., last
  return path


def _ham_cycle_dfs(out: list[int], inn: list[int], budget: int) -> tuple[list[int] | None, bool]:
  """Pruned depth-first search for a Hamiltonian cycle.

  Exact when it finishes within `budget` expanded nodes. Prunes a partial path 0 ... u with
  unvisited set U when some x in U has no possible predecessor in U + {u} or no possible
  successor in U + {0}, or when 0 has no possible predecessor in U; a vertex whose only possible
  predecessor is u is forced next. Candidates are tried fewest-onward-options first (Warnsdorff).

  Returns:
    (cycle or None, finished): finished False means the budget ran out (undecided).
  """
  r = len(out)
  full = (1 << r) - 1
  start = min(range(r), key=lambda i: (bin(out[i]).count("1") + bin(inn[i]).count("1"), i))
  path = [start]
  nodes = [0]

  def feasible(u, unvisited):
    if not unvisited:
      return out[u] >> start & 1 == 1, 0
    if not inn[start] & unvisited:
      return False, 0
    pred_ok = unvisited | (1 << u)
    succ_ok = unvisited | (1 << start)
    forced = 0
    m = unvisited
    while m:
      low = m & -m
      x = low.bit_length() - 1
      m ^= low
      if not out[x] & succ_ok:
        return False, 0
      p = inn[x] & pred_ok
      if not p:
        return False, 0
      if p == 1 << u:
        if forced:
          return False, 0
        forced = low
    return True, forced

  def search(u, unvisited):
    nodes[0] += 1
    if nodes[0] > budget:
      raise TimeoutError
    ok, forced = feasible(u, unvisited)
    if not ok:
      return False
    if not unvisited:
      return True
    cand = forced or (out[u] & unvisited)
    order = []
    while cand:
      low = cand & -cand
      cand ^= low
      x = low.bit_length() - 1
      order.append((bin(out[x] & unvisited).count("1"), x))
    order.sort()
    for _, x in order:
      path.append(x)
      if search(x, unvisited & ~(1 << x)):
        return True
      path.pop()
    return False

  try:
    found = search(start, full & ~(1 << start))
  except TimeoutError:
    return None, False
  return (list(path) if found else None), True


def _cycle_cover(out: list[int], rng=None) -> list[int] | None:
  """A cycle cover: succ[i] = j with i -> j, a permutation (Kuhn's matching), or None.

  With `rng` (a random.Random) the vertices and their out-links are tried in random order, so
  repeated calls give different covers; without it, in index order.
  """
  r = len(out)
  match_in = [-1] * r

  def augment(i, seen):
    m, js = out[i], []
    while m:
      low = m & -m
      js.append(low.bit_length() - 1)
      m ^= low
    if rng is not None:
      rng.shuffle(js)
    for j in js:
      if seen[j]:
        continue
      seen[j] = True
      if match_in[j] < 0 or augment(match_in[j], seen):
        match_in[j] = i
        return True
    return False

  order = list(range(r))
  if rng is not None:
    rng.shuffle(order)
  for i in order:
    if not augment(i, [False] * r):
      return None
  succ = [0] * r
  for j, i in enumerate(match_in):
    succ[i] = j
  return succ


def _patch(out: list[int], succ: list[int]) -> list[int] | None:
  """Karp-Steele style patching: merge the cover's cycles by 2-exchanges inside G(tau).

  Two cycles with a -> succ(a) in one and c -> succ(c) in the other merge into one cycle when
  the links a -> succ(c) and c -> succ(a) both exist: swap the two successors.

  Returns:
    The Hamiltonian cycle as a vertex order starting at 0, or None when stuck.
  """
  r = len(succ)
  succ = list(succ)
  cycle_of = [-1] * r
  n = 0
  for s in range(r):
    if cycle_of[s] < 0:
      v = s
      while cycle_of[v] < 0:
        cycle_of[v] = n
        v = succ[v]
      n += 1
  while n > 1:
    merged = False
    for a in range(r):
      for c in range(r):
        if (cycle_of[a] != cycle_of[c] and out[a] >> succ[c] & 1 and out[c] >> succ[a] & 1):
          succ[a], succ[c] = succ[c], succ[a]
          old, new = cycle_of[c], cycle_of[a]
          cycle_of = [new if x == old else x for x in cycle_of]
          n -= 1
          merged = True
          break
      if merged:
        break
    if not merged:
      return None
  order, v = [0], succ[0]
  while v != 0:
    order.append(v)
    v = succ[v]
  return order


def ham_cycle(b: np.ndarray, tau: float, method: str) -> tuple[list[int] | None, bool]:
  """(cycle or None, decided): decided False when 'not found' is not a proof."""
  out, inn = _adjacency(b, tau)
  if method == "dp":
    return _ham_cycle_dp(out, inn), True
  rng = random.Random(0)  # seeded: the same ring in every process
  for _ in range(PATCH_TRIES):
    succ = _cycle_cover(out, rng)
    if succ is None:
      return None, True  # no cycle cover: provably no Hamiltonian cycle
    cycle = _patch(out, succ)
    if cycle is not None:
      return cycle, True
  return _ham_cycle_dfs(out, inn, DFS_NODE_BUDGET)
