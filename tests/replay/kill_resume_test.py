"""Repeated SIGKILL at random moments, and SIGTERM / SIGINT: every resumed run ends with the
uninterrupted run's bits.

resume_test.py kills a language-model run once; here one chain of processes on the quadratic
(a checkpoint after every server update) is killed again and again, at seeded random moments:
every fourth kill lands anywhere in the first 2 s of the process's life (start-up, restore,
compile, the first saves), the others a random fraction of a checkpoint interval after a new
checkpoint appeared (so often mid-save). After each kill the newest checkpoint's bookkeeping
must equal the uninterrupted run's at the same step; the chain's final params_sha256 and metrics
must equal it. scripts/kill_resume_soak.sh runs a longer chain (HALOS_KILLS, HALOS_KILL_STEPS).
"""
import json
import os
import random
import signal
import subprocess
import sys
import time

import pytest

from resume_test import _metrics, _steps
from tiny_configs import ROOT

KILLS = int(os.environ.get("HALOS_KILLS", "20"))
STEPS = int(os.environ.get("HALOS_KILL_STEPS", "320"))
SEED = int(os.environ.get("HALOS_KILL_SEED", "0"))


def _cmd(workdir, env_path, *extra):
  return [sys.executable, "-m", "experiments.train",
          "--config=configs/async_local_sgd.py:quadratic", f"--workdir={workdir}",
          f"--config.env={env_path}", "--config.replay.progress=False",
          "--config.replay.plots=False", f"--config.total_local_steps={STEPS}", "--config.H=4",
          "--config.checkpoint_every=1", "--config.checkpoint_every_s=0", *extra]


def _meta(workdir, step):
  """A checkpoint's bookkeeping without wall-clock times."""
  def strip(x):
    if isinstance(x, dict):
      return {k: strip(v) for k, v in x.items() if k not in ("wall_s",)}
    if isinstance(x, list):
      return [strip(v) for v in x]
    return x
  path = os.path.join(workdir, "checkpoints", str(step), "meta", "metadata")
  return strip(json.load(open(path)))


@pytest.fixture(scope="module")
def reference(tiny_env, tmp_path_factory):
  """The uninterrupted run, every checkpoint kept (checkpoint_keep does not change results)."""
  workdir = str(tmp_path_factory.mktemp("uninterrupted"))
  t0 = time.time()
  proc = subprocess.run(_cmd(workdir, tiny_env, "--config.checkpoint_keep=100000"), cwd=ROOT,
                        capture_output=True, text=True, timeout=600)
  assert proc.returncode == 0, proc.stderr[-3000:]
  print(f"\n[kill] uninterrupted run: {time.time() - t0:.1f} s, {len(_steps(workdir))} "
        "checkpoints")
  summary = json.load(open(os.path.join(workdir, "summary.json")))
  return workdir, summary


def _wait_for_new_step(p, workdir, known, timeout=120.0):
  """Polls until a checkpoint step newer than `known` exists (or the process ended)."""
  deadline = time.time() + timeout
  while time.time() < deadline and p.poll() is None:
    steps = _steps(workdir)
    if steps and steps[-1] > known:
      return steps[-1]
    time.sleep(0.01)
  return None


def test_repeated_sigkill_at_random_moments_resumes_bitwise(tiny_env, tmp_path, reference):
  ref_dir, ref = reference
  workdir = str(tmp_path / "chain")
  rng = random.Random(SEED)
  kills, mismatches, early, cycles = 0, [], 0, 0
  t0 = time.time()
  while True:
    cycles += 1
    if kills >= KILLS:  # enough: this one finishes (no more checkpoints needed: resumable key)
      p = subprocess.Popen(_cmd(workdir, tiny_env, "--config.checkpoint_every=0"), cwd=ROOT,
                           stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
      _, err = p.communicate(timeout=600)
      assert p.returncode == 0, err[-3000:]
      break
    p = subprocess.Popen(_cmd(workdir, tiny_env), cwd=ROOT, stdout=subprocess.DEVNULL,
                         stderr=subprocess.PIPE, text=True)
    known = max(_steps(workdir), default=-1)
    if kills % 4 == 3:
      time.sleep(rng.uniform(0.0, 2.0))  # anywhere, start-up included
      early += 1
    elif _wait_for_new_step(p, workdir, known) is not None:
      time.sleep(rng.uniform(0.0, 0.15))  # about one checkpoint interval: often mid-save
    if p.poll() is not None:  # finished before the kill: the run is too short for KILLS
      _, err = p.communicate()
      pytest.fail(f"the run ended after only {kills} kills (rc {p.returncode}): lengthen "
                  f"HALOS_KILL_STEPS; {err[-2000:]}")
    p.send_signal(signal.SIGKILL)
    p.communicate()
    kills += 1
    steps = _steps(workdir)
    if steps and _meta(workdir, steps[-1]) != _meta(ref_dir, steps[-1]):
      mismatches.append(f"checkpoint {steps[-1]} after kill {kills}")
  got = json.load(open(os.path.join(workdir, "summary.json")))
  if got["params_sha256"] != ref["params_sha256"]:
    mismatches.append("final params_sha256")
  if _metrics(workdir) != _metrics(ref_dir):
    mismatches.append("metrics.jsonl")
  print(f"\n[kill] {kills} SIGKILLs survived ({early} at any moment, {kills - early} after a "
        f"new checkpoint), {cycles} processes, {len(mismatches)} mismatches, "
        f"{time.time() - t0:.1f} s")
  assert kills >= KILLS >= 20
  assert not mismatches, mismatches


def test_sigterm_and_sigint_save_then_resume_bitwise(tiny_env, tmp_path, reference):
  ref_dir, ref = reference
  workdir = str(tmp_path / "signals")
  known = -1
  for signum, status in ((signal.SIGTERM, 143), (signal.SIGINT, 130)):
    p = subprocess.Popen(_cmd(workdir, tiny_env), cwd=ROOT, stdout=subprocess.PIPE,
                         stderr=subprocess.PIPE, text=True)
    known = _wait_for_new_step(p, workdir, known)
    assert known is not None, "no checkpoint was written"
    p.send_signal(signum)
    out, err = p.communicate(timeout=120)
    assert p.returncode == status, (out[-2000:], err[-2000:])
    lines = [l for l in err.splitlines() if l.strip()]
    assert len(lines) == 1, err[-3000:]
    name = signal.Signals(signum).name
    assert lines[0].startswith(f"interrupted: {name}: checkpoint saved at event ")
    assert lines[0].endswith("; re-run the same command to resume")
    saved = int(lines[0].split(" at event ")[1].split()[0])
    assert saved == max(_steps(workdir)) and saved >= known
    if saved in _steps(ref_dir):  # the uninterrupted run saved there too (a counting event)
      assert _meta(workdir, saved) == _meta(ref_dir, saved)
    known = saved
  proc = subprocess.run(_cmd(workdir, tiny_env, "--config.checkpoint_every=0"), cwd=ROOT,
                        capture_output=True, text=True, timeout=600)
  assert proc.returncode == 0, proc.stderr[-3000:]
  assert f"resuming from event {known} of " in proc.stdout
  got = json.load(open(os.path.join(workdir, "summary.json")))
  assert got["params_sha256"] == ref["params_sha256"]
  assert _metrics(workdir) == _metrics(ref_dir)
