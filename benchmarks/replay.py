r"""Replay throughput: parallel vs sequential replay vs a bare training loop (the compute bound).

Prints simulated tokens per wall second of a 16-worker run (default HALoS runlocal: tiny model,
embedded corpus, geo4 timing; `--arg=paper_shape`: the micro model of the paper-shaped
comparison) replayed in parallel and sequentially, and of a bare jitted loop that does the same
number of local steps on one model; ratios against the bare loop. All three run in this
process, after a warm-up of each (compilation excluded).

  .venv/bin/python benchmarks/replay.py [--steps=256] [--arg=paper_shape] [--algorithm=halos]
  XLA_FLAGS=--xla_force_host_platform_device_count=8 .venv/bin/python benchmarks/replay.py
  .venv/bin/python benchmarks/replay.py --arg=paper_shape --steps=98304 --nosequential
"""
import importlib.util
import os
import shutil
import sys
import tempfile
import time

from absl import app
from absl import flags
from absl import logging
import jax
import jax.numpy as jnp
import optax

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)

from halos_jax import config_lib  # noqa: E402  pylint: disable=g-import-not-at-top
from halos_jax import train  # noqa: E402  pylint: disable=g-import-not-at-top
from halos_jax.replay.problem import make_problem  # noqa: E402
from halos_jax.runtime import cpu_line  # noqa: E402

_STEPS = flags.DEFINE_integer("steps", 256, "local steps of each replayed run")
_ARG = flags.DEFINE_enum("arg", "runlocal", ["runlocal", "paper_shape"],
                         "the config argument of the replayed run")
_ALGORITHM = flags.DEFINE_string("algorithm", "halos", "configs/<algorithm>.py")
_SEQUENTIAL = flags.DEFINE_bool("sequential", True, "also time the sequential replay (skip it "
                                "for long runs: --steps=98304 --nosequential is a full "
                                "paper-shaped run)")


def _config(parallel, steps):
  name = _ALGORITHM.value
  spec = importlib.util.spec_from_file_location(name, os.path.join(ROOT, f"configs/{name}.py"))
  module = importlib.util.module_from_spec(spec)
  spec.loader.exec_module(module)
  c = module.get_config(_ARG.value)
  c.total_local_steps = steps
  c.checkpoint_every = 0
  c.replay.parallel = parallel
  c.replay.progress = False
  c.replay.plots = False
  c.val_interval = 10 ** 9  # validation only at the start and the end
  return c


def _replay(parallel, steps):
  workdir = tempfile.mkdtemp()
  try:
    t = time.perf_counter()
    s = train.train_and_evaluate(_config(parallel, steps), workdir)
    return time.perf_counter() - t, s
  finally:
    shutil.rmtree(workdir)


def _bare_loop(steps):
  """The same number of AdamW local steps on one model, one jitted scan of 8 steps per call."""
  config = config_lib.resolve(_config(True, steps))
  problem = make_problem(config)
  params = problem.init_params()
  opt = problem.worker_optimizer
  state = opt.init(params)
  n, seq = config.local_batch, problem.data.block(0, 1).shape[1]
  h = 8

  @jax.jit
  def run(params, state, batches, lrs):
    def step(carry, x):
      p, s = carry
      batch, lr = x
      g = jax.grad(problem.loss)(p, batch)
      u, s = opt.update(g, s, p, learning_rate=lr)
      return (optax.apply_updates(p, u), s), None
    return jax.lax.scan(step, (params, state), (batches, lrs))[0]

  lrs = jnp.full((h,), 1e-3)
  blocks = [problem.data.block(i * h * n, (i + 1) * h * n).reshape(h, n, seq)
            for i in range(steps // h)]
  jax.block_until_ready(run(params, state, blocks[0], lrs))  # warm-up
  t = time.perf_counter()
  for b in blocks:
    params, state = run(params, state, b, lrs)
  jax.block_until_ready(params)
  return time.perf_counter() - t, len(blocks) * h * n * (seq - 1)


def main(argv):
  del argv
  logging.set_verbosity(logging.WARNING)  # no per-checkpoint INFO lines from orbax
  # Each run builds fresh jitted functions; the persistent cache keeps compilation (done in the
  # warm-up runs) out of the timings.
  jax.config.update("jax_compilation_cache_dir", tempfile.mkdtemp(prefix="jaxcache"))
  jax.config.update("jax_persistent_cache_min_compile_time_secs", 0.0)
  steps = _STEPS.value
  print(cpu_line())
  print(f"devices: {jax.device_count()} ({jax.devices()[0].platform}); {_ALGORITHM.value}:"
        f"{_ARG.value}, {steps} local steps")
  _replay(True, 16)  # warm-up: compile every program once
  _replay(False, 16)
  bare_s, bare_tokens = _bare_loop(steps)
  bare = bare_tokens / bare_s
  print(f"bare jitted loop     : {bare:10,.0f} tokens/s  (1.00 x)")
  for parallel in (True, False) if _SEQUENTIAL.value else (True,):
    wall, s = _replay(parallel, steps)
    # Simulated tokens count the local steps the evaluated model received; computed tokens also
    # count rounds the LPSs had not yet reported, and rounds in flight at the stop.
    rate = s["tokens"] / wall
    computed = s["steps_computed"] * s["tokens"] / max(1, s["local_steps"]) / wall
    name = "parallel replay  " if parallel else "sequential replay"
    print(f"{name}    : {rate:10,.0f} simulated tokens/s ({rate / bare:4.2f} x bare); "
          f"{computed:10,.0f} computed tokens/s ({computed / bare:4.2f} x bare); "
          f"{s['local_steps']} steps counted, {s['steps_computed']} computed, {wall:.1f} s")


if __name__ == "__main__":
  app.run(main)
