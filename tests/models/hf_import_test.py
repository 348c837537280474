"""Tests for halos_jax.models.hf_import against transformers' own logits (fixtures written by
scripts/make_hf_fixtures.py; no torch at test time)."""
import numpy as np
import pytest

import models_testlib
from halos_jax import models


@pytest.mark.parametrize("name", ["hf_tiny", "hf_pythia14m"])
def test_logits_match_transformers(name):
  hf_config, state_dict, input_ids, hf_logits = models_testlib.load_hf_fixture(name)
  cfg = models.config_from_hf(hf_config)
  params = models.params_from_hf_state_dict(state_dict, cfg)
  logits = np.asarray(models_testlib.jitted(cfg).apply(params, input_ids))
  assert logits.shape == hf_logits.shape
  # Both sides compute in fp32 from the same weights; only the order of operations differs
  # (matmul blocking, fused vs separate qkv, erf and cos/sin implementations), each adding
  # relative errors of ~1e-7 per op. Through 2-6 layers to O(1) logits (max ~4.7) that stays
  # well below 1e-4 (measured ~3e-6), while any layout error (qkv order, a transpose, a rotary
  # convention) moves logits by O(0.1-1).
  np.testing.assert_allclose(logits, hf_logits, atol=1e-4, rtol=0)


def test_config_from_hf_pythia_keys():
  # Pythia's config.json (transformers 4.x keys) for pythia-70m.
  hf = dict(model_type="gpt_neox", vocab_size=50304, hidden_size=512, num_hidden_layers=6,
            num_attention_heads=8, intermediate_size=2048, max_position_embeddings=2048,
            rotary_pct=0.25, rotary_emb_base=10000, layer_norm_eps=1e-5,
            use_parallel_residual=True, hidden_act="gelu", tie_word_embeddings=False)
  assert models.config_from_hf(hf) == models.get_model_config("pythia-70m")
  # The transformers 5.x spelling of the rotary fields gives the same config.
  hf5 = {k: v for k, v in hf.items() if k not in ("rotary_pct", "rotary_emb_base")}
  hf5["rope_parameters"] = dict(rope_type="default", rope_theta=10000.0,
                                partial_rotary_factor=0.25)
  assert models.config_from_hf(hf5) == models.get_model_config("pythia-70m")
  assert models.config_from_hf(hf, compute_dtype="bfloat16").compute_dtype == "bfloat16"


@pytest.mark.parametrize("field,value,match", [
    ("use_parallel_residual", False, "use_parallel_residual=False is not supported"),
    ("tie_word_embeddings", True, "tie_word_embeddings=True"),
    ("hidden_act", "gelu_new", "hidden_act='gelu_new'"),
    ("intermediate_size", 300, "intermediate_size=300 must be a multiple of hidden_size=128"),
    ("model_type", "llama", "model_type must be 'gpt_neox'"),
])
def test_config_from_hf_rejects_unsupported(field, value, match):
  hf_config, _, _, _ = models_testlib.load_hf_fixture("hf_tiny")
  with pytest.raises(ValueError, match=match):
    models.config_from_hf(dict(hf_config, **{field: value}))


def test_config_from_hf_missing_field():
  with pytest.raises(ValueError, match=r"missing required field\(s\) \['num_hidden_layers'"):
    models.config_from_hf(dict(vocab_size=8, hidden_size=8, num_attention_heads=2,
                               max_position_embeddings=8))


def test_qkv_layout_by_hand():
  # transformers row index of query_key_value: h * 3K + j * K + k (j = 0 q, 1 k, 2 v).
  # Our column index of attention.qkv.kernel: j * D + h * K + k, and kernel = weight^T.
  # Encode each row's (h, j, k) in its values and check where they land.
  cfg = models.PythiaConfig(vocab_size=8, d_model=16, num_layers=1, num_heads=2, max_seq_len=8)
  D, H, K = 16, 2, 8
  state_dict = _zero_state_dict(cfg)
  rows = np.arange(3 * D, dtype=np.float32)
  state_dict["gpt_neox.layers.0.attention.query_key_value.weight"] = np.repeat(
      rows[:, None], D, axis=1)  # row r is filled with the value r
  state_dict["gpt_neox.layers.0.attention.query_key_value.bias"] = rows
  qkv = models.params_from_hf_state_dict(state_dict, cfg)["layers"]["attention"]["qkv"]
  for h in range(H):
    for j in range(3):
      for k in range(K):
        hf_row = h * 3 * K + j * K + k
        ours = j * D + h * K + k
        np.testing.assert_array_equal(qkv["kernel"][0, :, ours], hf_row)
        assert float(qkv["bias"][0, ours]) == hf_row


def test_head_name_lm_head_or_embed_out():
  _, state_dict, _, _ = models_testlib.load_hf_fixture("hf_tiny")
  cfg = models.get_model_config("tiny")
  assert "lm_head.weight" in state_dict  # transformers 5.x name
  renamed = {("embed_out.weight" if k == "lm_head.weight" else k): v
             for k, v in state_dict.items()}
  a = models.params_from_hf_state_dict(state_dict, cfg)["embed_out"]["kernel"]
  b = models.params_from_hf_state_dict(renamed, cfg)["embed_out"]["kernel"]
  np.testing.assert_array_equal(a, b)
  np.testing.assert_array_equal(a, state_dict["lm_head.weight"].T)
  with pytest.raises(ValueError, match="exactly one of"):
    models.params_from_hf_state_dict(dict(state_dict, **{"embed_out.weight": b.T}), cfg)


def test_state_dict_errors():
  cfg = models.PythiaConfig(vocab_size=8, d_model=16, num_layers=1, num_heads=2, max_seq_len=8)
  good = _zero_state_dict(cfg)
  missing = {k: v for k, v in good.items() if not k.endswith("mlp.dense_4h_to_h.bias")}
  with pytest.raises(ValueError, match=r"missing 'gpt_neox.layers.0.mlp.dense_4h_to_h.bias'"):
    models.params_from_hf_state_dict(missing, cfg)
  wrong = dict(good, **{"gpt_neox.embed_in.weight": np.zeros((9, 16), np.float32)})
  with pytest.raises(ValueError,
                     match=r"embed_in.weight'\] has shape \(9, 16\), expected \(8, 16\)"):
    models.params_from_hf_state_dict(wrong, cfg)
  extra = dict(good, **{"gpt_neox.layers.1.attention.dense.bias": np.zeros(16, np.float32)})
  with pytest.raises(ValueError, match="1 entries this config does not use"):
    models.params_from_hf_state_dict(extra, cfg)
  # Old buffers some checkpoints carry are ignored.
  buffers = dict(good, **{"gpt_neox.layers.0.attention.rotary_emb.inv_freq": np.ones(1),
                          "gpt_neox.layers.0.attention.bias": np.ones((1, 1, 8, 8), bool)})
  models.params_from_hf_state_dict(buffers, cfg)
  with pytest.raises(TypeError, match="mapping"):
    models.params_from_hf_state_dict([("a", 1)], cfg)


def _zero_state_dict(cfg):
  """All-zero arrays under every GPTNeoXForCausalLM name, in torch's (out, in) layout."""
  D, F, V = cfg.d_model, cfg.mlp_dim, cfg.vocab_size
  sd = {"gpt_neox.embed_in.weight": (V, D), "gpt_neox.final_layer_norm.weight": (D,),
        "gpt_neox.final_layer_norm.bias": (D,), "lm_head.weight": (V, D)}
  for i in range(cfg.num_layers):
    p = f"gpt_neox.layers.{i}."
    for ln in ("input_layernorm", "post_attention_layernorm"):
      sd[p + ln + ".weight"] = sd[p + ln + ".bias"] = (D,)
    for name, d_in, d_out in [("attention.query_key_value", D, 3 * D), ("attention.dense", D, D),
                              ("mlp.dense_h_to_4h", D, F), ("mlp.dense_4h_to_h", F, D)]:
      sd[p + name + ".weight"] = (d_out, d_in)
      sd[p + name + ".bias"] = (d_out,)
  return {k: np.zeros(shape, np.float32) for k, shape in sd.items()}
