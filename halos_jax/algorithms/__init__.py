"""One module per algorithm, found by name: `config.algorithm` is a module of this package.

A module `halos_jax/algorithms/<name>.py` holds everything that is specific to its algorithm,
and nothing else in halos_jax knows its name (the big_vision way: `importlib`):

  SYNCHRONOUS        True: rounds end in a ring all-reduce and a `sync` event (zero staleness).
  REQUIRED_SETTINGS  scheduler settings it needs beyond the common ones (e.g. ('K', ...)).
  CONFIG_BLOCKS      {config block: optimizer kind} of its server optimizers; the kinds' field
                     rules are in halos_jax/validation.py (e.g. {'outer': 'outer_nesterov'}).
  EVALUATED_MODEL    what validation and params_sha256 report, in words.
  LABELS             words for summaries and plots: 'server_updates', 'server'.
  PAPER_SPEEDUP      the paper's claimed HALoS speed-up over it (a float), a note (a str), or
                     None; COMPARISON_REFERENCE: True for the algorithm whose speed-ups a
                     comparison reports.
  local_H(settings)  H as its rounds use it; rescale(settings): whether DynUpd applies.
  make_plan(env, settings)  its servers and durations (a schedule.Plan, from the network model).
  build(env, settings)  its whole schedule (a schedule.Schedule).
  server_rules(config, problem, num_workers, num_servers)  its servers' numerics at each event
                     (an `algorithms.base.ServerRules`; JAX is imported only here).

Importing a module imports no JAX: the scheduler reads these modules too. A new algorithm is
one module here plus its `configs/<name>.py` (docs/architecture.md has a worked example).
"""
from __future__ import annotations

import functools
import importlib
import pkgutil
import types


class UnknownAlgorithm(ValueError):
  """`config.algorithm` names no module of halos_jax.algorithms."""


@functools.cache
def names() -> tuple[str, ...]:
  """Every algorithm: the public modules of this package, sorted."""
  return tuple(sorted(m.name for m in pkgutil.iter_modules(__path__)
                      if not m.name.startswith("_") and m.name != "base"))


def get(name: str) -> types.ModuleType:
  """The module of algorithm `name`.

  Raises:
    UnknownAlgorithm: `name` is not one of `names()`.
  """
  known = names()
  if not isinstance(name, str) or name not in known:
    raise UnknownAlgorithm(f"algorithm must be one of {', '.join(known)}, got {name!r}")
  return importlib.import_module(f"{__name__}.{name}")


__all__ = ["UnknownAlgorithm", "get", "names"]
