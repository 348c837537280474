"""The entries of a comparison: one config per algorithm, or per value of an ablation.

Each entry's config is `configs/<algorithm>.py:get_config(arg)` (the package's own configs),
with the comparison's `overrides` applied.
"""
from __future__ import annotations

import ast
import importlib.util
import os
from typing import Any

import ml_collections

from halos_jax import algorithms
from halos_jax.configs import CONFIGS_DIR

# Ablations: the config fields each one sets (dotted paths), and how entries are named.
ABLATIONS = {
    "K": ("K",),
    "alpha": ("alpha",),
    "beta": ("lps.beta", "gps.beta"),  # (beta_l, beta_g)
    "H": ("H",),
    "codec": ("exchange.codec",),  # the worker -> server codec (docs/codecs.md)
    "global_codec": ("exchange.global_codec",),  # HALoS's LPS -> GPS codec
    "streaming": ("fragments", "overlap_steps"),  # Streaming DiLoCo's (P, tau)
}

_CONFIGS_DIR = str(CONFIGS_DIR)  # the algorithms' configs, shipped inside the package


def parse_overrides(text: str) -> list[tuple[str, Any]]:
  """'H=4,data.seq_len=32,replay.plots=False' -> [('H', 4), ('data.seq_len', 32), ...].

  Values are Python literals (ast.literal_eval); anything else is kept as a string. Values may
  not contain commas.
  """
  out = []
  for item in (text or "").split(","):
    item = item.strip()
    if not item:
      continue
    key, sep, raw = item.partition("=")
    key, raw = key.strip(), raw.strip()
    if not sep or not key:
      raise ValueError(f"overrides: {item!r} is not of the form key=value")
    try:
      value = ast.literal_eval(raw)
    except (ValueError, SyntaxError):
      value = raw
    out.append((key, value))
  return out


def _has_path(c: ml_collections.ConfigDict, path: str) -> bool:
  node = c
  for part in path.split("."):
    if not isinstance(node, ml_collections.ConfigDict) or part not in node:
      return False
    node = node[part]
  return True


def _get_path(c: ml_collections.ConfigDict, path: str) -> Any:
  node = c
  for part in path.split("."):
    node = node[part]
  return node


def _set_path(c: ml_collections.ConfigDict, path: str, value: Any, where: str) -> None:
  *parents, leaf = path.split(".")
  node = c
  for p in parents:
    node = node[p]
  old = node[leaf]
  if isinstance(old, int) and not isinstance(old, bool) and isinstance(value, float):
    if value != int(value):
      raise ValueError(f"{where}: {path}={value!r} must be an integer")
    value = int(value)
  try:
    node[leaf] = value
  except (TypeError, ValueError) as e:
    raise ValueError(f"{where}: cannot set {path}={value!r} ({e})") from None


def load_algorithm_config(algorithm: str, arg: str,
                          configs_dir: str = "") -> ml_collections.ConfigDict:
  """configs/<algorithm>.py:get_config(arg), as `experiments.train --config=...` would load it."""
  if algorithm not in algorithms.names():
    raise ValueError(
        f"algorithm {algorithm!r} unknown; allowed: {', '.join(algorithms.names())}")
  path = os.path.join(configs_dir or _CONFIGS_DIR, f"{algorithm}.py")
  if not os.path.exists(path):
    raise FileNotFoundError(f"config file {path} not found (set configs_dir)")
  spec = importlib.util.spec_from_file_location(f"_halos_config_{algorithm}", path)
  module = importlib.util.module_from_spec(spec)
  spec.loader.exec_module(module)
  return module.get_config(arg)


def _comparable(v: Any) -> Any:
  """Numbers as floats (1 == 1.0), anything else (a codec name) as it is."""
  return float(v) if isinstance(v, (int, float)) and not isinstance(v, bool) else v


def _fmt_value(v: Any) -> str:
  return "_".join(str(x) for x in v) if isinstance(v, (tuple, list)) else str(v)


def entry_configs(config: ml_collections.ConfigDict) -> dict[str, ml_collections.ConfigDict]:
  """{entry name: full run config} of a comparison config, overrides applied, in table order."""
  name = config.ablation
  entries: dict[str, ml_collections.ConfigDict] = {}
  if not name:
    algorithms = list(config.algorithms)
    if not algorithms:
      raise ValueError(f"algorithms: empty; allowed: {', '.join(algorithms.names())}")
    if len(set(algorithms)) != len(algorithms):
      raise ValueError(f"algorithms: duplicates in {algorithms}")
    for alg in algorithms:
      entries[alg] = load_algorithm_config(alg, config.arg, config.configs_dir)
  else:
    if name not in ABLATIONS:
      raise ValueError(f"ablation={name!r} unknown; allowed: {', '.join(ABLATIONS)}")
    values = list(config.ablation_values)
    if not values:
      raise ValueError(f"ablation_values: empty for ablation {name!r}")
    fields = ABLATIONS[name]
    alg = config.ablation_algorithm
    for value in values:
      parts = tuple(value) if isinstance(value, (tuple, list)) else (value,)
      if len(parts) != len(fields):
        raise ValueError(f"ablation_values: {value!r} must have {len(fields)} number(s) "
                         f"({', '.join(fields)}) for ablation {name!r}")
      c = load_algorithm_config(alg, config.arg, config.configs_dir)
      for field, part in zip(fields, parts):
        if not _has_path(c, field):
          raise ValueError(f"ablation {name!r}: {alg} has no field {field}")
        _set_path(c, field, part, f"ablation {name}")
      entry = f"{alg}_{name}{_fmt_value(value)}"
      if entry in entries:
        raise ValueError(f"ablation_values: duplicate value {value!r}")
      entries[entry] = c
  for key, value in parse_overrides(config.overrides):
    if name and key in ABLATIONS[name]:
      raise ValueError(f"overrides: {key} is the field that ablation {name!r} varies")
    hits = [c for c in entries.values() if _has_path(c, key)]
    if not hits:
      raise ValueError(f"overrides: no entry config has a field {key!r}")
    for c in hits:
      _set_path(c, key, value, "overrides")
  return entries


def reference_entry(config: ml_collections.ConfigDict, names: list[str]) -> str:
  """The entry whose speed-up over the others is reported."""
  if config.reference:
    if config.reference not in names:
      raise ValueError(f"reference={config.reference!r} is not one of the entries {names}")
    return config.reference
  if not config.ablation:
    refs = [n for n in names if algorithms.get(n).COMPARISON_REFERENCE]
    return refs[0] if refs else names[0]
  # Ablation: the entry with the algorithm's own default value, else the first.
  default = load_algorithm_config(config.ablation_algorithm, config.arg, config.configs_dir)
  fields = ABLATIONS[config.ablation]
  ref = tuple(_get_path(default, f) for f in fields if _has_path(default, f))
  for value, name in zip(config.ablation_values, names):
    parts = tuple(value) if isinstance(value, (tuple, list)) else (value,)
    if tuple(map(_comparable, parts)) == tuple(map(_comparable, ref)):
      return name
  return names[0]
