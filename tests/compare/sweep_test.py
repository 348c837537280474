"""The paper-shaped study (configs/paper_shape.py): run directories, the tuning choice, claims
shared between processes, and the report, on hand-written runs with hand-derived numbers."""
import json
import os
import socket
import subprocess
import sys

import pytest

from halos_jax.compare import report
from halos_jax.compare import sweep as sweep_lib
from halos_jax.configs import paper_shape

HOUR = 3.6e6
SEED = sweep_lib.SEED


@pytest.fixture(scope="module")
def study():
  return paper_shape.get_config()


def test_directories_name_only_what_differs(study, tmp_path):
  w = str(tmp_path)
  def d(alg, *fields):
    return os.path.relpath(sweep_lib.run_dir(study, w, sweep_lib.RunSpec(alg, tuple(fields))), w)
  # The tuning grid's centre, the headline's seed 0 at default values and an ablation's
  # reference value are one run.
  assert d("halos", (SEED, 0), ("worker.max_lr", 1e-3)) == os.path.join("halos", "default")
  assert d("halos", (SEED, 0), ("K", 32), ("lps.eta", 0.2)) == os.path.join("halos", "default")
  assert d("halos", (SEED, 2), ("lps.eta", 0.4)) == os.path.join("halos", "lps.eta=0.4__seed=2")
  assert d("halos", ("env", "geo4")) == os.path.join("halos", "default")
  assert d("ddp", ("worker.max_lr", 5e-4)) == os.path.join("ddp", "worker.max_lr=0.0005")


def test_tuning_runs_are_the_grids(study):
  runs = sweep_lib.tuning_runs(study)
  # DDP: 3 worker max_lr points; the others 3 + 3 (server LR), at seed 0.
  assert len(runs) == 3 + 4 * 6
  assert all(r.value(SEED) == 0 for r in runs)
  halos = [r.fields[1] for r in runs if r.algorithm == "halos"]
  assert halos == [("worker.max_lr", 5e-4), ("worker.max_lr", 1e-3), ("worker.max_lr", 2e-3),
                   ("lps.eta", 0.1), ("lps.eta", 0.2), ("lps.eta", 0.4)]


def test_a_live_claim_is_respected_and_a_dead_one_taken_over(tmp_path):
  d = str(tmp_path / "alg" / "run")
  assert sweep_lib.claim(d)
  assert not sweep_lib.claim(d)  # this process holds it
  sweep_lib.release(d)
  dead = subprocess.Popen([sys.executable, "-c", "pass"])
  dead.wait()
  with open(d + ".claim", "w") as f:
    f.write(f"{socket.gethostname()} {dead.pid}\n")
  assert sweep_lib.claim(d)  # its process is gone: the run is taken over (and resumes)
  with open(d + ".claim") as f:
    assert f.read().split()[1] == str(os.getpid())


# ------------------------------------------------------------------------------------------------
# A whole study written by hand.
# ------------------------------------------------------------------------------------------------

LOSSES = (5.5, 2.4, 2.1, 1.9, 1.8)  # record k at k * unit hours: reaches target k at k * unit


def _write(directory, *, unit_h=1.0, losses=LOSSES, updates=10, tune=None, end_h=None):
  os.makedirs(directory, exist_ok=True)
  with open(os.path.join(directory, "metrics.jsonl"), "w") as f:
    for k, loss in enumerate(losses):
      f.write(json.dumps({"kind": "val", "t_ms": k * unit_h * HOUR, "val_loss": loss,
                          "local_steps": k}) + "\n")
  end = (end_h if end_h is not None else (len(losses) - 1) * unit_h) * HOUR
  with open(os.path.join(directory, "summary.json"), "w") as f:
    json.dump({"server_updates": updates, "simulated_time_ms": end,
               "final_val_loss": losses[-1], "final_tune_loss": tune or losses[-1] + 0.01}, f)
  with open(os.path.join(directory, "sweep.json"), "w") as f:
    json.dump({"commit": "abc", "machine": "test cpu"}, f)


# Final tuning losses by (algorithm, field, value); the lowest of each grid wins.
TUNE = {
    ("ddp", "worker.max_lr"): {5e-4: 2.3, 1e-3: 2.2, 2e-3: 2.1},
    ("diloco", "worker.max_lr"): {5e-4: 2.3, 1e-3: 2.0, 2e-3: 2.1},
    ("diloco", "outer.lr"): {0.35: 2.3, 0.7: 2.0, 1.4: 1.9},
    ("diloco_dynupd", "worker.max_lr"): {5e-4: 1.9, 1e-3: 2.0, 2e-3: None},  # None: diverged
    ("diloco_dynupd", "outer.lr"): {0.35: 2.3, 0.7: 2.0, 1.4: 2.1},
    ("async_local_sgd", "worker.max_lr"): {5e-4: 2.3, 1e-3: 2.0, 2e-3: 2.1},
    ("async_local_sgd", "ps.eta"): {0.025: 2.3, 0.05: 2.0, 0.1: 2.1},
    ("halos", "worker.max_lr"): {5e-4: 2.3, 1e-3: 2.0, 2e-3: 1.95},
    ("halos", "lps.eta"): {0.1: 2.3, 0.2: 2.0, 0.4: 1.9},
}
# Headline runs: unit hours per record, by algorithm and seed (HALoS 1 h: target 1.9 at 3 h).
UNIT = {"halos": (1.0, 1.0, 1.0), "diloco": (8.0, 8.0, 8.0), "diloco_dynupd": (4.0, 4.0, 4.0),
        "async_local_sgd": (2.0, 2.2, 1.8), "ddp": (10.0, 10.0, 10.0)}


@pytest.fixture(scope="module")
def written(study, tmp_path_factory):
  w = str(tmp_path_factory.mktemp("study"))
  for spec in sweep_lib.tuning_runs(study):
    field, value = spec.fields[1]
    d = sweep_lib.run_dir(study, w, spec)
    if os.path.exists(d):  # a grid's centre: the same run in both grids (loss 2.0 in both)
      continue
    loss = TUNE[(spec.algorithm, field)][value]
    if loss is None:
      os.makedirs(d)
      with open(os.path.join(d, sweep_lib.DIVERGED), "w") as f:
        json.dump({"error": "non-finite"}, f)
      with open(os.path.join(d, "sweep.json"), "w") as f:
        json.dump({"commit": "abc", "machine": "test cpu"}, f)
    else:
      _write(d, tune=loss)
  chosen = sweep_lib.choose(study, w)
  for spec in sweep_lib.seed_runs(study, chosen):
    d = sweep_lib.run_dir(study, w, spec)
    unit = UNIT[spec.algorithm][spec.value(SEED)]
    tune = None
    if os.path.exists(d):  # seed 0 at a tuning grid's point is that tuning run: keep its loss
      tune = json.load(open(os.path.join(d, "summary.json")))["final_tune_loss"]
    if spec.algorithm == "ddp":  # never reaches 1.9: its whole run (40 h) is the bound
      _write(d, unit_h=unit, losses=(5.5, 2.4, 2.1, 2.0), end_h=40.0, tune=tune)
    else:
      _write(d, unit_h=unit, losses=LOSSES[:-1] + (1.8 + 0.01 * spec.value(SEED),), tune=tune)
  finals = {("K", 8): 1.95, ("K", 16): 1.85, ("K", 64): 1.82,
            ("beta", (0.9, 0.9)): 1.83, ("beta", (0.9, 0.0)): 1.78, ("beta", (0.0, 0.5)): 1.9}
  for name, items in sweep_lib.ablation_runs(study, chosen).items():
    for value, spec in items:
      d = sweep_lib.run_dir(study, w, spec)
      if not os.path.exists(d):
        final = finals.get((name, tuple(value) if isinstance(value, tuple) else value), 1.85)
        _write(d, losses=LOSSES[:-1] + (final,))
  docs = tmp_path_factory.mktemp("docs")
  (docs / "results.md").write_text("# Results\n\nbefore\n")
  return w, chosen, str(docs)


def test_choice_is_the_lowest_tuning_loss_and_never_a_diverged_run(written):
  _, chosen, _ = written
  assert chosen == {
      "ddp": {"worker.max_lr": 2e-3},
      "diloco": {"worker.max_lr": 1e-3, "outer.lr": 1.4},
      "diloco_dynupd": {"worker.max_lr": 5e-4, "outer.lr": 0.7},
      "async_local_sgd": {"worker.max_lr": 1e-3, "ps.eta": 0.05},
      "halos": {"worker.max_lr": 2e-3, "lps.eta": 0.4},
  }


def test_report_numbers_by_hand(study, written):
  w, _, docs = written
  paths = report.write_report(study, w, docs)
  assert len(paths) == 2 + 4  # page, JSON, headline plot, 3 ablation plots
  result = json.load(open(os.path.join(docs, "results", "paper_shape.json")))
  # One entry per algorithm and seed, with the fields the issue names.
  assert [(r["algorithm"], r["seed"]) for r in result["runs"]] == [
      (a, s) for a in paper_shape.ALGORITHMS for s in (0, 1, 2)]
  halos0 = result["runs"][12]
  assert halos0["time_to_target_ms"] == {"2.4": HOUR, "2.1": 2 * HOUR, "1.9": 3 * HOUR,
                                         "1.8": 4 * HOUR}
  assert halos0["final_val_loss"] == 1.8 and halos0["server_updates"] == 10
  assert result["runs"][13]["time_to_target_ms"]["1.8"] is None  # seed 1 ends at 1.81
  s = result["speedups"]
  assert s["diloco"]["1.9"]["mean"] == pytest.approx(8.0) and s["diloco"]["1.9"]["std"] == 0
  # Async: 2.0, 2.2, 1.8 per seed: mean 2.0, sample std 0.2.
  assert s["async_local_sgd"]["1.9"]["mean"] == pytest.approx(2.0)
  assert s["async_local_sgd"]["1.9"]["std"] == pytest.approx(0.2)
  # DDP never reaches 1.9: 40 h / 3 h per seed, a lower bound.
  assert s["ddp"]["1.9"]["mean"] == pytest.approx(40 / 3)
  assert s["ddp"]["1.9"]["lower_bound"] and not s["ddp"]["2.1"]["lower_bound"]
  verdicts = {c["claim"]: c["verdict"] for c in result["claims"]}
  assert verdicts["HALoS up to 7.5x faster than DiLoCo"] == "reproduces"
  assert verdicts["HALoS faster than DDP"] == (
      "reproduces: faster on every seed; the paper gives no number for it alone "
      "(synchronous: up to 7.5x)")
  assert verdicts["HALoS up to 2.1x faster than Async Local-SGD"].startswith(
      "does not reproduce at this scale (smaller: 2.00x < 2.1x)")
  # HALoS ends at 1.80/1.81/1.82, DDP at 2.0: matches or exceeds it.
  assert verdicts["final model quality matching or exceeding DDP"] == "reproduces"
  assert verdicts["validation loss is highest at small K (the paper's Fig. 5)"] == "reproduces"
  assert verdicts["hierarchical momentum (beta_l 0.9, beta_g 0.5) converges best"] == (
      "does not reproduce at this scale (lowest: (0.9, 0.0))")
  # The ablations' reference values are the headline's seed-0 runs.
  k32 = [r for r in result["ablations"]["K"] if r["value"] == 32][0]
  assert k32["dir"] == halos0["dir"] == os.path.join("halos", "lps.eta=0.4__worker.max_lr=0.002")
  assert result["run_commits"] == ["abc"] and result["machines"] == ["test cpu"]


def test_report_rewrites_only_its_section(study, written):
  w, _, docs = written
  page = os.path.join(docs, "results.md")
  report.write_report(study, w, docs)
  with open(page, "a") as f:
    f.write("\nafter\n")
  report.write_report(study, w, docs)
  text = open(page).read()
  assert text.count(report.BEGIN) == 1 and text.count(report.END) == 1
  assert text.startswith("# Results\n\nbefore\n") and text.endswith("after\n")
  section = text.split(report.BEGIN)[1].split(report.END)[0]
  # Async Local-SGD's time to 1.9: records at 3 x (2.0, 2.2, 1.8) h: mean 6.000, std 0.600.
  # Final losses 1.80, 1.81, 1.82 (by seed): 1.8100 ± 0.0100; only seed 0 reaches 1.8.
  assert "| Async Local-SGD | 10 | 8.000 ± 0.800 | 1.8100 ± 0.0100 |" in section
  assert "| 8.000 (1/3) |" in section
  assert "6.000 ± 0.600" in section
  # DDP never reaches 1.9 or 1.8.
  assert "| DDP | 10 | 40.000 ± 0.000 | 2.0000 ± 0.0000 | 10.000 ± 0.000 | 20.000 ± 0.000 " \
         "| never | never |" in section
  assert "**0.002: 2.1000**" in section and "diverged" in section


def test_report_names_missing_runs(study, tmp_path):
  with pytest.raises(FileNotFoundError, match="tuning run"):
    report.write_report(study, str(tmp_path), str(tmp_path))


def test_grids_and_ablations_hold_the_papers_values(study):
  # Each grid's middle point and one value of each ablation are the algorithm's own config
  # value, so the tuning centre, the headline and the ablations share the paper's runs.
  for alg in study.algorithms:
    c = sweep_lib.base_config(study, alg)
    assert study.tuning.worker_lr[1] == c.worker.max_lr
    grid = sweep_lib.server_grid(study, alg)
    if grid:
      assert grid[1][1] == sweep_lib.default_value(c, grid[0])
  for name in study.ablations:
    a = study.ablations[name]
    for alg in a.algorithms:
      c = sweep_lib.base_config(study, alg)
      default = tuple(sweep_lib.default_value(c, f) for f in a.fields)
      assert default in [tuple(v) if isinstance(v, tuple) else (v,) for v in a.points]
  assert study.headline_target in study.targets


def test_cli_names_missing_runs_in_one_line(tmp_path):
  out = subprocess.run(
      [sys.executable, "-m", "experiments.paper_shape", f"--workdir={tmp_path}",
       "--stage=report", f"--docs={tmp_path}"],
      cwd=os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__)))),
      capture_output=True, text=True, timeout=300)
  assert out.returncode == 2
  assert out.stderr.startswith("error: 23 tuning run(s) not finished")
  assert "Traceback" not in out.stderr
  assert not os.path.exists(tmp_path / "results")  # nothing half-written


def test_a_claim_being_written_is_alive_for_a_minute(tmp_path):
  d = str(tmp_path / "alg" / "run")
  os.makedirs(tmp_path / "alg")
  open(d + ".claim", "w").close()  # created by O_EXCL, its owner not yet written
  assert not sweep_lib.claim(d)
  old = os.path.getmtime(d + ".claim") - 120
  os.utime(d + ".claim", (old, old))  # a garbled claim from long ago: taken over
  assert sweep_lib.claim(d)


def test_run_all_runs_each_once_and_records_divergence(study, tmp_path):
  from halos_jax.replay.nonfinite import NonFiniteError
  calls = []

  def train_fn(config, directory):
    calls.append((config.algorithm, config.worker.max_lr, config.seed, config.data.seed))
    if config.worker.max_lr == 2e-3:
      raise NonFiniteError("loss nan")
    _write(directory)

  specs = [sweep_lib.RunSpec("ddp", ((SEED, 1), ("worker.max_lr", lr))) for lr in (1e-3, 2e-3)]
  w = str(tmp_path)
  sweep_lib.run_all(study, w, specs + specs[:1], train_fn=train_fn, machine="m", log=lambda s: 0)
  assert calls == [("ddp", 1e-3, 1, 1), ("ddp", 2e-3, 1, 1)]  # seed sets both seeds
  first, second = (sweep_lib.run_dir(study, w, s) for s in specs)
  info = json.load(open(os.path.join(second, "sweep.json")))  # written before the run starts
  assert info["machine"] == "m" and info["commit"] and os.path.exists(first + "/summary.json")
  assert sweep_lib.diverged(second) == {"error": "loss nan"}
  assert not os.path.exists(second + ".claim")
  sweep_lib.run_all(study, w, specs, train_fn=train_fn, machine="m", log=lambda s: 0)
  assert len(calls) == 2  # finished and diverged runs are reused
