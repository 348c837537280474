"""Two processes x 4 CPU devices (JAX multi-controller, gloo) replay like one process x 8 devices.

Launches `python -m experiments.train` as subprocesses with their own XLA_FLAGS, so the test runs
in the plain pytest pass (it is not a `mesh` test). The environment has 8 workers, so the first
batch lays 8 rounds over the 8 devices, 4 of them in each process. A resumed 2-process run
(from an early checkpoint) must end with the same parameters too (HALOS_MULTIHOST_RESUME=1:
it costs another 2-process run).
"""
import json
import os
import shutil
import signal
import socket
import subprocess
import sys

import pytest

from tiny_configs import ROOT

# 2 regions x 4 workers, one LPS per region.
ENV8 = """\
num_regions: 2
network_bandwidths:
  - [100.0, 0.5]
  - [0.4, 100.0]
worker_speeds:
  - [1.0, 0.9, 0.8, 0.7]
  - [0.8, 0.6, 0.5, 0.3]
"""

OVERRIDES = {
    "H": 4, "K": 2, "workers_per_lps": 4, "local_batch": 2, "global_batch": 16,
    "total_local_steps": 48, "data.seq_len": 32, "data.val_sequences": 8, "val_batch": 8,
    "val_interval": 16, "log_interval": 16, "worker.t_warmup": 2, "worker.t_max": 12,
    "checkpoint_every": 0, "checkpoint_every_s": 0, "replay.plots": False,
    "replay.progress": False,
}
TIMEOUT_S = 600


def _command(env_path, workdir, **extra):
  flags = dict(OVERRIDES, env=env_path, **extra)
  return ([sys.executable, "-m", "experiments.train", "--config=configs/halos.py:runlocal",
           f"--workdir={workdir}"] + [f"--config.{k}={v}" for k, v in flags.items()])


def _env(devices):
  env = dict(os.environ)
  env["XLA_FLAGS"] = f"--xla_force_host_platform_device_count={devices}"
  env.pop("JAX_PLATFORMS", None)
  return env


def _free_port():
  with socket.socket() as s:
    s.bind(("127.0.0.1", 0))
    return s.getsockname()[1]


def _cores(i, n):
  """Process i of n gets an equal share of this machine's cores (XLA:CPU sizes each device's
  thread share from the cores it may use: equal shares per device in both layouts)."""
  cores = sorted(os.sched_getaffinity(0))
  if n == 1 or len(cores) % n:
    return None
  per = len(cores) // n
  return lambda: os.sched_setaffinity(0, cores[i * per:(i + 1) * per])


def _run(commands, devices):
  """Runs the commands together (each in its own process group); returns their outputs."""
  procs = [subprocess.Popen(c, cwd=ROOT, env=_env(devices), stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT, text=True, start_new_session=True,
                            preexec_fn=_cores(i, len(commands)))
           for i, c in enumerate(commands)]
  outs = []
  try:
    for p in procs:
      outs.append(p.communicate(timeout=TIMEOUT_S)[0])
  finally:
    for p in procs:
      if p.poll() is None:
        os.killpg(p.pid, signal.SIGKILL)
        p.wait()
  for p, out in zip(procs, outs):
    assert p.returncode == 0, out[-3000:]
  return outs


def _two_processes(env_path, workdir, **extra):
  address = f"127.0.0.1:{_free_port()}"
  return _run([_command(env_path, workdir, **extra) +
               [f"--coordinator_address={address}", "--num_processes=2", f"--process_id={i}"]
               for i in range(2)], devices=4)


def _summary(workdir):
  with open(os.path.join(workdir, "summary.json")) as f:
    return json.load(f)


def _val_losses(workdir):
  with open(os.path.join(workdir, "metrics.jsonl")) as f:
    return [(r["local_steps"], r["val_loss"]) for r in map(json.loads, f) if r["kind"] == "val"]


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
  """One process x 8 devices twice, then two processes x 4 devices (checkpointing as they
  go)."""
  tmp = tmp_path_factory.mktemp("multihost")
  env_path = tmp / "env8.yaml"
  env_path.write_text(ENV8)
  one, two, again = str(tmp / "one"), str(tmp / "two"), str(tmp / "again")
  _run([_command(env_path, one)], devices=8)
  _run([_command(env_path, again)], devices=8)
  outs = _two_processes(env_path, two, checkpoint_every=2, checkpoint_keep=50)
  return {"env": env_path, "one": one, "two": two, "again": again, "outs": outs}


def test_two_fresh_eight_device_processes_give_the_same_bits(runs):
  a, b = _summary(runs["one"]), _summary(runs["again"])
  assert a["devices"] == b["devices"] == 8
  assert a["params_sha256"] == b["params_sha256"]
  assert _val_losses(runs["one"]) == _val_losses(runs["again"])


def test_two_processes_equal_one_process_with_eight_devices(runs):
  a, b = _summary(runs["one"]), _summary(runs["two"])
  assert a["devices"] == b["devices"] == 8
  assert a["rounds_computed"] == b["rounds_computed"] > 8
  assert b["params_sha256"] == a["params_sha256"]
  assert _val_losses(runs["two"]) == _val_losses(runs["one"])
  # No full copy per process: each process holds only its share of the worker slots, and its
  # own copy of the servers (replay/layout.py), so two processes hold less than twice the state
  # of one, and no device holds it all.
  servers = b["state_bytes_total"] - a["state_bytes_total"]
  assert 0 < servers < a["state_bytes_total"] / 2
  assert b["state_bytes_max_device"] < a["state_bytes_total"] / 2
  # Process 0 reports and writes the outputs; checkpoints are written by both (each its shards
  # of the worker slots).
  out0, out1 = runs["outs"]
  assert "params_sha256" in out0 and "params_sha256" not in out1
  assert len(os.listdir(os.path.join(runs["two"], "checkpoints"))) >= 3


@pytest.mark.skipif(os.environ.get("HALOS_MULTIHOST_RESUME", "0") != "1",
                    reason="another 2-process run (~40 CPU s): HALOS_MULTIHOST_RESUME=1 runs it")
def test_two_processes_resume_from_an_early_checkpoint(runs):
  """Every process reads the checkpoint and continues: the same parameters at the end."""
  two = runs["two"]
  want = _summary(runs["one"])["params_sha256"]
  ckpt = os.path.join(two, "checkpoints")
  steps = sorted(int(s) for s in os.listdir(ckpt) if s.isdigit())
  assert len(steps) >= 3, steps
  for s in steps[1:]:
    shutil.rmtree(os.path.join(ckpt, str(s)))
  os.remove(os.path.join(two, "summary.json"))
  out0, _ = _two_processes(runs["env"], two, checkpoint_every=2, checkpoint_keep=50)
  assert f"resuming from event {steps[0]}" in out0
  assert _summary(two)["params_sha256"] == want
  assert _val_losses(two) == _val_losses(runs["one"])


if __name__ == "__main__":
  sys.exit(pytest.main([__file__, "-q"]))
