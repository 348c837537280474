"""Import of Hugging Face GPTNeoX (Pythia) weights: numpy arrays in, our params dict out.

No torch here. Users turn a checkpoint into numpy themselves, e.g. for a Pythia step0 checkpoint
they downloaded:

  import json, safetensors.numpy
  sd = safetensors.numpy.load_file("pythia-70m-step0/model.safetensors")
  cfg = config_from_hf(json.load(open("pythia-70m-step0/config.json")))
  params = params_from_hf_state_dict(sd, cfg)

(or `{k: v.float().numpy() for k, v in torch_model.state_dict().items()}` in an environment
with torch). Checked against transformers' own forward pass by tests/models/hf_import_test.py on
fixtures written by scripts/make_hf_fixtures.py.

Layout differences handled here:
  * torch Linear weights are (out, in); our kernels are (in, out): transposed.
  * `attention.query_key_value` rows are per head [q, k, v] of head_dim each, (H, 3, K); our
    `attention.qkv` columns are [q | k | v], (3, H, K).
  * our layers are stacked along a leading axis of size L; HF has one entry per layer.
  * the head is `embed_out.weight` (Pythia checkpoints, transformers 4.x) or `lm_head.weight`
    (transformers 5.x); both are accepted.
"""
from typing import Any, Mapping

import jax
import jax.numpy as jnp
import numpy as np

from halos_jax.models.config import PythiaConfig
from halos_jax.models.lm import make_language_model

# Buffers some transformers versions save that carry no parameters.
_IGNORED_SUFFIXES = ("attention.bias", "attention.masked_bias", "rotary_emb.inv_freq")
_HEAD_KEYS = ("embed_out.weight", "lm_head.weight")


def config_from_hf(hf_config: Mapping[str, Any], **overrides) -> PythiaConfig:
  """PythiaConfig from a GPTNeoXConfig dict (config.json or `GPTNeoXConfig.to_dict()`).

  Accepts both the transformers 4.x keys (rotary_pct, rotary_emb_base) and 5.x
  (rope_parameters = {rope_theta, partial_rotary_factor}). Features our model does not have
  (sequential residual, tied embeddings, no attention bias, approximate GELU, scaled rope) are
  rejected with a ValueError naming the field.

  Args:
    hf_config: the Hugging Face config as a mapping.
    **overrides: PythiaConfig fields to set on top (e.g. compute_dtype='bfloat16').

  Returns:
    The matching PythiaConfig.
  """
  if not isinstance(hf_config, Mapping):
    raise TypeError(f"hf_config must be a mapping (config.json), got {type(hf_config).__name__}")
  model_type = hf_config.get("model_type", "gpt_neox")
  if model_type != "gpt_neox":
    raise ValueError(f"hf_config model_type must be 'gpt_neox', got {model_type!r}")
  required = ("vocab_size", "hidden_size", "num_hidden_layers", "num_attention_heads",
              "max_position_embeddings")
  missing = [k for k in required if k not in hf_config]
  if missing:
    raise ValueError(f"hf_config is missing required field(s) {missing}")

  def expect(key, want, default):
    got = hf_config.get(key, default)
    if got != want:
      raise ValueError(f"hf_config {key}={got!r} is not supported (our model needs {want!r})")

  expect("use_parallel_residual", True, True)
  expect("tie_word_embeddings", False, False)
  expect("attention_bias", True, True)
  # 'gelu' is the exact erf GELU in transformers; 'gelu_new'/'gelu_fast' are tanh variants.
  expect("hidden_act", "gelu", "gelu")

  rope = dict(hf_config.get("rope_parameters") or hf_config.get("rope_scaling") or {})
  rope_type = rope.get("rope_type", rope.get("type", "default"))
  if rope_type != "default":
    raise ValueError(f"hf_config rope_type={rope_type!r} is not supported (only 'default')")
  rotary_pct = rope.get("partial_rotary_factor", hf_config.get("rotary_pct", 0.25))
  rotary_base = rope.get("rope_theta", hf_config.get("rotary_emb_base", 10000))

  hidden = hf_config["hidden_size"]
  intermediate = hf_config.get("intermediate_size", 4 * hidden)
  if intermediate % hidden:
    raise ValueError(
        f"hf_config intermediate_size={intermediate} must be a multiple of hidden_size={hidden}"
    )
  kwargs = dict(
      vocab_size=hf_config["vocab_size"],
      d_model=hidden,
      num_layers=hf_config["num_hidden_layers"],
      num_heads=hf_config["num_attention_heads"],
      max_seq_len=hf_config["max_position_embeddings"],
      rotary_pct=float(rotary_pct),
      rotary_base=float(rotary_base),
      layer_norm_eps=float(hf_config.get("layer_norm_eps", 1e-5)),
      mlp_ratio=intermediate // hidden,
  )
  kwargs.update(overrides)
  return PythiaConfig(**kwargs)


class _Reader:
  """Reads a transformers state dict into our layout, remembering which entries it used."""

  def __init__(self, state_dict: Mapping[str, Any], cfg: PythiaConfig):
    self.state_dict, self.cfg, self.used = state_dict, cfg, set()

  def get(self, name, shape):
    if name not in self.state_dict:
      raise ValueError(f"state_dict is missing {name!r} (expected shape {shape})")
    self.used.add(name)
    array = np.asarray(self.state_dict[name], dtype=np.float32)
    if array.shape != shape:
      raise ValueError(
          f"state_dict[{name!r}] has shape {array.shape}, expected {shape} for {self.cfg}")
    return array

  def linear(self, prefix, d_in, d_out, bias=True):
    out = {"kernel": self.get(prefix + ".weight", (d_out, d_in)).T}  # torch (out, in) -> (in, out)
    if bias:
      out["bias"] = self.get(prefix + ".bias", (d_out,))
    return out

  def layer_norm(self, prefix):
    D = self.cfg.d_model
    return {"scale": self.get(prefix + ".weight", (D,)), "bias": self.get(prefix + ".bias", (D,))}

  def qkv(self, prefix):
    D, H, K = self.cfg.d_model, self.cfg.num_heads, self.cfg.head_dim
    # Rows of query_key_value are indexed (h, j, k), j in {q, k, v}; ours are (j, h, k).
    w_HxJxKxD = self.get(prefix + ".weight", (3 * D, D)).reshape(H, 3, K, D)
    b_HxJxK = self.get(prefix + ".bias", (3 * D,)).reshape(H, 3, K)
    kernel_Dx3D = w_HxJxKxD.transpose(3, 1, 0, 2).reshape(D, 3 * D)
    bias_3D = b_HxJxK.transpose(1, 0, 2).reshape(3 * D)
    return {"kernel": kernel_Dx3D, "bias": bias_3D}

  def layer(self, i: int) -> dict:
    """Layer i's parameters, unstacked."""
    p, D, F = f"gpt_neox.layers.{i}.", self.cfg.d_model, self.cfg.mlp_dim
    return {
        "input_layernorm": self.layer_norm(p + "input_layernorm"),
        "post_attention_layernorm": self.layer_norm(p + "post_attention_layernorm"),
        "attention": {
            "qkv": self.qkv(p + "attention.query_key_value"),
            "dense": self.linear(p + "attention.dense", D, D),
        },
        "mlp": {
            "dense_h_to_4h": self.linear(p + "mlp.dense_h_to_4h", D, F),
            "dense_4h_to_h": self.linear(p + "mlp.dense_4h_to_h", F, D),
        },
    }


def params_from_hf_state_dict(state_dict: Mapping[str, Any], cfg: PythiaConfig) -> dict:
  """Our params dict from a transformers GPTNeoXForCausalLM state dict of numpy arrays.

  Args:
    state_dict: parameter name -> array (numpy, or anything np.asarray accepts), names as in
      `GPTNeoXForCausalLM.state_dict()` ('gpt_neox.layers.0.attention.query_key_value.weight',
      ..., and 'embed_out.weight' or 'lm_head.weight'). Any float dtype; converted to fp32.
    cfg: the config the weights belong to (e.g. from config_from_hf).

  Returns:
    The nested params dict of make_language_model(cfg) (fp32 jax arrays).
  """
  if not isinstance(state_dict, Mapping):
    raise TypeError(f"state_dict must be a mapping name -> array, got {type(state_dict).__name__}")
  read = _Reader(state_dict, cfg)
  D = cfg.d_model
  # Our layers are stacked: leaf[i] is layer i.
  layers = jax.tree.map(lambda *xs: np.stack(xs), *[read.layer(i) for i in range(cfg.num_layers)])
  heads = [k for k in _HEAD_KEYS if k in state_dict]
  if len(heads) != 1:
    raise ValueError(
        f"state_dict must hold exactly one of {list(_HEAD_KEYS)} (the untied head), found {heads}"
    )
  params = {
      "embed_in": {"embedding": read.get("gpt_neox.embed_in.weight", (cfg.vocab_size, D))},
      "layers": layers,
      "final_layer_norm": read.layer_norm("gpt_neox.final_layer_norm"),
      "embed_out": read.linear(heads[0].removesuffix(".weight"), D, cfg.vocab_size, bias=False),
  }

  unused = sorted(k for k in state_dict
                  if k not in read.used and not k.endswith(_IGNORED_SUFFIXES))
  if unused:
    raise ValueError(
        f"state_dict has {len(unused)} entries this config does not use (more layers than "
        f"num_layers={cfg.num_layers}, or another architecture?): {unused[:5]}"
    )

  # Same tree as our init (guards against drift between this mapping and the module).
  expected = jax.eval_shape(make_language_model(cfg).init, 0)
  if jax.tree.map(lambda x: x.shape, expected) != jax.tree.map(lambda x: x.shape, params):
    raise AssertionError("internal: imported params tree differs from the model's init tree")
  return jax.tree.map(lambda x: jnp.asarray(x, jnp.float32), params)
