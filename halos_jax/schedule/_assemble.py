"""Shared pieces of the builders: turning an event loop's compact trace into columns.

The builders' event loops stay lean: per processed event they append its time and one integer
code `payload << 3 | kind` (payload = the worker of an arrival, the exchange of a gps_apply or
merge). Everything the event triggers at the same instant (the restart of the worker, a send)
follows from the code, and every other column (round ids, data blocks, LR offsets, versions,
counts) is a vectorised function of that trace, computed here in numpy after the loop.
"""
from __future__ import annotations

from array import array

import numpy as np

from halos_jax.schedule import events as ev


def decode(codes: array) -> tuple[np.ndarray, np.ndarray]:
  """(kind int8 [n], payload int64 [n]) from the loop's `payload << 3 | kind` codes."""
  c = np.frombuffer(codes, dtype=np.int64) if len(codes) else np.zeros(0, np.int64)
  return (c & 7).astype(np.int8), c >> 3


def _small(keys: np.ndarray) -> np.ndarray:
  """Keys as int16 when they fit: numpy's stable sort is a radix sort for 16-bit integers."""
  if len(keys) and 0 <= keys.min() and keys.max() < 2**15:
    return keys.astype(np.int16)
  return keys


def arrival_rounds(arrival_worker: np.ndarray, num_workers: int) -> np.ndarray:
  """Round id of each arrival, for workers restarted at once after each arrival.

  Rounds 0..W-1 are the initial ones (round w = worker w); the round dispatched at the k-th
  arrival is W + k. So worker w's first arrival ends round w and each later one ends the round
  dispatched at w's previous arrival.
  """
  n = len(arrival_worker)
  order = np.argsort(_small(arrival_worker), kind="stable")
  w_sorted = arrival_worker[order]
  first = np.ones(n, dtype=bool)
  first[1:] = w_sorted[1:] != w_sorted[:-1]
  prev = np.empty(n, dtype=np.int64)
  prev[1:] = order[:-1]
  rounds_sorted = np.where(first, w_sorted, num_workers + prev)
  out = np.empty(n, dtype=np.int64)
  out[order] = rounds_sorted
  return out


def data_blocks(round_H: np.ndarray, local_batch: int, global_batch: int, uniform_H: int):
  """Contiguous data blocks in dispatch (= round id) order, and the rounds' LR offsets.

  Round r takes local_batch * H_r sequences right after round r - 1's block. Its LR offset is
  floor(data_start / global_batch), rounded down to a multiple of H in synchronous runs where
  every worker has the same H (docs/algorithms.md 2.1).
  """
  sizes = round_H.astype(np.int64) * local_batch
  data_end = np.cumsum(sizes)
  data_start = data_end - sizes
  lr_offset = data_start // global_batch
  if uniform_H:
    lr_offset -= lr_offset % uniform_H
  return data_start, data_end, lr_offset


def group_cumsum(values: np.ndarray, groups: np.ndarray) -> np.ndarray:
  """Inclusive cumulative sum of `values` within each group, in the original order."""
  if len(values) == 0:
    return values.astype(np.int64)
  order = np.argsort(_small(groups), kind="stable")
  g = groups[order]
  cs = np.cumsum(values[order].astype(np.int64))
  new = np.empty(len(g), dtype=bool)
  new[0] = True
  new[1:] = g[1:] != g[:-1]
  starts = np.flatnonzero(new)
  before = np.concatenate(([0], cs))[starts]  # sum before each group's first element
  res = np.empty_like(cs)
  res[order] = cs - before[np.cumsum(new) - 1]
  return res


def fill_rounds(cols: dict, kind: np.ndarray, idx: np.ndarray, *, round_worker: np.ndarray,
                round_H: np.ndarray, t_start: np.ndarray, t_arrive: np.ndarray,
                data_start: np.ndarray, data_end: np.ndarray, lr_offset: np.ndarray,
                worker_server: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
  """Fills the start and arrive rows; returns their boolean masks."""
  st = kind == ev.START
  ar = kind == ev.ARRIVE
  for sel, times in ((st, t_start), (ar, t_arrive)):
    r = idx[sel]
    w = round_worker[r]
    cols["t"][sel] = times[r]
    cols["round"][sel] = r
    cols["worker"][sel] = w
    cols["server"][sel] = worker_server[w]
    cols["H"][sel] = round_H[r]
  r = idx[st]
  cols["data_start"][st] = data_start[r]
  cols["data_end"][st] = data_end[r]
  cols["lr_offset"][st] = lr_offset[r]
  cols["steps"][ar] = round_H[idx[ar]]
  return st, ar


def fill_async_versions(cols: dict, kind: np.ndarray, st: np.ndarray, ar: np.ndarray) -> None:
  """Server versions of start/arrive rows when every arrival is one server update.

  v_server counts the arrivals at that server: an arrive row gets the count including itself
  (version after applying it), a start row the count so far (the snapshot it starts from).
  """
  sel = st | ar
  counts = group_cumsum(ar[sel], cols["server"][sel])
  cols["version"][sel] = counts


def async_round_columns(kind: np.ndarray, idx: np.ndarray, plan, settings, *,
                        round_worker: np.ndarray, t_start: np.ndarray, t_arrive: np.ndarray):
  """Columns of an asynchronous schedule's starts and arrivals (Async Local-SGD, HALoS).

  Hands out the data blocks in round order, fills every start/arrive field and the server
  versions; returns (columns, start positions, arrival positions).
  """
  cols = ev.empty_columns(len(kind))
  cols["kind"][:] = kind
  round_H = plan.worker_H[round_worker]
  data_start, data_end, lr_offset = data_blocks(
      round_H, settings.local_batch, settings.global_batch, plan.uniform_H)
  st, ar = fill_rounds(
      cols, kind, idx, round_worker=round_worker, round_H=round_H, t_start=t_start,
      t_arrive=t_arrive, data_start=data_start, data_end=data_end, lr_offset=lr_offset,
      worker_server=plan.worker_server)
  fill_async_versions(cols, kind, st, ar)
  return cols, st, ar


def finish(cols: dict) -> dict:
  """Sanity checks every builder's output must pass (cheap, vectorised)."""
  t = cols["t"]
  if len(t) and not np.all(t[1:] >= t[:-1]):
    raise AssertionError("schedule times decrease")  # a builder bug, never user input
  if len(t) and cols["kind"][-1] != ev.STOP:
    raise AssertionError("a schedule must end with a stop event")
  return cols


def explicit_columns(codes: array, times: array, round_worker: array, plan, settings):
  """Columns of an asynchronous schedule whose loop recorded every event (with failures, a
  round may be lost and a worker restart later, so starts no longer follow arrivals).

  Args:
    codes: per event `payload << 3 | kind`: START / ARRIVE with the round id, SEND / GPS_APPLY /
      MERGE with the exchange id; the stop is appended here (at the last event's time).
    times: per event, its time.
    round_worker: the worker of each round id (rounds numbered in start order).
    plan: the Plan.
    settings: the ScheduleSettings.

  Returns:
    (columns, kind int8 [n], payload int64 [n]) with the stop's row last (its counts are left
    to the caller).
  """
  pkind, px = decode(codes)
  pt = np.frombuffer(times, dtype=np.float64)
  kind = np.concatenate((pkind, np.array([ev.STOP], np.int8)))
  rw = np.frombuffer(round_worker, dtype=np.int64) if len(round_worker) else np.zeros(
      0, np.int64)
  st, ar = pkind == ev.START, pkind == ev.ARRIVE
  t_start = np.full(len(rw), np.nan)
  t_start[px[st]] = pt[st]
  t_arrive = np.full(len(rw), np.nan)
  t_arrive[px[ar]] = pt[ar]
  idx = np.zeros(len(kind), dtype=np.int64)
  idx[:-1] = np.where(st | ar, px, 0)
  cols, _, _ = async_round_columns(kind, idx, plan, settings, round_worker=rw, t_start=t_start,
                                   t_arrive=t_arrive)
  cols["t"][:-1] = pt
  cols["t"][-1] = pt[-1]
  return cols, kind, np.concatenate((px, [0]))
