"""Data-path throughput next to the model's: the data path must never be the bottleneck.

Measures, in one process:
  1. block() of the default stream (embedded corpus, byte tokens, seq_len 256) in 64-sequence
     blocks, read in scheduling order like the replay does;
  2. block() of an MMIDIDX stream of 2,049-token sequences (seq_len 2048, uint16, shuffled) from
     a generated file of the Pythia Pile's layout;
  3. the tiny model's jitted AdamW train step on the same 64 x 257 blocks, if `halos_jax.models`
     is importable (otherwise only the data lines are printed);
and prints sequences/s side by side with the ratio data / model.

Run: .venv/bin/python benchmarks/data_throughput.py [--seconds 1.0] [--batch 64]
"""
from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time

import numpy as np

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from halos_jax import data  # pylint: disable=g-import-not-at-top,wrong-import-position

PILE_SEQ = 2049  # tokens per Pythia Pile index entry
PILE_VOCAB = 50_304  # Pythia's padded vocabulary


def blocks_per_second(stream, batch: int, seconds: float) -> tuple[float, int]:
  """Sequences/s of stream.block over consecutive `batch`-sized blocks for ~`seconds`."""
  n_blocks = stream.num_train // batch
  stream.block(0, batch)  # warm-up (page cache, allocator)
  done, k = 0, 0
  t0 = time.perf_counter()
  while time.perf_counter() - t0 < seconds:
    for _ in range(50):
      start = (k % n_blocks) * batch
      stream.block(start, start + batch)
      k += 1
    done += 50
  return done * batch / (time.perf_counter() - t0), done


def mmidx_stream(folder: str, entries: int, batch: int):
  """A shuffled stream over a generated uint16 MMIDIDX file of `entries` x 2,049 tokens."""
  rng = np.random.default_rng(0)
  seqs = (rng.integers(0, PILE_VOCAB, PILE_SEQ, dtype=np.uint16) for _ in range(entries))
  prefix = data.write_mmidx(os.path.join(folder, "pile_like"), seqs, dtype=np.uint16)
  c = data.default_data_config()
  c.source, c.path = "mmidx", str(prefix)
  c.seq_len, c.val_sequences, c.vocab_size = PILE_SEQ - 1, batch, PILE_VOCAB
  return data.build_stream(c)


def train_steps_per_second(block: np.ndarray, seconds: float) -> float | None:
  """Sequences/s of the tiny model's jitted AdamW step on `block`, or None without models."""
  try:
    import jax  # pylint: disable=g-import-not-at-top
    import optax  # pylint: disable=g-import-not-at-top
    from halos_jax import models  # pylint: disable=g-import-not-at-top
  except ImportError as e:
    print(f"(halos_jax.models not importable: {e}; printing the data path only)")
    return None
  lm = models.make_language_model(models.get_model_config("tiny"))
  params = lm.init(0)
  opt = optax.adamw(1e-3, b1=0.9, b2=0.95, weight_decay=0.1)
  opt_state = opt.init(params)

  @jax.jit
  def step(params, opt_state, batch):
    loss, grads = jax.value_and_grad(lm.loss)(params, batch)
    updates, opt_state = opt.update(grads, opt_state, params)
    return optax.apply_updates(params, updates), opt_state, loss

  batch = jax.device_put(block)
  params, opt_state, loss = step(params, opt_state, batch)  # compile
  loss.block_until_ready()
  steps = 0
  t0 = time.perf_counter()
  while time.perf_counter() - t0 < seconds or steps < 3:
    params, opt_state, loss = step(params, opt_state, batch)
    loss.block_until_ready()
    steps += 1
  return steps * block.shape[0] / (time.perf_counter() - t0)


def main() -> None:
  parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
  parser.add_argument("--seconds", type=float, default=1.0, help="time per measurement")
  parser.add_argument("--batch", type=int, default=64, help="sequences per block / train step")
  parser.add_argument("--pile-entries", type=int, default=2048,
                      help="2,049-token entries in the generated MMIDIDX file (x 4 KiB each)")
  args = parser.parse_args()

  t0 = time.perf_counter()
  byte = data.build_stream(data.default_data_config())
  build_s = time.perf_counter() - t0
  byte_sps, _ = blocks_per_second(byte, args.batch, args.seconds)
  print(f"data   shakespeare/byte  seq_len {byte.seq_len:5d}  block({args.batch}): "
        f"{byte_sps:12,.0f} seq/s   (build {build_s:.2f} s: {byte.describe()})")

  with tempfile.TemporaryDirectory() as folder:
    pile = mmidx_stream(folder, args.pile_entries, args.batch)
    pile_sps, _ = blocks_per_second(pile, args.batch, args.seconds)
    print(f"data   mmidx/uint16      seq_len {pile.seq_len:5d}  block({args.batch}): "
          f"{pile_sps:12,.0f} seq/s   (memmapped, shuffled rows; {pile.num_train:,} sequences)")
    del pile

  model_sps = train_steps_per_second(byte.block(0, args.batch), args.seconds)
  if model_sps is None:
    print(f"data_throughput: block() {byte_sps:,.0f} seq/s (byte, 257 tokens) | "
          f"{pile_sps:,.0f} seq/s (mmidx, 2049 tokens) | model: not available")
    return
  print(f"model  tiny train step   seq_len {byte.seq_len:5d}  batch {args.batch}:  "
        f"{model_sps:12,.0f} seq/s   (jitted AdamW step, fp32, {os.cpu_count()} CPU cores)")
  print(f"data_throughput: block() {byte_sps:,.0f} seq/s (byte, 257 tokens) and "
        f"{pile_sps:,.0f} seq/s (mmidx, 2049 tokens) vs tiny train step {model_sps:,.0f} seq/s: "
        f"data / model = {byte_sps / model_sps:,.0f}x (byte), {pile_sps / model_sps:,.0f}x "
        "(mmidx)")


if __name__ == "__main__":
  main()
