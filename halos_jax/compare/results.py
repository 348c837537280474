"""The comparison's numbers from finished runs: time to target, speed-ups, the table.

Definitions (time to target, speed-up, lower bounds) are in the package docstring
(halos_jax/compare/__init__.py).
"""
from __future__ import annotations

import json
import math
import os

from halos_jax import algorithms


def paper_claim(name: str) -> tuple[float | None, str]:
  """(claimed "up to" speed-up, note) of the paper's headline claims over algorithm `name`.

  From the algorithm module's PAPER_SPEEDUP: a number for the exact baseline the paper names
  (DiLoCo 7.5x, Async Local-SGD 2.1x), a note where it only claims one for its class.
  """
  claim = algorithms.get(name).PAPER_SPEEDUP
  if isinstance(claim, (int, float)):
    return float(claim), ""
  return None, claim or ""


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
  # The paper's claims are HALoS's: quoted only when the reference entry is that algorithm.
  claims = (mode == "algorithms"
            and algorithms.get(entries[reference]["algorithm"]).COMPARISON_REFERENCE)
  speedups = {}
  for n in names:
    if n == reference:
      continue
    pairs = [speedup(tr, tb, entries[n]["simulated_time_ms"])
             for tr, tb in zip(ref_times, entries[n]["time_to_target_ms"])]
    claim, note = paper_claim(n) if claims else (None, "")
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
    with_claims = result["mode"] == "algorithms" and any(
        s.get("paper_claim") or s.get("paper_note") for s in result["speedups"].values())
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
  from halos_jax.schedule import plots  # pylint: disable=g-import-not-at-top
  plt = plots.pyplot()

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
    plots.save_png(fig, path, dpi=80)
    paths.append(path)
  return paths
