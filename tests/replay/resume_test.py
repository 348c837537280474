"""Kill a run with SIGKILL mid-way, resume it, and get the uninterrupted run's bits."""
import json
import os
import signal
import subprocess
import sys
import time

from tiny_configs import ROOT

ARGS = ["--config=configs/async_local_sgd.py:runlocal", "--config.replay.progress=False",
        "--config.replay.plots=False", "--config.total_local_steps=160",
        "--config.data.seq_len=32", "--config.local_batch=2", "--config.H=4",
        "--config.data.val_sequences=8", "--config.val_batch=8", "--config.val_interval=32",
        "--config.log_interval=16", "--config.checkpoint_every=4",
        "--config.checkpoint_every_s=0"]


def _cmd(workdir, env_path):
  return [sys.executable, "-m", "experiments.train", ARGS[0], f"--workdir={workdir}",
          f"--config.env={env_path}", *ARGS[1:]]


def _steps(workdir):
  d = os.path.join(workdir, "checkpoints")
  if not os.path.isdir(d):
    return []
  return sorted(int(n) for n in os.listdir(d) if n.isdigit())


def _metrics(workdir):
  out = []
  for line in open(os.path.join(workdir, "metrics.jsonl")):
    r = json.loads(line)
    r.pop("wall_s")
    out.append(r)
  return out


def test_sigkill_then_resume_gives_the_same_run(tiny_env, tmp_path):
  full, killed = str(tmp_path / "full"), str(tmp_path / "killed")
  proc = subprocess.run(_cmd(full, tiny_env), cwd=ROOT, capture_output=True, text=True,
                        timeout=600)
  assert proc.returncode == 0, proc.stderr[-3000:]
  total_steps = max(_steps(full))

  p = subprocess.Popen(_cmd(killed, tiny_env), cwd=ROOT, stdout=subprocess.DEVNULL,
                       stderr=subprocess.DEVNULL)
  deadline = time.time() + 300
  while time.time() < deadline and len(_steps(killed)) < 2 and p.poll() is None:
    time.sleep(0.05)
  p.send_signal(signal.SIGKILL)
  p.wait()
  steps_at_kill = _steps(killed)
  assert steps_at_kill and max(steps_at_kill) < total_steps, "the kill came too late"

  proc = subprocess.run(_cmd(killed, tiny_env), cwd=ROOT, capture_output=True, text=True,
                        timeout=600)
  assert proc.returncode == 0, proc.stderr[-3000:]
  assert "resuming from event" in proc.stdout
  a = json.load(open(os.path.join(full, "summary.json")))
  b = json.load(open(os.path.join(killed, "summary.json")))
  assert a["params_sha256"] == b["params_sha256"]
  assert a["final_val_loss"] == b["final_val_loss"]
  assert _metrics(full) == _metrics(killed)


def test_resume_with_a_different_config_is_refused(tiny_env, tmp_path):
  workdir = str(tmp_path / "w")
  proc = subprocess.run(_cmd(workdir, tiny_env), cwd=ROOT, capture_output=True, text=True,
                        timeout=600)
  assert proc.returncode == 0, proc.stderr[-3000:]
  before = {name: open(os.path.join(workdir, name), "rb").read()
            for name in ("config.json", "summary.json")}
  proc = subprocess.run(_cmd(workdir, tiny_env) + ["--config.ps.eta=0.07"], cwd=ROOT,
                        capture_output=True, text=True, timeout=600)
  assert proc.returncode == 2
  assert "different config" in proc.stderr
  assert "Traceback" not in proc.stderr
  # The refused run leaves the first run's outputs as they were.
  for name, content in before.items():
    assert open(os.path.join(workdir, name), "rb").read() == content, name
