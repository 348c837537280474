r"""One local step of the configured model here: step_time_ms, and the memory a run needs.

The simulated clock of a run (`config.step_time_ms`: milliseconds per local step of a speed-1
worker) should be the step time of the hardware simulated. Run this on that hardware with the
run's config; it times the worker's local step exactly as the replay runs it (forward, backward,
global-norm clipping, AdamW, B = local_batch sequences of T = data.seq_len tokens, random tokens)
and prints the flag to feed back:

  .venv/bin/python benchmarks/step_time.py --config=configs/halos.py
  ...  --config.step_time_ms=231.7   (feed back to experiments.train)

It also prints the memory of the step as XLA compiled it for this backend (arguments, outputs,
temporaries = activations and gradients) and of the replay's simulation state (halos_jax.replay:
per worker one model-sized row and AdamW moments; the servers' state), computed from shapes
without allocating them (per device: `python -m experiments.memory`). `--compile_only` skips
the timing (for models too large for this machine); `--model` overrides config.model.name.
docs/scale.md has the numbers for the paper.
"""
from __future__ import annotations

import statistics
import sys
import time

from absl import app
from absl import flags
from ml_collections import config_flags

_CONFIG = config_flags.DEFINE_config_file(
    "config", None, "Algorithm config, e.g. configs/halos.py (overrides: --config.KEY=VALUE).")
_MODEL = flags.DEFINE_string("model", None, "Overrides config.model.name.")
_STEPS = flags.DEFINE_integer("steps", 5, "Timed steps (the median is reported).")
_WARMUP = flags.DEFINE_integer("warmup", 1, "Untimed steps after compilation.")
_COMPILE_ONLY = flags.DEFINE_bool("compile_only", False, "Memory only: compile, do not run.")
flags.mark_flags_as_required(["config"])

GB = 1e9


def state_bytes(config, model_name: str) -> dict:
  """Bytes of the replay's simulation state for `config` (shapes only, nothing allocated):
  `halos_jax.memory.plan` on one device.

  Returns a dict with params (one fp32 copy), per_worker (snapshot/result row + worker
  optimizer state + loss), workers (W of them), servers (the algorithm's server state), total.
  """
  import ml_collections  # pylint: disable=g-import-not-at-top
  from halos_jax import config_lib, memory  # pylint: disable=g-import-not-at-top
  config = ml_collections.ConfigDict(config.to_dict())
  config.model.name = model_name
  config = config_lib.resolve(config)  # message_bytes from the model when unset
  p = memory.plan(config, 1, compile_round=False)
  w = p.workers_per_device
  return {"params": p.params_bytes, "per_worker": p.slot_bytes, "num_workers": w,
          "workers": w * p.slot_bytes, "servers": p.servers_bytes, "total": p.resident[0]}


def main(argv):
  del argv
  import jax  # pylint: disable=g-import-not-at-top
  import jax.numpy as jnp  # pylint: disable=g-import-not-at-top
  import numpy as np  # pylint: disable=g-import-not-at-top
  import optax  # pylint: disable=g-import-not-at-top
  from halos_jax import models  # pylint: disable=g-import-not-at-top
  from halos_jax.replay.problem import lm_model_config, lm_worker_optimizer  # pylint: disable=g-import-not-at-top
  from halos_jax.replay.rounds import accumulated_value_and_grad  # pylint: disable=g-import-not-at-top

  config = _CONFIG.value
  name = _MODEL.value or config.model.name
  try:
    cfg = lm_model_config(config, name)
  except (KeyError, ValueError) as e:
    print(f"error: --model={name}: {e}", file=sys.stderr)
    sys.exit(2)
  b, t = int(config.local_batch), int(config.data.seq_len)
  lm = models.make_language_model(cfg)
  mem = state_bytes(config, name)
  problem_opt = lm_worker_optimizer(config.worker, lm)

  micro = int(config.get("micro_batch", None) or b)
  if b % micro:
    print(f"error: --config.micro_batch={micro} must divide local_batch={b}", file=sys.stderr)
    sys.exit(2)
  value_and_grad = accumulated_value_and_grad(lm.loss, b // micro)  # as the replay's rounds

  def step(params, state, batch, lr):
    loss, grads = value_and_grad(params, batch)
    updates, state = problem_opt.update(grads, state, params, learning_rate=lr)
    return optax.apply_updates(params, updates), state, loss

  x0 = jax.eval_shape(lambda: lm.init(0))
  opt0 = jax.eval_shape(problem_opt.init, x0)
  batch = jax.ShapeDtypeStruct((b, t + 1), jnp.int32)
  lr = jax.ShapeDtypeStruct((), jnp.float32)
  jitted = jax.jit(step, donate_argnums=(0, 1))
  t0 = time.time()
  compiled = jitted.lower(x0, opt0, batch, lr).compile()
  compile_s = time.time() - t0
  ma = compiled.memory_analysis()
  device = jax.devices()[0]
  print(f"model {name} ({models.param_count(cfg):,} parameters, compute {cfg.compute_dtype}), "
        f"B x T = {b} x {t} ({b // micro} micro-batch(es)), remat {cfg.remat}, on "
        f"{device.platform}:{device.device_kind} (compiled in {compile_s:.1f} s)")
  if ma is not None:
    print(f"  step memory (XLA): arguments {ma.argument_size_in_bytes / GB:.2f} GB, outputs "
          f"{ma.output_size_in_bytes / GB:.2f} GB (aliased {ma.alias_size_in_bytes / GB:.2f}), "
          f"temporaries {ma.temp_size_in_bytes / GB:.2f} GB")
  print(f"  replay state ({config.algorithm}, {mem['num_workers']} workers, env {config.env}): "
        f"params {mem['params'] / GB:.3f} GB, per worker {mem['per_worker'] / GB:.3f} GB, "
        f"workers {mem['workers'] / GB:.2f} GB, servers {mem['servers'] / GB:.2f} GB, total "
        f"{mem['total'] / GB:.2f} GB")
  if _COMPILE_ONLY.value:
    return

  params = jax.jit(lm.init, static_argnums=0)(0)
  state = jax.jit(problem_opt.init)(params)
  rng = np.random.default_rng(0)
  times = []
  for i in range(_WARMUP.value + _STEPS.value):
    tokens = jnp.asarray(rng.integers(0, cfg.vocab_size, (b, t + 1), dtype=np.int32))
    jax.block_until_ready(tokens)
    t0 = time.perf_counter()
    params, state, loss = compiled(params, state, tokens, jnp.float32(1e-4))
    jax.block_until_ready((params, loss))
    if i >= _WARMUP.value:
      times.append(1e3 * (time.perf_counter() - t0))
  ms = statistics.median(times)
  print(f"  step time: median {ms:.1f} ms over {len(times)} steps (min {min(times):.1f}, "
        f"max {max(times):.1f}); {b * t / ms * 1e3:,.0f} tokens/s; loss {float(loss):.3f}")
  print(f"  feed back: --config.step_time_ms={ms:.1f}   (a speed-1 worker of the simulated "
        "environment)")


if __name__ == "__main__":
  app.run(main)
