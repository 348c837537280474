"""The paper's comparison: several runs on one environment, a time-to-loss table and two plots.

`run_comparison(config, workdir)` runs every entry of a comparison config (configs/compare.py)
with `halos_jax.train.train_and_evaluate(entry_config, workdir/<entry name>)` -- so a re-run
resumes or reuses each entry -- and writes

  comparison.json        everything below, machine-readable (targets, per-entry numbers, speed-ups)
  comparison.md          the same as markdown tables (`format_table`)
  val_loss_vs_time.png   validation loss vs simulated time, all entries on one chart
  val_loss_vs_tokens.png validation loss vs tokens (local steps for problems without tokens)

An entry is either one algorithm (mode 'algorithms': ddp, diloco, diloco_dynupd, async_local_sgd,
halos, each from its own configs/<algorithm>.py:get_config(config.arg)) or one value of an
ablation of one algorithm (mode 'ablation': K, alpha, beta = the (beta_l, beta_g) pair of HALoS'
hierarchical momentum, or H).

Time to target: `time_to_target` returns the simulated time of the FIRST validation record whose
loss is <= the target, without interpolation. The evaluated model only changes at server updates
and is validated at some of them, so a crossing between two records would be a time at which no
evaluated model had that loss; the reported time is therefore exact at the resolution of
`val_interval` (and never earlier than the true first crossing of the evaluated points).

Speed-up of the reference entry (HALoS) over a baseline at a target: t_baseline / t_reference.
When the baseline never reaches the target within its run but the reference does, the ratio is a
lower bound, simulated_time(baseline) / t_reference, shown as '>= x'.
"""
from __future__ import annotations

import ast
import importlib.util
import json
import math
import os
from typing import Any

import ml_collections

from halos_jax import algorithms
from halos_jax.configs import CONFIGS_DIR
from halos_jax.replay import metrics as metrics_lib


def paper_claim(name: str) -> tuple[float | None, str]:
  """(claimed "up to" speed-up, note) of the paper's headline claims over algorithm `name`.

  From the algorithm module's PAPER_SPEEDUP: a number for the exact baseline the paper names
  (DiLoCo 7.5x, Async Local-SGD 2.1x), a note where it only claims one for its class.
  """
  claim = algorithms.get(name).PAPER_SPEEDUP
  if isinstance(claim, (int, float)):
    return float(claim), ""
  return None, claim or ""

# Ablations: the config fields each one sets (dotted paths), and how entries are named.
ABLATIONS = {
    "K": ("K",),
    "alpha": ("alpha",),
    "beta": ("lps.beta", "gps.beta"),  # (beta_l, beta_g)
    "H": ("H",),
}

_CONFIGS_DIR = str(CONFIGS_DIR)  # the algorithms' configs, shipped inside the package


# --- Small pure pieces -------------------------------------------------------------------------

def validation_records(metrics: list[dict]) -> list[dict]:
  """The 'val' records of a metrics list (metrics.jsonl order)."""
  return [m for m in metrics if m.get("kind") == "val"]


def time_to_target(metrics: list[dict], target: float) -> float | None:
  """Simulated ms at which the validation loss first reaches <= target; None if it never does.

  No interpolation: the t_ms of the first 'val' record (in list order) with val_loss <= target.

  Args:
    metrics: records as in metrics.jsonl; only those with kind 'val' (t_ms, val_loss) are read.
    target: validation loss to reach.
  """
  for m in validation_records(metrics):
    if m["val_loss"] <= target:
      return float(m["t_ms"])
  return None


def speedup(t_reference: float | None, t_baseline: float | None,
            baseline_end_ms: float | None = None) -> tuple[float | None, bool]:
  """(ratio, is_lower_bound) of the reference over a baseline at one target.

  ratio = t_baseline / t_reference when both reached the target. When only the reference did, the
  baseline's whole run (baseline_end_ms) gives a lower bound: (baseline_end_ms / t_reference,
  True). Otherwise (None, False).
  """
  if t_reference is None:
    return None, False
  if t_reference <= 0:  # reached before any training (target above the initial loss)
    return None, False
  if t_baseline is not None:
    return t_baseline / t_reference, False
  if baseline_end_ms is not None:
    return baseline_end_ms / t_reference, True
  return None, False


def auto_targets(first_loss: float, best_final_loss: float, n: int) -> list[float]:
  """n targets evenly spaced from the first loss (excluded) to the best final loss (included).

  Each is rounded UP to 3 decimals (so the best entry still reaches the last one).
  """
  if n < 1:
    raise ValueError(f"num_auto_targets={n}: must be >= 1")
  out = []
  for i in range(1, n + 1):
    x = first_loss + (best_final_loss - first_loss) * i / n
    out.append(math.ceil(x * 1000 - 1e-9) / 1000)
  return out


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
    if tuple(float(p) for p in parts) == tuple(float(r) for r in ref):
      return name
  return names[0]


# --- The comparison from finished runs ---------------------------------------------------------

def read_run(run_dir: str) -> tuple[list[dict], dict]:
  """(metrics.jsonl records, summary.json) of one finished run directory."""
  with open(os.path.join(run_dir, "metrics.jsonl")) as f:
    metrics = [json.loads(line) for line in f if line.strip()]
  with open(os.path.join(run_dir, "summary.json")) as f:
    summary = json.load(f)
  return metrics, summary


def summarize(runs: dict[str, tuple[list[dict], dict]], reference: str,
              targets: list[float] | tuple = (), num_auto_targets: int = 4,
              mode: str = "algorithms", ablation: dict | None = None) -> dict:
  """The comparison dict (what comparison.json holds) from each entry's (metrics, summary)."""
  if reference not in runs:
    raise ValueError(f"reference {reference!r} has no run")
  names = list(runs)
  vals = {n: validation_records(m) for n, (m, _) in runs.items()}
  for n, v in vals.items():
    if not v:
      raise ValueError(f"entry {n!r}: no validation records in its metrics")
  targets_auto = not targets
  if targets_auto:
    first = vals[reference][0]["val_loss"]
    best = min(s["final_val_loss"] for _, s in runs.values())
    targets = auto_targets(first, best, num_auto_targets)
  targets = [float(t) for t in targets]

  entries = {}
  for n, (m, s) in runs.items():
    entries[n] = {
        "algorithm": s["algorithm"],
        "final_val_loss": s["final_val_loss"],
        "first_val_loss": vals[n][0]["val_loss"],
        "simulated_time_ms": s["simulated_time_ms"],
        "local_steps": s["local_steps"],
        "tokens": s["tokens"],
        "server_updates": s["server_updates"],
        "wall_time_s": s["wall_time_s"],
        "time_to_target_ms": [time_to_target(m, t) for t in targets],
    }
  ref_times = entries[reference]["time_to_target_ms"]
  speedups = {}
  for n in names:
    if n == reference:
      continue
    pairs = [speedup(tr, tb, entries[n]["simulated_time_ms"])
             for tr, tb in zip(ref_times, entries[n]["time_to_target_ms"])]
    claim, note = paper_claim(n) if mode == "algorithms" else (None, "")
    speedups[n] = {
        "ratio": [r for r, _ in pairs],
        "lower_bound": [lb for _, lb in pairs],
        "paper_claim": claim,
        "paper_note": note,
    }
  return {
      "entry_order": names,  # table order (JSON objects are written with sorted keys)
      "mode": mode,
      "ablation": ablation,
      "reference": reference,
      "targets": targets,
      "targets_auto": targets_auto,
      "entries": entries,
      "speedups": speedups,
  }


# --- Output ------------------------------------------------------------------------------------

def _h(ms: float | None) -> str:
  return "never" if ms is None else f"{ms / 3.6e6:.3f}"


def _ratio(r: float | None, lower: bool) -> str:
  if r is None:
    return "—"
  return f"≥ {r:.2f}x" if lower else f"{r:.2f}x"


def format_table(result: dict) -> str:
  """Markdown: one row per entry (time to each target in simulated hours, final loss, counts),
  then the reference entry's speed-up over every other entry at each target."""
  targets = result["targets"]
  head = ([f"t(loss ≤ {t:.3f}) h" for t in targets]
          + ["final val loss", "simulated time h", "local steps", "tokens", "server updates",
             "wall time s"])
  lines = ["| entry | " + " | ".join(head) + " |", "|" + " --- |" * (len(head) + 1)]
  order = result.get("entry_order") or list(result["entries"])
  for n in order:
    e = result["entries"][n]
    cells = ([_h(t) for t in e["time_to_target_ms"]]
             + [f"{e['final_val_loss']:.4f}", _h(e["simulated_time_ms"]),
                f"{e['local_steps']:,}", f"{e['tokens']:,}", f"{e['server_updates']:,}",
                f"{e['wall_time_s']:.1f}"])
    lines.append(f"| {n} | " + " | ".join(cells) + " |")
  lines.append("")
  ref = result["reference"]
  if result["speedups"]:
    head = [f"loss ≤ {t:.3f}" for t in targets]
    with_claims = result["mode"] == "algorithms"
    if with_claims:
      head.append("paper (headline)")
    lines.append(f"Speed-up of {ref} (time to target, baseline / {ref}):")
    lines.append("")
    lines.append("| over | " + " | ".join(head) + " |")
    lines.append("|" + " --- |" * (len(head) + 1))
    for n in (n for n in order if n in result["speedups"]):
      s = result["speedups"][n]
      cells = [_ratio(r, lb) for r, lb in zip(s["ratio"], s["lower_bound"])]
      if with_claims:
        claim = s.get("paper_claim")
        cells.append(f"up to {claim}x" if claim else (f"({s['paper_note']})" if s["paper_note"]
                                                       else "—"))
      lines.append(f"| {n} | " + " | ".join(cells) + " |")
    lines.append("")
    lines.append("'never': the loss was not reached within the run; '≥': the baseline never "
                 "reached it, so its whole run length gives a lower bound; '—': undefined "
                 f"({ref} did not reach it). Times are those of the first validation record at or "
                 "below the target (no interpolation).")
  return "\n".join(lines) + "\n"


def plot_comparison(runs: dict[str, tuple[list[dict], dict]], targets: list[float],
                    out_prefix: str, title: str) -> list[str]:
  """Validation loss vs simulated time (h) and vs tokens, every entry on one chart each."""
  import matplotlib  # pylint: disable=g-import-not-at-top
  matplotlib.use("Agg")
  import matplotlib.pyplot as plt  # pylint: disable=g-import-not-at-top

  any_tokens = any(m.get("tokens", 0) for ms, _ in runs.values() for m in validation_records(ms))
  x_token = ("tokens", "tokens") if any_tokens else ("local_steps", "local steps")
  paths = []
  for key, label, scale, name in (("t_ms", "simulated time (h)", 1 / 3.6e6, "time"),
                                  (x_token[0], x_token[1], 1.0, "tokens")):
    fig, ax = plt.subplots(figsize=(6.4, 4))
    for n, (ms, _) in runs.items():
      val = validation_records(ms)
      ax.plot([m[key] * scale for m in val], [m["val_loss"] for m in val], marker="o", ms=2.5,
              lw=1.2, label=n, drawstyle="steps-post")  # the evaluated model is piecewise constant
    for t in targets:
      ax.axhline(t, color="grey", lw=0.6, ls=":")
    positive = [m[key] * scale for ms, _ in runs.values() for m in validation_records(ms)
                if m[key] > 0]
    if name == "time" and positive and max(positive) > 20 * min(positive):
      # Runs differ by orders of magnitude in simulated time (DDP vs asynchronous ones): a
      # logarithmic axis beyond the first evaluation, linear below it (so t = 0 is shown).
      ax.set_xscale("symlog", linthresh=min(positive))
      ax.set_xlim(left=0)
      label += ", log scale beyond the first evaluation"
    ax.set_xlabel(label)
    ax.set_ylabel("validation loss")
    ax.set_title(title)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    fig.tight_layout()
    path = f"{out_prefix}_vs_{name}.png"
    tmp = path + ".tmp.png"
    fig.savefig(tmp, dpi=80)
    plt.close(fig)
    os.replace(tmp, path)
    paths.append(path)
  return paths


def validate_config(config: ml_collections.ConfigDict) -> None:
  """Checks the comparison-level fields (entry-level ones are checked by each run)."""
  for t in config.targets:
    if isinstance(t, bool) or not isinstance(t, (int, float)) or not math.isfinite(t):
      raise ValueError(f"targets: {t!r} is not a finite number")
  if int(config.num_auto_targets) < 1:
    raise ValueError(f"num_auto_targets={config.num_auto_targets}: must be >= 1")


def run_comparison(config: ml_collections.ConfigDict, workdir: str) -> dict:
  """Runs (or resumes) every entry, then writes comparison.{md,json} and two plots in workdir.

  Args:
    config: a comparison config (configs/compare.py:get_config).
    workdir: output directory; entry `name` runs in workdir/name.

  Returns:
    The dict written to comparison.json.
  """
  from halos_jax import config_lib  # pylint: disable=g-import-not-at-top
  from halos_jax import schedule as schedule_lib  # pylint: disable=g-import-not-at-top
  from halos_jax import train  # pylint: disable=g-import-not-at-top

  validate_config(config)
  entries = entry_configs(config)
  names = list(entries)
  reference = reference_entry(config, names)
  for n, c in entries.items():  # every entry's environment and schedule, before any run
    try:
      schedule_lib.schedule_from_config(config_lib.resolve(c))
    except (ValueError, FileNotFoundError) as e:
      raise type(e)(f"entry {n!r}: {e}") from None
  os.makedirs(workdir, exist_ok=True)
  runs = {}
  for n, c in entries.items():
    run_dir = os.path.join(workdir, n)
    print(f"[compare] {n}: {run_dir}", flush=True)
    train.train_and_evaluate(c, run_dir)
    runs[n] = read_run(run_dir)
  mode = "ablation" if config.ablation else "algorithms"
  ablation = None
  if config.ablation:
    ablation = {"name": config.ablation, "algorithm": config.ablation_algorithm,
                "fields": list(ABLATIONS[config.ablation]),
                "values": [list(v) if isinstance(v, (tuple, list)) else v
                           for v in config.ablation_values]}
  result = summarize(runs, reference, list(config.targets), int(config.num_auto_targets),
                     mode=mode, ablation=ablation)
  env = next(iter(entries.values())).env
  result["config"] = config.to_dict()
  result["env"] = env
  files = {"json": "comparison.json", "markdown": "comparison.md"}
  if config.plots:
    title = (f"ablation {config.ablation} ({config.ablation_algorithm}, {env})"
             if config.ablation else f"{config.arg}, {env}")
    paths = plot_comparison(runs, result["targets"], os.path.join(workdir, "val_loss"), title)
    files["plots"] = [os.path.basename(p) for p in paths]
  result["files"] = files
  metrics_lib.write_json(os.path.join(workdir, "comparison.json"), result)
  metrics_lib.write_atomic(os.path.join(workdir, "comparison.md"), format_table(result))
  return result
