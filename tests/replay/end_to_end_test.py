"""Every algorithm module, found by discovery, end to end on a tiny language model and on the
quadratic; determinism across modes and processes."""
import json
import subprocess
import sys

import numpy as np
import pytest

from halos_jax import algorithms
from halos_jax import train
from tiny_configs import ROOT, tiny_config


@pytest.mark.parametrize("algorithm", algorithms.names())
def test_runs_end_to_end_and_learns(algorithm, tiny_env, tmp_path):
  config = tiny_config(algorithm, tiny_env)
  summary = train.train_and_evaluate(config, str(tmp_path))
  assert summary["local_steps"] >= config.total_local_steps
  # Tokens are local steps x local_batch x seq_len (2 x 32 here).
  assert summary["tokens"] == summary["local_steps"] * 2 * 32
  val = [json.loads(l) for l in open(tmp_path / "metrics.jsonl") if '"val"' in l]
  assert val[0]["local_steps"] == 0 and val[-1]["local_steps"] == summary["local_steps"]
  # A byte-level model starts near ln(256) = 5.55 and must improve within 48 local steps.
  assert val[0]["val_loss"] == pytest.approx(np.log(256), abs=0.3)
  assert val[-1]["val_loss"] < val[0]["val_loss"] - 0.05
  for name in ("summary.json", "metrics.jsonl", "schedule.jsonl", "config.json"):
    assert (tmp_path / name).exists()
  assert (tmp_path / "final_model").is_dir()


@pytest.mark.parametrize("algorithm", algorithms.names())
def test_runs_end_to_end_on_the_quadratic(algorithm, tiny_env, tmp_path):
  config = tiny_config(algorithm, tiny_env, problem="quadratic")
  summary = train.train_and_evaluate(config, str(tmp_path))
  assert summary["local_steps"] >= config.total_local_steps
  val = [json.loads(l) for l in open(tmp_path / "metrics.jsonl") if '"val"' in l]
  # x0 = 0: loss 0.5 * sum_i h_i (0 - 1)^2 = 0.5 * sum(linspace(0.1, 1, 16)) = 0.5 * 8.8 = 4.4.
  assert val[0]["val_loss"] == pytest.approx(4.4, rel=1e-6)
  assert val[-1]["val_loss"] < 0.9 * val[0]["val_loss"]
  # Bytes and busy time per link (docs/schedule.md): the WAN links carried the exchanges.
  assert summary["links"]["bytes"] and summary["links"]["busy_ms"]
  assert set(summary["links"]["busy_ms"]) <= set(summary["links"]["bytes"])


def test_parallel_equals_sequential(tiny_env, tmp_path):
  """One device: the same program runs every round, one at a time or batched (bitwise)."""
  sha = {}
  for parallel in (True, False):
    config = tiny_config("halos", tiny_env, **{"replay.parallel": parallel})
    sha[parallel] = train.train_and_evaluate(config, str(tmp_path / str(parallel)))
  assert sha[True]["params_sha256"] == sha[False]["params_sha256"]
  assert sha[True]["final_val_loss"] == sha[False]["final_val_loss"]


def _run_cli(workdir, *overrides, env_path):
  cmd = [sys.executable, "-m", "experiments.train", "--config=configs/async_local_sgd.py:runlocal",
         f"--workdir={workdir}", f"--config.env={env_path}", "--config.replay.progress=False",
         "--config.replay.plots=False", *overrides]
  return subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, timeout=600)


def test_two_fresh_processes_give_the_same_bits(tiny_env, tmp_path):
  small = ["--config.total_local_steps=24", "--config.data.seq_len=32", "--config.local_batch=2",
           "--config.H=4", "--config.data.val_sequences=8", "--config.val_batch=8"]
  shas = []
  for i in range(2):
    proc = _run_cli(tmp_path / f"run{i}", *small, env_path=tiny_env)
    assert proc.returncode == 0, proc.stderr[-2000:]
    shas.append(json.load(open(tmp_path / f"run{i}" / "summary.json"))["params_sha256"])
  assert shas[0] == shas[1]


def test_misspelt_config_key_is_an_error(tmp_path):
  cmd = [sys.executable, "-m", "experiments.train", "--config=configs/halos.py:runlocal",
         f"--workdir={tmp_path}", "--config.alhpa=0.5"]
  proc = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, timeout=300)
  assert proc.returncode != 0
  assert "alhpa" in proc.stderr


def test_tuning_split_is_evaluated_next_to_validation(tiny_env, tmp_path):
  # data.tune_sequences > 0: every validation record also holds the loss on the tuning split,
  # and the summary its final value, equal to the final model's mean loss over
  # stream.tuning() computed here independently; the reported validation set is unchanged.
  import jax
  import orbax.checkpoint as ocp
  from halos_jax.replay.problem import make_problem
  config = tiny_config("halos", tiny_env, **{"data.tune_sequences": 8})
  summary = train.train_and_evaluate(config, str(tmp_path))
  val = [json.loads(l) for l in open(tmp_path / "metrics.jsonl") if '"val"' in l]
  assert all("tune_loss" in m for m in val)
  assert summary["final_tune_loss"] == val[-1]["tune_loss"]
  problem = make_problem(config)
  with ocp.StandardCheckpointer() as ck:
    params = ck.restore(str(tmp_path / "final_model"))
  loss = jax.jit(problem.loss)
  tuning, validation = problem.data.tuning(), problem.data.validation()
  assert tuning.shape == (8, 33) and validation.shape == (8, 33)
  assert float(loss(params, tuning)) == pytest.approx(summary["final_tune_loss"], rel=1e-6)
  assert float(loss(params, validation)) == pytest.approx(summary["final_val_loss"], rel=1e-6)
  assert summary["final_tune_loss"] != summary["final_val_loss"]
  # Without the split (the default) the records and the summary are as before.
  plain = train.train_and_evaluate(tiny_config("halos", tiny_env), str(tmp_path / "plain"))
  assert "final_tune_loss" not in plain
  assert not any("tune_loss" in l for l in open(tmp_path / "plain" / "metrics.jsonl"))
