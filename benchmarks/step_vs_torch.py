"""AdamW train-step throughput: halos_jax (JAX/XLA) vs transformers GPTNeoXForCausalLM (torch).

Both sides build the same architecture from a config (no download): ours from
`models.get_model_config`, torch's from `transformers.GPTNeoXConfig` with identical V, D, L, H,
4D MLP, rotary_pct 0.25, parallel residual, untied head (benchmarks/_torch_step.py). A train step
is forward, backward, global-norm clip to 1.0 and an AdamW update (fp32 params and moments on both
sides); bf16 means bf16 matmul compute with fp32 params (ours: compute_dtype='bfloat16'; torch:
torch.autocast('cpu', bfloat16)).

Each row starts two persistent worker subprocesses, ours in .venv (this file with --worker) and
torch in side_env (Python 3.11), each pinned to 2 threads. Each builds its model and runs
`--warmup` steps (compilation, allocator), then the driver alternates `--rounds` times: N steps
of ours, N steps of torch, so both see the same machine load (the machine is shared). Reported:
median-round tokens/s per side (tokens = B * T per step), ratio ours/torch, achieved FLOP/s,
the fraction of fp32 peak, and each worker's peak RSS (getrusage ru_maxrss, includes
compilation and the Python runtime).

FLOPs per step: 6 * N_mm * B * T + 12 * L * D * B * T^2, with N_mm the parameters used in
matmuls (all but embed_in and the biases/LayerNorms; the embedding is a gather), the second term
the q.k and p.v matmuls forward + backward counted without the causal saving (PaLM's
convention). Peak fp32: cores * 2 FMA units * fp32 lanes * 2 flops * clock, with the lanes from
the ISA in /proc/cpuinfo (16 with avx512f, 8 with AVX2 + FMA) and the clock from its 'cpu MHz'.

Both workers run with GLIBC_TUNABLES=glibc.malloc.hugetlb=1 (what experiments.train and
experiments.compare set for themselves, halos_jax/runtime.py): both frameworks allocate
multi-GB temporaries per step, and with 4 KiB pages each step pays ~600k-850k page faults.
--no_hugepages runs both without it.

Side environment (once): scripts/make_hf_fixtures.sh creates side_env/ with
  python3.11 -m venv side_env && side_env/bin/pip install torch==2.13.0 transformers==5.23.0

Run: .venv/bin/python benchmarks/step_vs_torch.py [--rows all] [--rounds 3]
"""
from __future__ import annotations

import argparse
import json
import os
import resource
import statistics
import subprocess
import sys
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)
# No JAX import: runtime.py is plain Python.
from halos_jax.runtime import HUGEPAGE_TUNABLE  # noqa: E402  # pylint: disable=wrong-import-position

THREADS = 2

# (model name, batch, seq, steps per round)
ROWS = {
    "tiny-8x256": ("tiny", 8, 256, 20),
    "tiny-32x256": ("tiny", 32, 256, 6),
    "70m-1x2048": ("pythia-70m", 1, 2048, 1),
    "70m-4x512": ("pythia-70m", 4, 512, 1),
}


def _worker(a):
  """Our side: serves 'run N' / 'quit' on stdin like _torch_step.py."""
  import jax  # pylint: disable=g-import-not-at-top
  import jax.numpy as jnp  # pylint: disable=g-import-not-at-top
  import numpy as np  # pylint: disable=g-import-not-at-top
  import optax  # pylint: disable=g-import-not-at-top
  from halos_jax import models  # pylint: disable=g-import-not-at-top
  from halos_jax.models import pythia  # pylint: disable=g-import-not-at-top

  from halos_jax.models import lm as lm_module  # pylint: disable=g-import-not-at-top
  for k, v in json.loads(a.model_opts).items():  # benchmark-only levers (see --model_opts)
    module = pythia if hasattr(pythia, k) else lm_module
    if not hasattr(module, k):
      raise ValueError(f"--model_opts: {k!r} is not a switch of models.pythia or models.lm")
    setattr(module, k, v)
  cfg = models.get_model_config(a.model, compute_dtype=a.dtype)
  lm = models.make_language_model(cfg)
  params = lm.init(0)
  tx = optax.chain(optax.clip_by_global_norm(1.0), optax.adamw(1e-4, weight_decay=0.1))
  opt_state = tx.init(params)
  batch = jnp.asarray(np.random.default_rng(1).integers(
      0, cfg.vocab_size, (a.batch, a.seq + 1), dtype=np.int32))

  def step(params, opt_state, batch):
    loss, grads = jax.value_and_grad(lm.loss)(params, batch)
    updates, opt_state = tx.update(grads, opt_state, params)
    return optax.apply_updates(params, updates), opt_state, loss

  step = jax.jit(step, donate_argnums=(0, 1) if a.donate else ())
  print("ready", flush=True)
  for line in sys.stdin:
    cmd = line.split()
    if cmd[0] == "run":
      t0 = time.perf_counter()
      for _ in range(int(cmd[1])):
        params, opt_state, loss = step(params, opt_state, batch)
      loss.block_until_ready()  # one host sync per round, none per step
      print(f"time {time.perf_counter() - t0}", flush=True)
    elif cmd[0] == "quit":
      print(f"maxrss {resource.getrusage(resource.RUSAGE_SELF).ru_maxrss}", flush=True)
      return


class _Proc:
  """A worker subprocess speaking the 'run N' / 'quit' protocol."""

  def __init__(self, argv, env):
    self.p = subprocess.Popen(argv, stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True,
                              env=env, cwd=ROOT)
    self._expect("ready")

  def _expect(self, word):
    line = self.p.stdout.readline().split()
    if not line or line[0] != word:
      raise RuntimeError(f"worker {self.p.args[:3]} said {line!r}, expected {word!r}")
    return line[1:] if len(line) > 1 else None

  def run(self, n):
    self.p.stdin.write(f"run {n}\n")
    self.p.stdin.flush()
    return float(self._expect("time")[0])

  def quit(self):
    self.p.stdin.write("quit\n")
    self.p.stdin.flush()
    rss = int(self._expect("maxrss")[0])
    self.p.wait()
    return rss


def _dims(name):
  from halos_jax.models import config  # pylint: disable=g-import-not-at-top  (no JAX import)
  return config.get_model_config(name)


def _flops_per_step(cfg, b, t):
  v, d, l = cfg.vocab_size, cfg.d_model, cfg.num_layers
  n_mm = l * 12 * d * d + v * d  # qkv 3D^2, dense D^2, MLP 8D^2 per layer; head D V
  return 6 * n_mm * b * t + 12 * l * d * b * t * t


def _cpu():
  """(model name, fp32 lanes per FMA, clock MHz) from /proc/cpuinfo."""
  info = {}
  with open("/proc/cpuinfo") as f:
    for line in f:
      key, _, value = line.partition(":")
      info.setdefault(key.strip(), value.strip())
  flags = info.get("flags", "").split()
  lanes = 16 if "avx512f" in flags else 8 if "fma" in flags else 4
  return info.get("model name", "?"), lanes, float(info.get("cpu MHz", "nan"))


def _peak_flops():
  """fp32 peak: cores x 2 FMA units x lanes x 2 flops x clock; and its description."""
  model, lanes, mhz = _cpu()
  peak = THREADS * 2 * lanes * 2 * mhz * 1e6
  isa = {16: "AVX-512", 8: "AVX2"}.get(lanes, "SSE")
  return peak, (f"{peak / 1e9:.0f} GFLOP/s = {THREADS} cores x 2 FMA x {lanes} fp32 lanes "
                f"({isa}) x 2 x {mhz:.0f} MHz [{model}]")


def main():
  p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
  p.add_argument("--rows", default="all", help=f"comma list of {list(ROWS)} or 'all'")
  p.add_argument("--dtypes", default="float32,bfloat16")
  p.add_argument("--rounds", type=int, default=3)
  p.add_argument("--warmup", type=int, default=2)
  p.add_argument("--steps", type=int, default=0, help="steps per round (0: the row's default)")
  p.add_argument("--no_donate", action="store_true", help="lever: no buffer donation")
  p.add_argument("--no_hugepages", action="store_true",
                 help=f"lever: run both sides without GLIBC_TUNABLES={HUGEPAGE_TUNABLE}")
  p.add_argument("--xla_flags", default="", help="lever: extra XLA_FLAGS for our worker")
  p.add_argument("--model_opts", default="{}",
                 help="lever: JSON of halos_jax.models.pythia / .lm module attributes to override, "
                 "e.g. '{\"ATTENTION_BLOCK\": 0, \"LOSS_CHUNK_LOGITS\": 0}'")
  p.add_argument("--torch_attn", default="sdpa", help="transformers attn_implementation")
  p.add_argument("--side_python", default=os.path.join(ROOT, "side_env", "bin", "python"))
  # worker mode
  p.add_argument("--worker", action="store_true", help=argparse.SUPPRESS)
  p.add_argument("--model", help=argparse.SUPPRESS)
  p.add_argument("--batch", type=int, help=argparse.SUPPRESS)
  p.add_argument("--seq", type=int, help=argparse.SUPPRESS)
  p.add_argument("--dtype", help=argparse.SUPPRESS)
  p.add_argument("--donate", type=int, default=1, help=argparse.SUPPRESS)
  a = p.parse_args()
  if a.worker:
    return _worker(a)

  rows = list(ROWS) if a.rows == "all" else a.rows.split(",")
  for r in rows:
    if r not in ROWS:
      p.error(f"--rows: unknown row {r!r}; valid rows: {', '.join(ROWS)} or all")
  peak, peak_desc = _peak_flops()
  print(f"fp32 peak {peak_desc}; XLA_FLAGS extra: {a.xla_flags!r}; model_opts {a.model_opts}; "
        f"donate {not a.no_donate}; malloc huge pages {not a.no_hugepages} (both sides)",
        flush=True)
  base_env = dict(os.environ)
  if not a.no_hugepages:
    base_env["GLIBC_TUNABLES"] = HUGEPAGE_TUNABLE
  else:
    base_env.pop("GLIBC_TUNABLES", None)
  env_torch = dict(base_env, OMP_NUM_THREADS=str(THREADS), MKL_NUM_THREADS=str(THREADS))
  env_jax = dict(base_env)
  env_jax["XLA_FLAGS"] = (env_jax.get("XLA_FLAGS", "") + " " + a.xla_flags).strip()
  hdr = (f"| {'row':<12} | {'dtype':<8} | {'ours tok/s':>10} | {'torch tok/s':>11} | "
         f"{'ours/torch':>10} | {'ours GFLOP/s':>12} | {'ours %peak':>10} | "
         f"{'torch %peak':>11} | {'ours MiB':>8} | {'torch MiB':>9} |")
  print(hdr)
  print("|" + "|".join("-" * (len(c)) for c in hdr.split("|")[1:-1]) + "|", flush=True)
  for r in rows:
    name, b, t, steps = ROWS[r]
    steps = a.steps or steps
    cfg = _dims(name)
    for dt in a.dtypes.split(","):
      ours = _Proc([sys.executable, os.path.abspath(__file__), "--worker", "--model", name,
                    "--batch", str(b), "--seq", str(t), "--dtype", dt,
                    "--donate", str(int(not a.no_donate)), "--model_opts", a.model_opts],
                   env_jax)
      theirs = _Proc([a.side_python, os.path.join(ROOT, "benchmarks", "_torch_step.py"),
                      "--vocab", str(cfg.vocab_size), "--d_model", str(cfg.d_model),
                      "--layers", str(cfg.num_layers), "--heads", str(cfg.num_heads),
                      "--max_seq_len", str(cfg.max_seq_len), "--batch", str(b), "--seq", str(t),
                      "--threads", str(THREADS), "--dtype", dt, "--attn", a.torch_attn],
                     env_torch)
      ours.run(a.warmup)
      theirs.run(a.warmup)
      t_ours, t_torch = [], []
      for _ in range(a.rounds):
        t_ours.append(ours.run(steps))
        t_torch.append(theirs.run(steps))
      rss_ours, rss_torch = ours.quit(), theirs.quit()
      tok = b * t * steps
      tps_o, tps_t = tok / statistics.median(t_ours), tok / statistics.median(t_torch)
      fl = _flops_per_step(cfg, b, t) / (b * t)  # per token
      print(f"| {r:<12} | {dt:<8} | {tps_o:>10.0f} | {tps_t:>11.0f} | {tps_o / tps_t:>10.2f} | "
            f"{tps_o * fl / 1e9:>12.1f} | {100 * tps_o * fl / peak:>9.1f}% | "
            f"{100 * tps_t * fl / peak:>10.1f}% | {rss_ours / 1024:>8.0f} | "
            f"{rss_torch / 1024:>9.0f} |", flush=True)


if __name__ == "__main__":
  main()
