"""HALoS (HALOS.md 2.6): local parameter servers per region, one global server in region 0.

LPS l holds workers [l * wpl, (l + 1) * wpl) of one region and keeps a version v_l and the
version at its last merge vhat_l. Timing (reference semantics):
  worker round      2 * transfer(LPS region -> worker region) + step_time_ms * H_w / s_w
  Delta to the GPS  transfer(LPS region -> region 0)
  global model back transfer(region 0 -> LPS region), leaving right after the GPS applied it

    on arrive at LPS l:  v_l += 1
                         if v_l == vhat_l + K: send (K counted from the LAST MERGE; equality,
                                               so at most one exchange in flight per LPS)
                         restart the worker at once from the current (pre-merge) x_l
    on gps_apply:        GPS version += 1, counts the steps the Delta reports; stop when the
                         count reaches total_local_steps
    on merge:            vhat_l = v_l

A send reports every local step the LPS received since its previous send, including those
applied while the previous exchange was in flight.

References:
  Kim et al., "HALoS: Hierarchical Asynchronous Local SGD over Slow Networks for
  Geo-Distributed Large Language Model Training", ICML 2025 (arXiv 2506.04531).
"""
from __future__ import annotations

import heapq
from array import array

import numpy as np

from halos_jax.schedule import _assemble
from halos_jax.schedule import events as ev
from halos_jax.schedule.environment import Environment
from halos_jax.schedule.plan import make_plan
from halos_jax.schedule.settings import ScheduleSettings


ARRIVE_SEND = 7  # a processed arrival that also triggered a send (loop-internal code)


def build(env: Environment, settings: ScheduleSettings) -> ev.Schedule:
  """The HALoS schedule of (env, settings)."""
  plan = make_plan(env, settings)
  w_count = env.num_workers
  num_lps = plan.num_servers
  h = plan.worker_H.tolist()
  dur = plan.round_ms.tolist()
  up = plan.up_ms.tolist()
  down = plan.down_ms.tolist()
  lps_of = plan.worker_server.tolist()
  k_updates = settings.K
  total = settings.total_local_steps
  ARRIVE, GPS_APPLY, MERGE = ev.ARRIVE, ev.GPS_APPLY, ev.MERGE  # pylint: disable=invalid-name

  # -- event loop. Pending events: (t, insertion number, kind, worker | exchange id).
  heap = [(dur[w], w, ARRIVE, w) for w in range(w_count)]  # all workers start at t = 0
  heapq.heapify(heap)
  seq = w_count
  v = [0] * num_lps  # v_l
  send_at = [k_updates] * num_lps  # vhat_l + K
  acc = [0] * num_lps  # local steps received since the LPS's previous send
  ex_lps, ex_v, ex_vhat, ex_steps = array("q"), array("q"), array("q"), array("q")
  ex_vmerge = {}
  codes, times = array("q"), array("d")  # per processed event: payload << 3 | kind, t
  emit, add_t = codes.append, times.append
  heappush, heapreplace, heappop = heapq.heappush, heapq.heapreplace, heapq.heappop
  counted = gps_version = 0
  while True:
    t, _, kind, x = heap[0]
    add_t(t)
    if kind == ARRIVE:  # x_l = DN_l(x_l, g); v_l += 1
      l = lps_of[x]
      vl = v[l] = v[l] + 1
      acc[l] += h[x]
      if vl == send_at[l]:  # v_l == vhat_l + K: send Delta = xhat_l - x_l
        e = len(ex_lps)
        ex_lps.append(l)
        ex_v.append(vl)
        ex_vhat.append(vl - k_updates)
        ex_steps.append(acc[l])
        acc[l] = 0
        heappush(heap, (t + up[l], seq, GPS_APPLY, e))  # keeps this arrival on top
        seq += 1
        emit((x << 3) | ARRIVE_SEND)
      else:
        emit((x << 3) | ARRIVE)
      heapreplace(heap, (t + dur[x], seq, ARRIVE, x))  # restart x from the pre-merge x_l
      seq += 1
    elif kind == GPS_APPLY:  # xG = DN_g(xG, Delta); count the reported steps
      emit((x << 3) | GPS_APPLY)
      gps_version += 1
      counted += ex_steps[x]
      if counted >= total:
        break
      heapreplace(heap, (t + down[ex_lps[x]], seq, MERGE, x))  # xG leaves for the LPS
      seq += 1
    else:  # merge: x_l = (1 - alpha) x_l + alpha xG; xhat_l = x_l; vhat_l = v_l
      emit((x << 3) | MERGE)
      l = ex_lps[x]
      ex_vmerge[x] = v[l]
      send_at[l] = v[l] + k_updates
      heappop(heap)

  # -- columns. Processed arrival -> [arrive, (send), start]; gps_apply, merge -> themselves;
  # -- W starts first and a stop last.
  pkind, px = _assemble.decode(codes)
  pt = np.frombuffer(times, dtype=np.float64)
  is_arr = (pkind == ARRIVE) | (pkind == ARRIVE_SEND)
  per = np.where(pkind == ARRIVE_SEND, 3, np.where(is_arr, 2, 1))
  src = np.repeat(np.arange(len(pkind)), per)  # processed event of each emitted event
  pos = np.arange(len(src)) - np.repeat(np.cumsum(per) - per, per)  # position in its group
  sk = pkind[src]
  body_kind = np.where(sk == GPS_APPLY, GPS_APPLY, np.where(sk == MERGE, MERGE, ev.ARRIVE))
  body_kind = np.where((sk == ARRIVE_SEND) & (pos == 1), ev.SEND, body_kind)
  body_kind = np.where(is_arr[src] & (pos == per[src] - 1), ev.START, body_kind)
  n = w_count + len(src) + 1
  kind = np.empty(n, dtype=np.int8)
  kind[:w_count] = ev.START
  kind[w_count:-1] = body_kind
  kind[-1] = ev.STOP
  t_all = np.empty(n)
  t_all[:w_count] = 0.0
  t_all[w_count:-1] = pt[src]
  t_all[-1] = pt[-1]

  aw = px[is_arr]  # arrival workers, in order
  n_arr = len(aw)
  round_worker = np.concatenate((np.arange(w_count), aw))
  t_start = np.concatenate((np.zeros(w_count), pt[is_arr]))
  arr_round = _assemble.arrival_rounds(aw, w_count)
  t_arrive = np.full(len(round_worker), np.nan)
  t_arrive[arr_round] = pt[is_arr]
  idx = np.zeros(n, dtype=np.int64)
  idx[:w_count] = np.arange(w_count)
  body_idx = idx[w_count:-1]
  body_idx[body_kind == ev.ARRIVE] = arr_round
  body_idx[body_kind == ev.START] = np.arange(w_count, w_count + n_arr)
  cols, st, ar = _assemble.async_round_columns(
      kind, idx, plan, settings, round_worker=round_worker, t_start=t_start, t_arrive=t_arrive)
  cols["t"][:] = t_all  # the loop's times for every event (starts/arrivals agree exactly)

  lps = np.frombuffer(ex_lps, dtype=np.int64)
  steps = np.frombuffer(ex_steps, dtype=np.int64)
  vmerge = np.full(len(lps), -1, dtype=np.int64)
  if ex_vmerge:
    vmerge[list(ex_vmerge)] = list(ex_vmerge.values())
  sel = kind == ev.SEND
  e = np.arange(int(sel.sum()))  # exchanges are numbered in send order
  cols["exchange"][sel] = e
  cols["server"][sel] = lps[e]
  cols["version"][sel] = np.frombuffer(ex_v, dtype=np.int64)[e]
  cols["base_version"][sel] = np.frombuffer(ex_vhat, dtype=np.int64)[e]
  cols["steps"][sel] = steps[e]
  sel = kind == ev.GPS_APPLY
  e = np.concatenate((np.zeros(w_count, np.int64), px[src], [0]))[sel]
  cols["exchange"][sel] = e
  cols["server"][sel] = lps[e]
  cols["version"][sel] = np.arange(1, len(e) + 1)
  cols["steps"][sel] = steps[e]
  cols["counted_steps"][sel] = np.cumsum(steps[e])
  sel = kind == ev.MERGE
  e = np.concatenate((np.zeros(w_count, np.int64), px[src], [0]))[sel]
  cols["exchange"][sel] = e
  cols["server"][sel] = lps[e]
  cols["version"][sel] = vmerge[e]
  cols["version"][-1] = gps_version
  cols["counted_steps"][-1] = counted
  return ev.Schedule(settings, env, plan, _assemble.finish(cols))
