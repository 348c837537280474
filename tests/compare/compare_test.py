"""The comparison harness: time to target, speed-ups, tables, and a whole tiny comparison."""
import importlib.util
import json
import os
import subprocess
import sys

import numpy as np
import pytest

from halos_jax import compare
from tests.replay.tiny_configs import TINY_ENV  # 2 regions x 2 workers

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


def _val(t_ms, loss, steps=0):
  return {"kind": "val", "t_ms": t_ms, "val_loss": loss, "local_steps": steps, "tokens": 0}


# A validation curve with train/update records in between (their losses must be ignored) and a
# non-monotone stretch (3.5 at 250 ms, then 3.6 at 400 ms).
METRICS = [
    _val(0.0, 5.0),
    {"kind": "train", "t_ms": 50.0, "loss": 1.0, "local_steps": 8},
    {"kind": "update", "t_ms": 60.0, "loss": 0.5, "val_loss": 0.1, "local_steps": 8},
    _val(100.0, 4.0),
    _val(250.0, 3.5),
    _val(400.0, 3.6),
    _val(500.0, 3.0),
]


@pytest.mark.parametrize("target, expected", [
    (6.0, 0.0),  # above the initial loss: reached at the first record
    (5.0, 0.0),  # equality counts
    (4.5, 100.0),  # no interpolation (linear would give 50 ms)
    (4.0, 100.0),
    (3.55, 250.0),  # first crossing, not the later 3.6 record
    (3.5, 250.0),
    (3.2, 500.0),
    (3.0, 500.0),
    (2.9, None),  # never reached (the 0.1 'update' record is not a validation)
])
def test_time_to_target_on_a_hand_made_curve(target, expected):
  assert compare.time_to_target(METRICS, target) == expected


def test_time_to_target_without_validation_records():
  assert compare.time_to_target([{"kind": "train", "t_ms": 1.0, "loss": 0.0}], 10.0) is None


def test_speedup_math():
  # Both reach: baseline / reference, the paper's 7.5x shape.
  assert compare.speedup(100.0, 750.0, 900.0) == (7.5, False)
  assert compare.speedup(400.0, 100.0, 900.0) == (0.25, False)  # reference slower
  # Baseline never reaches within its 900 ms run: at least 900 / 300 = 3x.
  assert compare.speedup(300.0, None, 900.0) == (3.0, True)
  assert compare.speedup(300.0, None, None) == (None, False)
  assert compare.speedup(None, 100.0, 900.0) == (None, False)  # reference never reaches
  assert compare.speedup(0.0, 100.0, 900.0) == (None, False)  # target at/above the initial loss


def test_auto_targets():
  # From 5.0 (excluded) to 3.0 (included) in 4 equal steps.
  assert compare.auto_targets(5.0, 3.0, 4) == [4.5, 4.0, 3.5, 3.0]
  # Rounded UP to 3 decimals: 5 + (2.9994 - 5) / 2 = 3.9997 -> 4.0; 2.9994 -> 3.0 (so the best
  # entry, at 2.9994, still reaches the last target).
  assert compare.auto_targets(5.0, 2.9994, 2) == [4.0, 3.0]
  with pytest.raises(ValueError, match="num_auto_targets"):
    compare.auto_targets(5.0, 3.0, 0)


def _summary(name, final, end_ms, steps=100):
  return {"algorithm": name, "final_val_loss": final, "simulated_time_ms": end_ms,
          "local_steps": steps, "tokens": steps * 10, "server_updates": 7, "wall_time_s": 1.5}


def test_summarize_and_format_table_by_hand():
  runs = {
      "diloco": ([_val(0.0, 5.0), _val(3.6e6, 4.0), _val(7.2e6, 3.5)],
                 _summary("diloco", 3.5, 7.2e6)),
      "async_local_sgd": ([_val(0.0, 5.0), _val(1.8e6, 4.2), _val(2.7e6, 3.9)],
                          _summary("async_local_sgd", 3.9, 2.7e6)),
      "halos": ([_val(0.0, 5.0), _val(0.9e6, 4.0), _val(1.8e6, 3.5)],
                _summary("halos", 3.5, 1.8e6)),
  }
  r = compare.summarize(runs, "halos", targets=[4.0, 3.5])
  assert r["targets"] == [4.0, 3.5] and not r["targets_auto"]
  assert r["entries"]["halos"]["time_to_target_ms"] == [0.9e6, 1.8e6]
  assert r["entries"]["async_local_sgd"]["time_to_target_ms"] == [2.7e6, None]
  # diloco: 3.6e6 / 0.9e6 = 4x, 7.2e6 / 1.8e6 = 4x.
  assert r["speedups"]["diloco"]["ratio"] == [4.0, 4.0]
  assert r["speedups"]["diloco"]["paper_claim"] == 7.5
  # async: 2.7e6 / 0.9e6 = 3x; never reaches 3.5 in its 2.7e6 ms run -> >= 2.7 / 1.8 = 1.5x.
  assert r["speedups"]["async_local_sgd"]["ratio"] == pytest.approx([3.0, 1.5])
  assert r["speedups"]["async_local_sgd"]["lower_bound"] == [False, True]
  assert r["speedups"]["async_local_sgd"]["paper_claim"] == 2.1
  assert "halos" not in r["speedups"]
  table = compare.format_table(r)
  assert "| halos | 0.250 | 0.500 | 3.5000 | 0.500 | 100 | 1,000 | 7 | 1.5 |" in table
  assert "| async_local_sgd | 0.750 | never |" in table
  assert "| async_local_sgd | 3.00x | ≥ 1.50x | up to 2.1x |" in table
  assert "| diloco | 4.00x | 4.00x | up to 7.5x |" in table
  # Auto targets: from halos' first loss 5.0 to the best final 3.5 in 2 steps -> 4.25, 3.5.
  r = compare.summarize(runs, "halos", num_auto_targets=2)
  assert r["targets"] == [4.25, 3.5] and r["targets_auto"]


def test_parse_overrides():
  assert compare.parse_overrides(" H=4, data.seq_len=32,replay.plots=False,env=/tmp/a.yaml,") == [
      ("H", 4), ("data.seq_len", 32), ("replay.plots", False), ("env", "/tmp/a.yaml")]
  assert compare.parse_overrides("") == []
  with pytest.raises(ValueError, match="key=value"):
    compare.parse_overrides("H4")


def _compare_config(arg):
  spec = importlib.util.spec_from_file_location("compare_cfg", os.path.join(ROOT, "configs",
                                                                             "compare.py"))
  module = importlib.util.module_from_spec(spec)
  spec.loader.exec_module(module)
  return module.get_config(arg)


def test_ablation_entries_set_the_fields():
  c = _compare_config("quadratic,ablate=beta")
  c.overrides = "K=4,lps.N=8"
  entries = compare.entry_configs(c)
  assert list(entries)[0] == "halos_beta0.9_0.5"
  for config, (bl, bg) in zip(entries.values(), c.ablation_values):
    assert (config.lps.beta, config.gps.beta) == (bl, bg)
    assert config.K == 4 and config.lps.N == 8 and config.problem == "quadratic"
  assert compare.reference_entry(c, list(entries)) == "halos_beta0.9_0.5"
  c = _compare_config("runlocal,ablate=K")
  names = list(compare.entry_configs(c))
  assert names == ["halos_K8", "halos_K16", "halos_K32", "halos_K64"]
  assert compare.reference_entry(c, names) == "halos_K32"  # configs/halos.py's K
  c.overrides = "K=4"  # would silently undo the ablation
  with pytest.raises(ValueError, match="ablation 'K' varies"):
    compare.entry_configs(c)
  c = _compare_config("runlocal,ablate=codec")
  c.ablation_algorithm = "async_local_sgd"
  entries = compare.entry_configs(c)
  assert list(entries) == ["async_local_sgd_codecnone", "async_local_sgd_codecbf16",
                           "async_local_sgd_codecint8", "async_local_sgd_codecint4",
                           "async_local_sgd_codectopk"]
  assert [e.exchange.codec for e in entries.values()] == list(c.ablation_values)
  assert compare.reference_entry(c, list(entries)) == "async_local_sgd_codecnone"


@pytest.mark.parametrize("field, value, match", [
    ("overrides", "KK=3", "no entry config has a field 'KK'"),
    ("overrides", "H=0.5", "must be an integer"),
    ("algorithms", ("halos", "sgd"), "unknown"),
    ("reference", "nobody", "not one of the entries"),
])
def test_bad_comparison_configs_are_errors(field, value, match, tmp_path):
  c = _compare_config("quadratic")
  c[field] = value
  with pytest.raises(ValueError, match=match):
    compare.run_comparison(c, str(tmp_path / "w"))
  assert not (tmp_path / "w").exists()  # nothing written


# --- The whole harness, through the command line -------------------------------------------------

TINY = ("H=4,K=2,workers_per_lps=2,local_batch=2,global_batch=8,total_local_steps=48,"
        "val_interval=8,log_interval=8,replay.progress=False,replay.plots=False,"
        "checkpoint_every_s=0.0")


def _run(*args):
  env = dict(os.environ)
  env.setdefault("JAX_COMPILATION_CACHE_DIR", os.path.join(ROOT, ".cache", "jax"))
  return subprocess.run([sys.executable, "-m", "experiments.compare", *args], cwd=ROOT,
                        capture_output=True, text=True, timeout=600, env=env)


def test_whole_tiny_comparison_matches_its_runs(tmp_path):
  env_path = tmp_path / "tiny2x2.yaml"
  env_path.write_text(TINY_ENV)
  workdir = tmp_path / "cmp"
  proc = _run("--config=configs/compare.py:quadratic", f"--workdir={workdir}",
              f"--config.overrides=env={env_path},{TINY}")
  assert proc.returncode == 0, proc.stderr[-3000:]
  for name in ("comparison.md", "comparison.json", "val_loss_vs_time.png",
               "val_loss_vs_tokens.png"):
    assert (workdir / name).stat().st_size > 0, name
  result = json.loads((workdir / "comparison.json").read_text())
  assert result["entry_order"] == ["ddp", "diloco", "diloco_dynupd", "async_local_sgd", "halos"]
  assert result["reference"] == "halos" and result["targets_auto"]

  runs = {}
  for name in result["entries"]:
    metrics = [json.loads(l) for l in open(workdir / name / "metrics.jsonl")]
    summary = json.loads((workdir / name / "summary.json").read_text())
    val = [(m["t_ms"], m["val_loss"]) for m in metrics if m["kind"] == "val"]
    runs[name] = (val, summary)
    # x0 = 0: loss = 0.5 * sum(linspace(0.1, 1, 16)) = 0.5 * 16 * 0.55 = 4.4 for every entry.
    assert val[0] == (0.0, pytest.approx(4.4))
    assert summary["local_steps"] >= 48
  best = min(s["final_val_loss"] for _, s in runs.values())
  # Auto targets recomputed: 4 steps from 4.4 to the best final loss, rounded up to 1e-3.
  expected = [np.ceil((4.4 + (best - 4.4) * i / 4) * 1000 - 1e-9) / 1000 for i in (1, 2, 3, 4)]
  assert result["targets"] == pytest.approx(expected)
  for name, (val, summary) in runs.items():
    e = result["entries"][name]
    for key in ("final_val_loss", "simulated_time_ms", "local_steps", "tokens",
                "server_updates"):
      assert e[key] == summary[key], (name, key)
    assert e["final_val_loss"] == val[-1][1]
    times = [min((t for t, l in val if l <= target), default=None)
             for target in result["targets"]]
    assert e["time_to_target_ms"] == times, name
  # The entry with the best final loss reaches every automatic target.
  best_name = min(runs, key=lambda n: runs[n][1]["final_val_loss"])
  assert None not in result["entries"][best_name]["time_to_target_ms"]
  ref = result["entries"]["halos"]["time_to_target_ms"]
  for name, s in result["speedups"].items():
    for i, (t_ref, t_b) in enumerate(zip(ref, result["entries"][name]["time_to_target_ms"])):
      if t_ref is None or t_ref == 0:
        assert s["ratio"][i] is None
      elif t_b is None:
        assert s["lower_bound"][i]
        assert s["ratio"][i] == pytest.approx(runs[name][1]["simulated_time_ms"] / t_ref)
      else:
        assert not s["lower_bound"][i]
        assert s["ratio"][i] == pytest.approx(t_b / t_ref)
  table = (workdir / "comparison.md").read_text()
  for name in result["entries"]:
    assert f"| {name} |" in table
  assert proc.stdout.count("| halos |") == 1  # the table is printed too

  # A re-run reuses every finished entry (resumed at their last event): the same numbers.
  proc = _run("--config=configs/compare.py:quadratic", f"--workdir={workdir}",
              f"--config.overrides=env={env_path},{TINY}")
  assert proc.returncode == 0, proc.stderr[-3000:]
  again = json.loads((workdir / "comparison.json").read_text())
  for name, e in again["entries"].items():
    assert e["time_to_target_ms"] == result["entries"][name]["time_to_target_ms"]
    assert e["final_val_loss"] == result["entries"][name]["final_val_loss"]


@pytest.mark.parametrize("args, match", [
    (["--config=configs/compare.py:quadratic", "--config.overides=H=3"],
     "unknown config key 'overides'"),
    (["--config=configs/compare.py:quadratic,ablate=gamma"], "ablate=gamma"),
    (["--config=configs/compare.py:quadratic", "--config.overrides=Hx=3"], "Hx"),
])
def test_bad_command_lines_exit_2_with_one_line(args, match, tmp_path):
  proc = _run(*args, f"--workdir={tmp_path / 'w'}")
  assert proc.returncode == 2
  lines = proc.stderr.strip().splitlines()
  assert len(lines) == 1 and lines[0].startswith("error: ") and match in lines[0], proc.stderr
  assert not (tmp_path / "w").exists()
