"""The paper-shaped study's results page, from its stored runs (configs/paper_shape.py).

`write_report(sweep, workdir, docs)` reads the finished runs of `halos_jax.compare.sweep` and
writes

  docs/results/paper_shape.json          everything below, machine-readable; its "runs" list has
                                         one entry per algorithm and seed of the headline table
  docs/results/paper_shape_vs_time.png   validation loss vs simulated time: the mean over seeds,
                                         a band from the lowest to the highest seed
  docs/results/paper_shape_<ablation>.png
  docs/results.md                        the section between the paper_shape markers (the rest of
                                         the page is left as it is)

Statistics: mean and sample standard deviation (ddof 1) over seeds. A time to target is taken
over the seeds that reached it (the table says how many did); a speed-up over a baseline is the
per-seed ratio t_baseline / t_HALoS of the same seed (same initialisation and data order), then
its mean and standard deviation; a seed where the baseline never reaches the target gives a
lower bound (its whole run), counted as such.

Verdicts on the paper's claims (docs/algorithms.md section 6) are mechanical: a speed-up claim
("up to X") reproduces when the mean speed-up at the headline target is at least X, one without a
number for that baseline (HALoS faster) when every seed's speed-up exceeds 1; the quality
claim when HALoS's mean final loss is at most DDP's plus the larger of their two standard
deviations; the ablation claims when the ordering holds on seed 0.
"""
from __future__ import annotations

import datetime
import json
import os
import statistics
from typing import Any

from halos_jax.compare import sweep as sweep_lib
from halos_jax.compare.results import read_run, time_to_target, validation_records
from halos_jax.replay import metrics as metrics_lib

BEGIN = "<!-- paper_shape:begin (written by python -m experiments.paper_shape --stage=report) -->"
END = "<!-- paper_shape:end -->"


def display_name(sweep, algorithm: str) -> str:
  """The algorithm's name in tables (the study's display_names)."""
  return sweep.display_names.get(algorithm, algorithm)


# ------------------------------------------------------------------------------------------------
# Numbers.
# ------------------------------------------------------------------------------------------------


def mean_std(xs: list[float]) -> tuple[float | None, float | None]:
  """(mean, sample std) of xs; std None for fewer than 2 values; (None, None) when empty."""
  xs = [float(x) for x in xs]
  if not xs:
    return None, None
  return statistics.fmean(xs), (statistics.stdev(xs) if len(xs) > 1 else None)


def run_record(spec: sweep_lib.RunSpec, directory: str, targets) -> dict:
  """One finished run as the JSON holds it (a diverged run: final losses None)."""
  info = {"algorithm": spec.algorithm, "seed": int(spec.value(sweep_lib.SEED, 0)),
          "fields": {k: v for k, v in spec.fields if k != sweep_lib.SEED},
          "dir": directory}
  if sweep_lib.diverged(directory):
    info.update(diverged=True, server_updates=None, simulated_time_ms=None, final_val_loss=None,
                final_tune_loss=None, time_to_target_ms={_key(t): None for t in targets})
    return info
  metrics, summary = read_run(directory)
  info.update(
      diverged=False,
      server_updates=int(summary["server_updates"]),
      simulated_time_ms=float(summary["simulated_time_ms"]),
      final_val_loss=float(summary["final_val_loss"]),
      final_tune_loss=summary.get("final_tune_loss"),
      time_to_target_ms={_key(t): time_to_target(metrics, t) for t in targets},
      wall_time_s=summary.get("wall_time_s"))
  return info


def _key(target: float) -> str:
  return f"{float(target):g}"


def paired_speedups(reference: list[dict], baseline: list[dict], target: float) -> list[dict]:
  """Per seed: {"seed", "ratio", "lower_bound"}; seeds where HALoS missed the target left out."""
  by_seed = {r["seed"]: r for r in baseline}
  out = []
  for r in reference:
    b = by_seed.get(r["seed"])
    t_ref = r["time_to_target_ms"][_key(target)]
    if b is None or t_ref is None or t_ref <= 0:
      continue
    t_b = b["time_to_target_ms"][_key(target)]
    if t_b is not None:
      out.append({"seed": r["seed"], "ratio": t_b / t_ref, "lower_bound": False})
    elif b["simulated_time_ms"] is not None:
      out.append({"seed": r["seed"], "ratio": b["simulated_time_ms"] / t_ref,
                  "lower_bound": True})
  return out


def collect(sweep, workdir: str) -> dict:
  """Every number of the page, from the stored runs (raises naming a missing run)."""
  targets = [float(t) for t in sweep.targets]
  missing = []

  def record(spec):
    d = sweep_lib.run_dir(sweep, workdir, spec)
    if not sweep_lib.finished(d):
      missing.append(d)
      return None
    return run_record(spec, d, targets)

  tuning = [record(s) for s in sweep_lib.tuning_runs(sweep)]
  missing = list(dict.fromkeys(missing))  # a grid's centre is in both grids: one run
  if missing:
    raise FileNotFoundError(f"{len(missing)} tuning run(s) not finished: {', '.join(missing)} "
                            "(run python -m experiments.paper_shape --stage=tune)")
  chosen = sweep_lib.choose(sweep, workdir)
  runs = [record(s) for s in sweep_lib.seed_runs(sweep, chosen)]
  ablations = {}
  for name, items in sweep_lib.ablation_runs(sweep, chosen).items():
    ablations[name] = [dict(record(s) or {}, value=list(v) if isinstance(v, (tuple, list)) else v)
                       for v, s in items]
  missing = list(dict.fromkeys(missing))  # a run shared by several stages: named once
  if missing:
    raise FileNotFoundError(f"{len(missing)} run(s) not finished: {', '.join(missing)} (run "
                            "python -m experiments.paper_shape)")
  reference = sweep.reference
  headline = float(sweep.headline_target)
  by_alg = _by_algorithm(sweep, runs)
  speedups = {}
  for a in sweep.algorithms:
    if a == reference:
      continue
    speedups[a] = {}
    for t in targets:
      pairs = paired_speedups(by_alg[reference], by_alg[a], t)
      m, s = mean_std([p["ratio"] for p in pairs])
      speedups[a][_key(t)] = {"per_seed": pairs, "mean": m, "std": s,
                              "lower_bound": any(p["lower_bound"] for p in pairs)}
  commits = sorted({_sweep_info(r["dir"]).get("commit", "unknown")
                    for r in tuning + runs + [x for v in ablations.values() for x in v]})
  machines = sorted({_sweep_info(r["dir"]).get("machine", "unknown")
                     for r in tuning + runs + [x for v in ablations.values() for x in v]})
  result = {
      "targets": targets, "headline_target": headline, "reference": reference,
      "seeds": [int(s) for s in sweep.seeds], "chosen": chosen,
      "run_commits": commits, "machines": machines,
      "tuning": tuning, "runs": runs, "speedups": speedups, "ablations": ablations,
  }
  result["claims"] = claims(sweep, result)
  return result


def _sweep_info(directory: str) -> dict:
  try:
    with open(os.path.join(directory, "sweep.json")) as f:
      return json.load(f)
  except (OSError, ValueError):
    return {}


def _by_algorithm(sweep, runs: list[dict]) -> dict[str, list[dict]]:
  """The runs of each algorithm of the study, in table order."""
  return {a: [r for r in runs if r["algorithm"] == a] for a in sweep.algorithms}


def claims(sweep, result: dict) -> list[dict]:
  """The paper's claims (docs/algorithms.md 6) against this study: claim, measured, verdict."""
  from halos_jax import algorithms  # pylint: disable=g-import-not-at-top
  out = []
  ref = result["reference"]
  key = _key(result["headline_target"])
  by_alg = _by_algorithm(sweep, result["runs"])
  for a, per_target in result["speedups"].items():
    claim = getattr(algorithms.get(a), "PAPER_SPEEDUP", None)
    s = per_target[key]
    if s["mean"] is None:
      verdict, measured = "not measurable (HALoS never reached the target)", "-"
    else:
      measured = _pm(s["mean"], s["std"], "x") + (" (a lower bound)" if s["lower_bound"] else "")
      if isinstance(claim, (int, float)):
        verdict = ("reproduces" if s["mean"] >= claim else
                   f"does not reproduce at this scale (smaller: {s['mean']:.2f}x < {claim}x)")
      else:  # the paper names no number for this baseline alone: is HALoS faster on every seed?
        every = all(p["ratio"] > 1 for p in s["per_seed"])
        verdict = ("reproduces: faster on every seed" if every else
                   "does not reproduce at this scale (not faster on every seed)")
        if claim:
          verdict += f"; the paper gives no number for it alone ({claim})"
    who, over = display_name(sweep, ref), display_name(sweep, a)
    text = (f"{who} up to {claim}x faster than {over}" if isinstance(claim, (int, float))
            else f"{who} faster than {over}")
    out.append({"claim": text, "measured": f"{measured} to loss {key}", "verdict": verdict})
  # Final quality: HALoS matches or exceeds fully synchronous training.
  baseline = sweep.quality_baseline
  h = mean_std([r["final_val_loss"] for r in by_alg[ref] if r["final_val_loss"] is not None])
  d = mean_std([r["final_val_loss"] for r in by_alg[baseline] if r["final_val_loss"] is not None])
  if h[0] is not None and d[0] is not None:
    slack = max(x for x in (h[1], d[1], 0.0) if x is not None)
    ok = h[0] <= d[0] + slack
    out.append({
        "claim": f"final model quality matching or exceeding {display_name(sweep, baseline)}",
        "measured": f"final val loss HALoS {_pm(*h)}, {display_name(sweep, baseline)} {_pm(*d)}",
        "verdict": ("reproduces" if ok else
                    f"does not reproduce at this scale (HALoS {h[0] - d[0]:+.4f} above)")})
  # Hierarchical momentum: (0.9, 0.5) alone has the lowest final loss of the beta ablation.
  rows = [r for r in result["ablations"].get("beta", []) if r.get("final_val_loss") is not None]
  if rows:
    best = min(r["final_val_loss"] for r in rows)
    winners = [tuple(r["value"]) for r in rows if r["final_val_loss"] == best]
    verdict = ("reproduces" if winners == [(0.9, 0.5)] else
               f"does not reproduce at this scale (lowest: {', '.join(map(str, winners))})")
    out.append({"claim": "hierarchical momentum (beta_l 0.9, beta_g 0.5) converges best",
                "measured": "final val loss " + ", ".join(
                    f"{tuple(r['value'])}: {r['final_val_loss']:.4f}" for r in rows) + " (seed 0)",
                "verdict": verdict})
  # The paper's Fig. 5: the smallest K alone has the highest final loss.
  rows = [r for r in result["ablations"].get("K", []) if r.get("final_val_loss") is not None]
  if rows:
    worst = max(r["final_val_loss"] for r in rows)
    losers = [r["value"] for r in rows if r["final_val_loss"] == worst]
    small = min(r["value"] for r in rows)
    out.append({"claim": "validation loss is highest at small K (the paper's Fig. 5)",
                "measured": "final val loss " + ", ".join(
                    f"K {r['value']}: {r['final_val_loss']:.4f}" for r in rows) + " (seed 0)",
                "verdict": "reproduces" if losers == [small] else
                f"does not reproduce at this scale (highest at K {', '.join(map(str, losers))})"})
  return out


# ------------------------------------------------------------------------------------------------
# Formatting.
# ------------------------------------------------------------------------------------------------


def _pm(mean, std, unit: str = "", digits: int = 4) -> str:
  if mean is None:
    return "-"
  if unit == "x":
    return f"{mean:.2f}x" + (f" ± {std:.2f}" if std is not None else "")
  if unit == "h":
    return f"{mean:.3f}" + (f" ± {std:.3f}" if std is not None else "")
  return f"{mean:.{digits}f}" + (f" ± {std:.{digits}f}" if std is not None else "")


def _hours(ms_list: list[float | None], n: int) -> str:
  reached = [x / 3.6e6 for x in ms_list if x is not None]
  if not reached:
    return "never"
  text = _pm(*mean_std(reached), unit="h")
  return text if len(reached) == n else f"{text} ({len(reached)}/{n})"


def _fmt_value(v: Any) -> str:
  return "(" + ", ".join(str(x) for x in v) + ")" if isinstance(v, (list, tuple)) else str(v)


def markdown(sweep, result: dict, plots: dict[str, str], report_commit: str) -> str:
  targets = result["targets"]
  ref = result["reference"]
  n = len(result["seeds"])
  key = _key(result["headline_target"])
  by_alg = _by_algorithm(sweep, result["runs"])
  base = sweep_lib.base_config(sweep, ref)
  lines = [
      "## The paper's round structure: tuned, 3 seeds, ablations (issue 17)", "",
      "```", "python -m experiments.paper_shape --workdir=runs/paper_shape   # runs, then this "
      "section", "python -m experiments.paper_shape --workdir=runs/paper_shape --stage=report",
      "```", "",
      "Generated from the stored runs by `halos_jax/compare/report.py` (definitions in its "
      "docstring); the study is configs/paper_shape.py. Each run is an algorithm's `paper_shape` "
      "config (config_lib.shrink_to_paper_shape): everything the scheduler sees is the paper's "
      "(geo4, each algorithm's H, K, alpha and momenta, Pythia-70M step time and messages, "
      "98,304 local steps: 6,144 DDP steps, 192 DiLoCo rounds, 303 DynUpd rounds, 4,875 Async "
      "updates, 396 GPS updates; the LR schedule over the paper's 6,144 global iterations); the "
      "computed model is `micro` (byte-level, 2 layers x 64, 132,864 parameters) on 64-token "
      "sequences of the embedded corpus, 2 per local step.", "",
      f"- Runs made by commit(s) {', '.join(result['run_commits'])}; page written by "
      f"{report_commit} on {datetime.date.today().isoformat()}.",
      f"- Machine(s): {'; '.join(result['machines'])}.",
      f"- Targets (fixed in configs/paper_shape.py before the runs): "
      f"{', '.join(_key(t) for t in targets)}; headline {key}.",
      f"- Seeds {', '.join(str(s) for s in result['seeds'])} (model initialisation and data "
      "order); mean ± sample std over them.",
      f"- Validation every {base.val_interval:,} of {base.total_local_steps:,} local steps, on "
      f"{base.data.val_sequences} held-out sequences: a time to target is resolved to "
      f"1/{base.total_local_steps // base.val_interval} of its run's simulated time.", "",
      "### Tuning (seed 0, final loss on the held-out tuning split, never the reported "
      "validation set)", "",
      "Each algorithm's worker max_lr over its grid at the default server learning rate, and its "
      "server learning rate over its grid at the default max_lr; the lowest tuning loss of each "
      "grid is chosen (bold).", "",
      "| algorithm | field | " + " | ".join(f"point {i + 1}" for i in range(3)) + " | chosen |",
      "| --- | --- | ---: | ---: | ---: | ---: |"]
  for a in sweep.algorithms:
    rows = [r for r in result["tuning"] if r["algorithm"] == a]
    fields = list(dict.fromkeys(f for r in rows for f in r["fields"]))
    for f in fields:
      cells = []
      for r in rows:
        if set(r["fields"]) != {f}:
          continue
        v = r["fields"][f]
        loss = "diverged" if r["diverged"] else f"{r['final_tune_loss']:.4f}"
        cell = f"{v:g}: {loss}"
        cells.append(f"**{cell}**" if result["chosen"][a].get(f) == v else cell)
      lines.append(f"| {display_name(sweep, a)} | {f} | " + " | ".join(cells) +
                   f" | {result['chosen'][a][f]:g} |")
  lines += ["", f"### Headline: the five algorithms at their chosen learning rates, {n} seeds",
            "", "| algorithm | server updates | simulated time h | final val loss | " +
            " | ".join(f"t(loss <= {_key(t)}) h" for t in targets) + " |",
            "| --- | ---: | ---: | ---: | " + " | ".join("---:" for _ in targets) + " |"]
  for a in sweep.algorithms:
    rs = [r for r in by_alg[a] if not r["diverged"]]
    upd = sorted({r["server_updates"] for r in rs})
    sim = mean_std([r["simulated_time_ms"] / 3.6e6 for r in rs])
    lines.append(
        f"| {display_name(sweep, a)} | {', '.join(f'{u:,}' for u in upd)} | "
        f"{_pm(*sim, unit='h')} | "
        f"{_pm(*mean_std([r['final_val_loss'] for r in rs]))} | " +
        " | ".join(_hours([r["time_to_target_ms"][_key(t)] for r in rs], n) for t in targets) +
        " |" + ("" if len(rs) == n else f" ({n - len(rs)} diverged)"))
  lines += ["", "(k/n): only k of the n seeds reached the target; the time is their mean.", "",
            "HALoS's speed-up over each baseline, per seed t_baseline / t_HALoS, mean ± std "
            "(range):", "",
            "| over | " + " | ".join(f"to {_key(t)}" for t in targets) + " |",
            "| --- | " + " | ".join("---:" for _ in targets) + " |"]
  for a, per in result["speedups"].items():
    cells = []
    for t in targets:
      s = per[_key(t)]
      if s["mean"] is None:
        cells.append("-")
        continue
      ratios = [p["ratio"] for p in s["per_seed"]]
      cell = f"{_pm(s['mean'], s['std'], 'x')} ({min(ratios):.2f}-{max(ratios):.2f})"
      cells.append((">= " if s["lower_bound"] else "") + cell)
    lines.append(f"| {display_name(sweep, a)} | " + " | ".join(cells) + " |")
  lines += ["", "'>=': for at least one seed the baseline never reached the target; its whole "
            "run stands in (a lower bound).", "",
            f"![Validation loss vs simulated time, mean over seeds with a min-max band]"
            f"(results/{os.path.basename(plots['headline'])})", "",
            "### The paper's claims at this scale", "",
            "| claim | measured | verdict |", "| --- | --- | --- |"]
  for c in result["claims"]:
    lines.append(f"| {c['claim']} | {c['measured']} | {c['verdict']} |")
  for name, rows in result["ablations"].items():
    a = sweep.ablations[name]
    lines += ["", f"### Ablation: {a.title} (seed 0, chosen learning rates)", "",
              "| algorithm | value | server updates | simulated time h | final val loss | " +
              " | ".join(f"t(loss <= {_key(t)}) h" for t in targets) + " |",
              "| --- | --- | ---: | ---: | ---: | " + " | ".join("---:" for _ in targets) + " |"]
    for r in rows:
      if r["diverged"]:
        lines.append(f"| {display_name(sweep, r['algorithm'])} | {_fmt_value(r['value'])} | "
                     "diverged |")
        continue
      lines.append(
          f"| {display_name(sweep, r['algorithm'])} | {_fmt_value(r['value'])} | "
          f"{r['server_updates']:,} | {r['simulated_time_ms'] / 3.6e6:.3f} | "
          f"{r['final_val_loss']:.4f} | " +
          " | ".join(_hours([r["time_to_target_ms"][_key(t)]], 1) for t in targets) + " |")
    others = [x for x in a.algorithms if x != ref]
    if ref in a.algorithms and others:  # the reference's speed-up over the others, per value
      lines += ["", "HALoS's speed-up t_other / t_HALoS per value (seed 0):", "",
                "| over | value | " + " | ".join(f"to {_key(t)}" for t in targets) + " |",
                "| --- | --- | " + " | ".join("---:" for _ in targets) + " |"]
      for other in others:
        for v in a.points:
          v = list(v) if isinstance(v, (tuple, list)) else v
          mine = [r for r in rows if r["algorithm"] == ref and r["value"] == v]
          theirs = [r for r in rows if r["algorithm"] == other and r["value"] == v]
          cells = []
          for t in targets:
            pairs = paired_speedups(mine, theirs, t)
            cells.append("-" if not pairs else
                         (">= " if pairs[0]["lower_bound"] else "") + f"{pairs[0]['ratio']:.2f}x")
          lines.append(f"| {display_name(sweep, other)} | {_fmt_value(v)} | " +
                       " | ".join(cells) + " |")
    if name in plots:
      lines += ["", f"![{a.title}](results/{os.path.basename(plots[name])})"]
  return "\n".join(lines) + "\n"


# ------------------------------------------------------------------------------------------------
# Plots.
# ------------------------------------------------------------------------------------------------


def _curves(directory: str) -> tuple[list[float], list[float]]:
  val = validation_records(read_run(directory)[0])
  return [m["t_ms"] / 3.6e6 for m in val], [m["val_loss"] for m in val]


def plot_bands(groups: dict[str, list[str]], targets, path: str, title: str) -> str:
  """Per group (label -> run dirs): the mean curve and a min-max band when the runs share their
  evaluation times (the schedule does not depend on the seed), else each run's curve."""
  from halos_jax.schedule import plots  # pylint: disable=g-import-not-at-top
  plt = plots.pyplot()
  fig, ax = plt.subplots(figsize=(7, 4.2))
  positive, lowest = [], []
  for label, dirs in groups.items():
    curves = [_curves(d) for d in dirs]
    lowest += [min(c[1]) for c in curves if c[1]]
    times = curves[0][0]
    if all(c[0] == times for c in curves):
      losses = list(zip(*[c[1] for c in curves]))
      mean = [statistics.fmean(x) for x in losses]
      line, = ax.plot(times, mean, lw=1.3, label=label, drawstyle="steps-post")
      if len(curves) > 1:
        ax.fill_between(times, [min(x) for x in losses], [max(x) for x in losses],
                        color=line.get_color(), alpha=0.25, step="post", lw=0)
    else:
      for i, (t, l) in enumerate(curves):
        ax.plot(t, l, lw=1, label=label if i == 0 else None, drawstyle="steps-post")
    positive += [t for c in curves for t in c[0] if t > 0]
  for t in targets:
    ax.axhline(t, color="grey", lw=0.6, ls=":")
  if targets and lowest:  # the targets' region, not the untrained start (ln 256 = 5.55 for bytes)
    ax.set_ylim(min(min(lowest), min(targets)) - 0.1, max(targets) + 1.0)
  xlabel = "simulated time (h)"
  if positive and max(positive) > 20 * min(positive):
    ax.set_xscale("symlog", linthresh=min(positive))
    ax.set_xlim(left=0)
    xlabel += ", log scale beyond the first evaluation"
  ax.set_xlabel(xlabel)
  ax.set_ylabel("validation loss")
  ax.set_title(title)
  ax.grid(alpha=0.3)
  ax.legend(fontsize=8)
  fig.tight_layout()
  plots.save_png(fig, path, dpi=80)
  return path


def write_report(sweep, workdir: str, docs: str) -> list[str]:
  """Writes the JSON, the plots and the page's section; returns the paths written."""
  result = collect(sweep, workdir)
  report_commit = sweep_lib.code_commit()
  result["report_commit"] = report_commit
  out_dir = os.path.join(docs, "results")
  os.makedirs(out_dir, exist_ok=True)
  plots = {}
  groups = {display_name(sweep, a): [r["dir"] for r in result["runs"]
                              if r["algorithm"] == a and not r["diverged"]]
            for a in sweep.algorithms}
  plots["headline"] = plot_bands(
      {k: v for k, v in groups.items() if v}, result["targets"],
      os.path.join(out_dir, "paper_shape_vs_time.png"),
      f"paper-shaped, geo4: mean of {len(result['seeds'])} seeds, min-max band")
  for name, rows in result["ablations"].items():
    g = {}
    for r in rows:
      if not r["diverged"]:
        g[f"{display_name(sweep, r['algorithm'])} {_fmt_value(r['value'])}"] = [r["dir"]]
    plots[name] = plot_bands(g, result["targets"],
                             os.path.join(out_dir, f"paper_shape_{name}.png"),
                             f"paper-shaped ablation: {sweep.ablations[name].title} (seed 0)")
  section = markdown(sweep, result, plots, report_commit)
  page = os.path.join(docs, "results.md")
  text = open(page).read() if os.path.exists(page) else "# Results\n"
  block = f"{BEGIN}\n{section}{END}"
  if BEGIN in text and END in text:
    head, rest = text.split(BEGIN, 1)
    text = head + block + rest.split(END, 1)[1]
  else:
    text = text.rstrip("\n") + "\n\n" + block + "\n"
  for r in result["runs"] + result["tuning"] + [x for v in result["ablations"].values()
                                                 for x in v]:
    r["dir"] = os.path.relpath(r["dir"], workdir)  # the JSON names runs inside WORKDIR
  json_path = os.path.join(out_dir, "paper_shape.json")
  metrics_lib.write_json(json_path, result)
  metrics_lib.write_atomic(page, text)
  return [page, json_path] + list(plots.values())
