"""Writes the Hugging Face GPTNeoX logit fixtures under tests/models/fixtures/.

Runs in a Python 3.11 side environment with torch + transformers (never imported by the library
or the tests). From the repository root:

  python3 -m venv side_env                       # python3 = 3.11 (the CPU torch wheel is cp311)
  side_env/bin/pip install torch==2.13.0 transformers==5.23.0
  side_env/bin/python scripts/make_hf_fixtures.py

or simply `scripts/make_hf_fixtures.sh`, which does the same (creating side_env if missing).
Nothing is downloaded from a model hub: each model is built from a GPTNeoXConfig and every
parameter (biases and LayerNorms included, so their import is tested too) is overwritten with
seeded random values:
  LayerNorm weight 1 + 0.1 N(0,1), every bias 0.1 N(0,1), embedding N(0,1),
  Linear weight N(0,1) / sqrt(fan_in)
so activations and logits are O(1) and the 1e-4 logit tolerance of the test is meaningful.
The reference is transformers' eager attention in fp32.

Fixtures (np.savez_compressed, float32):
  hf_tiny.npz        our 'tiny' shape: vocab 256, d 128, 2 layers, 4 heads, max pos 256,
                     input ids (2, 256) (every position of the rotary table).
  hf_pythia14m.npz   pythia-14m shape (6 layers, d 128, 4 heads, MLP 512, rotary_pct 0.25,
                     max pos 2048) BUT vocab 96 instead of 50,304: with the full vocabulary the
                     two 50,304 x 128 matrices alone are 51 MB; at 96 the file stays < 5 MB
                     (the layers are 4.8 MB) and 96 != d_model keeps the head non-square.
                     Input ids (2, 64).
Each holds `config_json` (GPTNeoXConfig.to_json_string()), `meta_json` (versions, seed),
`input_ids` (int32), `logits` (float32, B x T x V) and one `param.<state dict name>` array per
entry of GPTNeoXForCausalLM.state_dict().
"""
import json
import os
import sys

import numpy as np
import torch
import transformers

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
OUT_DIR = os.path.join(ROOT, "tests", "models", "fixtures")

# name -> (GPTNeoXConfig fields, input shape, seed)
FIXTURES = {
    "hf_tiny": (
        dict(vocab_size=256, hidden_size=128, num_hidden_layers=2, num_attention_heads=4,
             intermediate_size=512, max_position_embeddings=256),
        (2, 256),
        0,
    ),
    "hf_pythia14m": (
        dict(vocab_size=96, hidden_size=128, num_hidden_layers=6, num_attention_heads=4,
             intermediate_size=512, max_position_embeddings=2048),
        (2, 64),
        1,
    ),
}
COMMON = dict(
    rotary_pct=0.25,
    rotary_emb_base=10000,
    layer_norm_eps=1e-5,
    use_parallel_residual=True,
    hidden_act="gelu",
    tie_word_embeddings=False,
    attention_bias=True,
    hidden_dropout=0.0,
    attention_dropout=0.0,
)


def _randomize_(model: torch.nn.Module, seed: int) -> None:
  """Overwrites every parameter with seeded values (see the module docstring)."""
  gen = torch.Generator().manual_seed(seed)
  with torch.no_grad():
    for name, p in model.named_parameters():
      z = torch.randn(p.shape, generator=gen, dtype=torch.float32)
      if "layernorm" in name or "layer_norm" in name:
        p.copy_(1.0 + 0.1 * z if name.endswith(".weight") else 0.1 * z)
      elif name.endswith(".bias"):
        p.copy_(0.1 * z)
      elif "embed_in" in name:
        p.copy_(z)
      else:  # Linear weight, torch layout (out, in)
        p.copy_(z / np.sqrt(p.shape[1]))


def make_fixture(name: str) -> str:
  fields, shape, seed = FIXTURES[name]
  config = transformers.GPTNeoXConfig(**fields, **COMMON)
  config._attn_implementation = "eager"
  torch.manual_seed(seed)
  model = transformers.GPTNeoXForCausalLM(config).eval().float()
  _randomize_(model, seed)
  state_dict = model.state_dict()
  head = "lm_head.weight" if "lm_head.weight" in state_dict else "embed_out.weight"
  if state_dict[head].data_ptr() == state_dict["gpt_neox.embed_in.weight"].data_ptr():
    raise SystemExit("embedding and head are tied; the fixture needs them untied")

  rng = np.random.default_rng(seed)
  input_ids = rng.integers(0, fields["vocab_size"], size=shape, dtype=np.int64)
  with torch.no_grad():
    logits = model(input_ids=torch.from_numpy(input_ids)).logits.float().numpy()

  arrays = {f"param.{k}": v.detach().float().numpy() for k, v in state_dict.items()}
  meta = dict(torch=torch.__version__, transformers=transformers.__version__, seed=seed,
              python=sys.version.split()[0], attn_implementation="eager")
  path = os.path.join(OUT_DIR, name + ".npz")
  np.savez_compressed(
      path,
      config_json=np.array(config.to_json_string()),
      meta_json=np.array(json.dumps(meta)),
      input_ids=input_ids.astype(np.int32),
      logits=logits.astype(np.float32),
      **arrays,
  )
  return path


def main():
  os.makedirs(OUT_DIR, exist_ok=True)
  for name in FIXTURES:
    path = make_fixture(name)
    print(f"wrote {os.path.relpath(path, ROOT)}: {os.path.getsize(path) / 1e6:.2f} MB")


if __name__ == "__main__":
  main()
