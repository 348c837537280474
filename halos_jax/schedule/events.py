"""The event format, the Schedule container and its canonical JSON Lines form.

A schedule is a list of events in their total order. Internally the events are stored as
columns (numpy arrays, one per Event field), which keeps memory proportional to the number of
events (~80 bytes each) and lets the analysis work vectorised; `Schedule.events` materialises
`Event` tuples lazily, a chunk at a time.

Event kinds (fields a kind does not use are -1 / ()):
  start      worker `worker` snapshots server `server`'s current model (`version`) and runs
             `H` local steps on sequences [data_start, data_end) with LR counters
             lr_offset + 1 ... lr_offset + H.
  arrive     round `round` reaches its server. async/halos: applied at once (`version` = the
             server's version after it); async counts its steps (`counted_steps`). ddp/diloco:
             the end of the worker's compute + all-reduce (the update is the `sync`).
  sync       ddp/diloco: the server averages the results of `rounds` and applies its optimizer
             (`version` after, `steps` of the round, `counted_steps`). streaming_diloco: the
             server records the workers' models of `rounds` and, when `fragment` >= 0, applies
             the outer step to that fragment.
  send       halos: LPS `server` sends Delta = xhat_l - x_l (`version` = v_l, `base_version` =
             vhat_l, `steps` = local steps received since its previous send).
  gps_apply  halos: the GPS applies that Delta (`version` = GPS version after, `steps`,
             `counted_steps`); the global model leaves for LPS `server`.
  merge      halos: LPS `server` merges the global model of exchange `exchange` (`version` =
             v_l at the merge, which becomes vhat_l). streaming_diloco: every worker's model
             mixes in the global model's fragment `fragment`.
  stop       the last event (`version` = server updates, `counted_steps`).

`seq` is the event's position in the schedule (0, 1, ...): the builders process pending events
in (t, insertion number) order and emit what an event triggers (a send, the restart of a
worker) right after it, so the schedule is sorted by (t, seq) and `seq` is its index.
"""
from __future__ import annotations

import hashlib
import json
import os
import uuid
from collections.abc import Sequence
from pathlib import Path
from typing import NamedTuple

import numpy as np

from halos_jax.schedule.kinds import (  # noqa: F401  (the kinds, re-exported with the format)
    ARRIVE, GPS_APPLY, KIND_CODE, KINDS, MERGE, SEND, START, STOP, SYNC)

JSONL_FORMAT = "halos_jax.schedule"
JSONL_VERSION = 1


class Event(NamedTuple):
  """One schedule event (see the module docstring for what each kind uses)."""
  kind: str  # 'start' | 'arrive' | 'sync' | 'send' | 'gps_apply' | 'merge' | 'stop'
  t: float  # virtual time in ms (float64)
  seq: int  # position in the schedule; events are ordered by (t, seq)
  round: int = -1  # worker-round id (unique, 0.., in dispatch order)
  worker: int = -1  # global worker index
  server: int = -1  # 0 for the single server of ddp/diloco/async; LPS index for halos
  version: int = -1  # see the module docstring, per kind
  base_version: int = -1  # send: vhat_l (LPS version at the last merge)
  H: int = -1  # start/arrive: local steps of the round (H_w)
  data_start: int = -1  # start: first sequence index of the block (global stream)
  data_end: int = -1  # start: one past the last
  lr_offset: int = -1  # start: the round's steps use counters lr_offset+1 .. lr_offset+H
  steps: int = -1  # arrive: H; send/gps_apply: steps reported; sync: steps of the round
  counted_steps: int = -1  # cumulative count of the evaluated model's server after this event
  exchange: int = -1  # halos: send/gps_apply/merge of the same Delta share it
  fragment: int = -1  # streaming: the fragment a sync steps (outer step) or a merge mixes
  rounds: tuple = ()  # sync: the round ids whose results this sync averages


# Integer columns and their dtypes (sequence indices and counts in int64).
INT_FIELDS = ("round", "worker", "server", "version", "base_version", "H", "data_start",
              "data_end", "lr_offset", "steps", "counted_steps", "exchange", "fragment")
INT_DTYPES = {f: (np.int64 if f in ("data_start", "data_end", "lr_offset", "counted_steps")
                  else np.int32) for f in INT_FIELDS}


def temporary_sibling(path: Path) -> Path:
  """A fresh temporary file name next to `path` (for write-then-rename)."""
  return path.with_name(f".{path.name}.{os.getpid()}.{uuid.uuid4().hex[:8]}.tmp")


class InvalidSchedule(ValueError):
  """A JSONL file that is not a schedule of this format."""


def empty_columns(n: int) -> dict[str, np.ndarray]:
  """Columns for n events: kind, t, and every integer field filled with -1."""
  cols = {"kind": np.zeros(n, dtype=np.int8), "t": np.zeros(n, dtype=np.float64)}
  for f in INT_FIELDS:
    cols[f] = np.full(n, -1, dtype=INT_DTYPES[f])
  return cols


class Events(Sequence):
  """A read-only sequence of Event over a Schedule's columns (materialised per chunk)."""

  CHUNK = 4096

  def __init__(self, columns: dict, rounds_ptr: np.ndarray, rounds_flat: np.ndarray):
    self._cols = columns
    self._ptr = rounds_ptr
    self._flat = rounds_flat
    self._n = len(columns["t"])
    self._cache: dict[int, list[Event]] = {}

  def __len__(self) -> int:
    return self._n

  def _materialise(self, c: int) -> list[Event]:
    a, b = c * self.CHUNK, min((c + 1) * self.CHUNK, self._n)
    cols = self._cols
    kinds = [KINDS[k] for k in cols["kind"][a:b].tolist()]
    ints = [cols[f][a:b].tolist() for f in INT_FIELDS]
    ptr = self._ptr[a:b + 1].tolist()
    flat = self._flat
    out = []
    for j, row in enumerate(zip(kinds, cols["t"][a:b].tolist(), *ints)):
      lo, hi = ptr[j], ptr[j + 1]
      rounds = tuple(flat[lo:hi].tolist()) if hi > lo else ()
      out.append(Event(row[0], row[1], a + j, *row[2:], rounds))
    return out

  def _chunk(self, c: int) -> list[Event]:
    chunk = self._cache.get(c)
    if chunk is None:
      if len(self._cache) >= 2:
        self._cache.pop(next(iter(self._cache)))
      chunk = self._cache[c] = self._materialise(c)
    return chunk

  def __getitem__(self, i):
    if isinstance(i, slice):
      return [self[j] for j in range(*i.indices(self._n))]
    i = int(i)
    if i < 0:
      i += self._n
    if not 0 <= i < self._n:
      raise IndexError(f"event index {i} out of range for {self._n} events")
    c = i // self.CHUNK
    return self._chunk(c)[i - c * self.CHUNK]

  def __iter__(self):
    for c in range((self._n + self.CHUNK - 1) // self.CHUNK):
      yield from (self._cache.get(c) or self._materialise(c))


class Schedule:
  """A whole run's events, in order, with the environment, settings and plan that made them.

  Attributes:
    settings: the ScheduleSettings.
    env: the Environment.
    plan: the Plan (servers, H_w, durations).
    columns: dict of numpy arrays, one per Event field except seq and rounds (kind as an int8
      code into KINDS); sync rounds in `rounds_ptr` / `rounds_flat` (CSR).
    events: the Event sequence (lazy).
    num_servers, worker_server, server_region, lps_region: the servers (lps_region is () for
      algorithms without LPS, i.e. without a GPS).
    sharing: with `link_sharing: fair`, what the asynchronous builders' flow simulator saw
      (`network.sharing.Record`: busy time per link, time lost to sharing, each round's
      download end); None otherwise (and for a schedule read back from JSON Lines, where
      analysis rebuilds it).
  """

  def __init__(self, settings, env, plan, columns: dict, rounds_ptr=None, rounds_flat=None):
    n = len(columns["t"])
    self.settings = settings
    self.env = env
    self.plan = plan
    self.columns = columns
    if rounds_ptr is None:
      rounds_ptr = np.zeros(n + 1, dtype=np.int64)
      rounds_flat = np.zeros(0, dtype=np.int32)
    self.rounds_ptr = rounds_ptr
    self.rounds_flat = rounds_flat
    for col in list(columns.values()) + [rounds_ptr, rounds_flat]:
      col.flags.writeable = False
    self.events = Events(columns, rounds_ptr, rounds_flat)
    self._sha256 = None
    self._summary = None
    self.sharing = None  # link_sharing fair: the flow simulator's network.sharing.Record

  # -- servers ---------------------------------------------------------------------------------

  @property
  def num_servers(self) -> int:
    return self.plan.num_servers

  @property
  def worker_server(self) -> np.ndarray:
    return self.plan.worker_server

  @property
  def server_region(self) -> tuple:
    return self.plan.server_region

  @property
  def lps_region(self) -> tuple:
    return self.plan.server_region if self.plan.hierarchical else ()

  def __len__(self) -> int:
    return len(self.events)

  def __repr__(self) -> str:
    s = self.summary_basic()
    return (f"Schedule({self.settings.algorithm}, {len(self)} events, "
            f"{s['simulated_time_ms'] / 3.6e6:.4f} h, {s['server_updates']} server updates)")

  # -- quick facts -----------------------------------------------------------------------------

  def summary_basic(self) -> dict:
    """Simulated time, server updates and counted local steps (from the stop event)."""
    last = len(self) - 1
    return {
        "simulated_time_ms": float(self.columns["t"][last]),
        "server_updates": int(self.columns["version"][last]),
        "local_steps": int(self.columns["counted_steps"][last]),
    }

  def rounds(self) -> dict[str, np.ndarray]:
    """Per worker round (index = round id): worker, H, data block, lr_offset, start time and
    version, and arrival time (NaN for rounds dispatched but not arrived by the stop)."""
    c = self.columns
    st = np.flatnonzero(c["kind"] == START)
    ar = np.flatnonzero(c["kind"] == ARRIVE)
    r_st = c["round"][st]
    n = int(r_st.max()) + 1 if len(r_st) else 0
    out = {"worker": np.full(n, -1, np.int64), "H": np.full(n, -1, np.int64),
           "data_start": np.full(n, -1, np.int64), "data_end": np.full(n, -1, np.int64),
           "lr_offset": np.full(n, -1, np.int64), "start_version": np.full(n, -1, np.int64),
           "t_start": np.full(n, np.nan), "t_arrive": np.full(n, np.nan),
           "arrive_version": np.full(n, -1, np.int64)}
    for key, col in (("worker", "worker"), ("H", "H"), ("data_start", "data_start"),
                     ("data_end", "data_end"), ("lr_offset", "lr_offset"),
                     ("start_version", "version"), ("t_start", "t")):
      out[key][r_st] = c[col][st]
    out["t_arrive"][c["round"][ar]] = c["t"][ar]
    out["arrive_version"][c["round"][ar]] = c["version"][ar]
    return out

  def summary(self) -> dict:
    """Everything a researcher asks first (see analysis.summarize)."""
    if self._summary is None:
      from halos_jax.schedule import analysis  # pylint: disable=g-import-not-at-top
      self._summary = analysis.summarize(self)
    return self._summary

  # -- canonical JSON Lines --------------------------------------------------------------------

  def header(self) -> dict:
    return {"format": JSONL_FORMAT, "version": JSONL_VERSION,
            "settings": self.settings.to_dict(), "env": self.env.to_dict(),
            "num_events": len(self)}

  def iter_jsonl(self):
    """The canonical JSONL lines (without newlines): a header, then one line per event.

    Event lines list kind, t, seq, then the integer fields that are not -1 (in Event field
    order), then rounds if non-empty. Floats use Python's shortest round-trip repr.
    """
    yield json.dumps(self.header(), sort_keys=True)
    c = self.columns
    n = len(self)
    ptr = self.rounds_ptr
    flat = self.rounds_flat
    for a in range(0, n, 65536):
      b = min(a + 65536, n)
      kinds = c["kind"][a:b]
      ts = c["t"][a:b].tolist()
      ints = {f: c[f][a:b] for f in INT_FIELDS}
      has_rounds = ptr[a + 1:b + 1] > ptr[a:b]
      lines = [""] * (b - a)
      for k in np.unique(kinds).tolist():
        sel = np.flatnonzero(kinds == k)
        used = {f: ints[f][sel] != -1 for f in INT_FIELDS}
        present = [f for f in INT_FIELDS if used[f].any()]
        if all(used[f].all() for f in present) and not has_rounds[sel].any():
          # The common case: every event of this kind uses the same fields -> one template.
          template = (f'{{"kind": "{KINDS[k]}", "t": %r, "seq": %d'
                      + "".join(f', "{f}": %d' for f in present) + "}")
          values = [ints[f][sel].tolist() for f in present]
          rows = zip([ts[i] for i in sel.tolist()], (sel + a).tolist(), *values)
          for i, row in zip(sel.tolist(), rows):
            lines[i] = template % row
        else:
          for i in sel.tolist():
            parts = [f'{{"kind": "{KINDS[k]}", "t": {ts[i]!r}, "seq": {a + i}']
            parts.extend(f'"{f}": {int(ints[f][i])}' for f in INT_FIELDS if ints[f][i] != -1)
            lo, hi = int(ptr[a + i]), int(ptr[a + i + 1])
            if hi > lo:
              parts.append('"rounds": [' + ", ".join(map(str, flat[lo:hi].tolist())) + "]")
            lines[i] = ", ".join(parts) + "}"
      yield from lines

  def sha256(self) -> str:
    """sha256 of the canonical JSONL (header with settings and environment, then events)."""
    if self._sha256 is None:
      h = hashlib.sha256()
      for line in self.iter_jsonl():
        h.update(line.encode())
        h.update(b"\n")
      self._sha256 = h.hexdigest()
    return self._sha256

  def write_jsonl(self, path) -> None:
    """Writes the canonical JSONL atomically (temporary file in the same folder + rename)."""
    path = Path(path)
    tmp = temporary_sibling(path)
    try:
      with tmp.open("x") as f:
        for line in self.iter_jsonl():
          f.write(line)
          f.write("\n")
      os.replace(tmp, path)
    finally:
      if tmp.exists():
        tmp.unlink()

  @classmethod
  def read_jsonl(cls, path) -> "Schedule":
    return read_jsonl(path)


def read_jsonl(path) -> Schedule:
  """Reads a schedule written by `Schedule.write_jsonl` (round trip: same events, same sha256).

  Raises:
    InvalidSchedule: not a file of this format.
  """
  # pylint: disable=g-import-not-at-top
  from halos_jax.schedule.environment import environment_from_dict
  from halos_jax.schedule.plan import make_plan
  from halos_jax.schedule.settings import ScheduleSettings
  path = Path(path)
  with path.open() as f:
    try:
      header = json.loads(f.readline())
    except json.JSONDecodeError as e:
      raise InvalidSchedule(f"{path}: the first line is not a JSON header: {e}") from None
    if not isinstance(header, dict) or header.get("format") != JSONL_FORMAT:
      raise InvalidSchedule(f"{path}: not a {JSONL_FORMAT} file (header {str(header)[:80]})")
    if header.get("version") != JSONL_VERSION:
      raise InvalidSchedule(f"{path}: format version {header.get('version')}, this code reads "
                            f"{JSONL_VERSION}")
    settings = ScheduleSettings(**header["settings"])
    env = environment_from_dict(header["env"])
    n = int(header["num_events"])
    cols = empty_columns(n)
    counts = np.zeros(n + 1, dtype=np.int64)
    flat = []
    i = -1
    for i, line in enumerate(f):
      if i >= n:
        raise InvalidSchedule(f"{path}: more events than the header's num_events={n}")
      d = json.loads(line)
      if d.get("seq") != i:
        raise InvalidSchedule(f"{path}: event line {i + 2} has seq {d.get('seq')}, expected {i}")
      cols["kind"][i] = KIND_CODE[d["kind"]]
      cols["t"][i] = d["t"]
      for key in INT_FIELDS:
        if key in d:
          cols[key][i] = d[key]
      rounds = d.get("rounds", ())
      counts[i + 1] = len(rounds)
      flat.extend(rounds)
    if i + 1 != n:
      raise InvalidSchedule(f"{path}: {i + 1} events, the header says {n}")
  return Schedule(settings, env, make_plan(env, settings), cols, np.cumsum(counts),
                  np.asarray(flat, dtype=np.int32))
