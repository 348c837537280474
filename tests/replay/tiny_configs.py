"""Small configs for whole-run replay tests (seconds each)."""
import importlib.util
import os

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

# 2 regions x 2 workers; asymmetric WAN so both directions matter.
TINY_ENV = """\
num_regions: 2
network_bandwidths:
  - [100.0, 0.5]
  - [0.4, 100.0]
worker_speeds:
  - [1.0, 0.5]
  - [0.8, 0.3]
"""


def load_config(algorithm: str, arg: str = "runlocal"):
  """configs/<algorithm>.py:get_config(arg), as experiments.train would load it."""
  spec = importlib.util.spec_from_file_location(
      algorithm, os.path.join(ROOT, "configs", f"{algorithm}.py"))
  module = importlib.util.module_from_spec(spec)
  spec.loader.exec_module(module)
  return module.get_config(arg)


def tiny_config(algorithm: str, env_path: str, *, problem: str = "lm", **overrides):
  """A seconds-long run: 2 x 2 workers, short sequences, a few dozen local steps."""
  c = load_config(algorithm, "runlocal")
  c.env = env_path
  c.problem = problem
  c.H = 4 if algorithm != "ddp" else 1
  c.K = 2
  c.workers_per_lps = 2
  if algorithm == "streaming_diloco":  # P = 2 fragments of the tiny model: S = H / 2 = 2 steps
    c.overlap_steps = 1
  c.local_batch = 2
  c.global_batch = 8
  c.total_local_steps = 48
  c.data.seq_len = 32
  c.data.val_sequences = 8
  c.val_batch = 8
  c.val_interval = 16
  c.log_interval = 8
  c.worker.t_warmup = 2
  c.worker.t_max = 12
  c.checkpoint_every = 0
  c.checkpoint_every_s = 0.0
  c.replay.progress = False
  c.replay.plots = False
  for k, v in overrides.items():
    node = c
    *parents, leaf = k.split(".")
    for p in parents:
      node = node[p]
    node[leaf] = v
  return c
