"""Torch side of benchmarks/step_vs_torch.py (runs in side_env, Python 3.11, torch 2.13.0 CPU).

Builds transformers' GPTNeoXForCausalLM from a config (no download) with the dimensions given on
the command line, and serves timing requests over stdin/stdout (protocol: see step_vs_torch.py):
  'run N'  -> runs N AdamW train steps, replies 'time <seconds>'
  'quit'   -> replies 'maxrss <KiB>' and exits.

Train step: logits = model(batch[:, :-1]); loss = mean cross-entropy against batch[:, 1:];
backward; clip_grad_norm_(1.0); AdamW step; zero_grad. bf16 = torch.autocast('cpu', bfloat16)
with fp32 parameters and optimizer state (torch's usual mixed precision).
"""
import argparse
import resource
import sys
import time

import torch
import transformers


def main():
  p = argparse.ArgumentParser()
  for name in ("vocab", "d_model", "layers", "heads", "max_seq_len", "batch", "seq", "threads"):
    p.add_argument(f"--{name}", type=int, required=True)
  p.add_argument("--dtype", choices=("float32", "bfloat16"), required=True)
  p.add_argument("--attn", default="sdpa", help="transformers attn_implementation")
  a = p.parse_args()
  torch.set_num_threads(a.threads)
  torch.manual_seed(0)
  cfg = transformers.GPTNeoXConfig(
      vocab_size=a.vocab, hidden_size=a.d_model, num_hidden_layers=a.layers,
      num_attention_heads=a.heads, intermediate_size=4 * a.d_model,
      max_position_embeddings=a.max_seq_len, rotary_pct=0.25, rotary_emb_base=10000,
      use_parallel_residual=True, tie_word_embeddings=False, hidden_act="gelu",
      attention_dropout=0.0, hidden_dropout=0.0, layer_norm_eps=1e-5,
  )
  cfg._attn_implementation = a.attn  # pylint: disable=protected-access
  model = transformers.GPTNeoXForCausalLM(cfg).train()
  opt = torch.optim.AdamW(model.parameters(), lr=1e-4, weight_decay=0.1)
  gen = torch.Generator().manual_seed(1)
  batch = torch.randint(0, a.vocab, (a.batch, a.seq + 1), generator=gen)
  inputs, targets = batch[:, :-1], batch[:, 1:]
  use_bf16 = a.dtype == "bfloat16"

  def step():
    with torch.autocast("cpu", dtype=torch.bfloat16, enabled=use_bf16):
      logits = model(input_ids=inputs).logits
    loss = torch.nn.functional.cross_entropy(
        logits.float().reshape(-1, a.vocab), targets.reshape(-1))
    loss.backward()
    torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
    opt.step()
    opt.zero_grad(set_to_none=True)
    return loss.item()

  print("ready", flush=True)
  for line in sys.stdin:
    cmd = line.split()
    if cmd[0] == "run":
      t0 = time.perf_counter()
      for _ in range(int(cmd[1])):
        step()
      print(f"time {time.perf_counter() - t0}", flush=True)
    elif cmd[0] == "quit":
      print(f"maxrss {resource.getrusage(resource.RUSAGE_SELF).ru_maxrss}", flush=True)
      return


if __name__ == "__main__":
  main()
