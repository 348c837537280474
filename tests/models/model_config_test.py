"""Tests for halos_jax.models.config: named sizes, parameter counts (arithmetic and shape-only
init), validation."""
import jax
import numpy as np
import pytest

from halos_jax import models

# Pythia's published totals (Biderman et al. 2023, Table 1 / the HF model cards), re-derived by
# hand from L (12 D^2 + 13 D) + 2 V D + 2 D with V = 50,304:
#   14m:  D=128,  L=6:  6 * 198,272     + 12,877,824  + 256  =  14,067,712
#   70m:  D=512,  L=6:  6 * 3,152,384   + 51,511,296  + 1024 =  70,426,624
#   160m: D=768,  L=12: 12 * 7,087,872  + 77,266,944  + 1536 = 162,322,944
#   410m: D=1024, L=24: 24 * 12,596,224 + 103,022,592 + 2048 = 405,334,016
#   1b:   D=2048, L=16: 16 * 50,358,272 + 206,045,184 + 4096 = 1,011,781,632
# tiny (V=256, D=128, L=2): 2 * 198,272 + 65,536 + 256 = 462,336.
# micro (V=256, D=64, L=2): 2 * (12 * 4,096 + 13 * 64) + 32,768 + 128 = 132,864.
EXPECTED_COUNTS = {
    "tiny": 462_336,
    "micro": 132_864,
    "pythia-14m": 14_067_712,
    "pythia-70m": 70_426_624,
    "pythia-160m": 162_322_944,
    "pythia-410m": 405_334_016,
    "pythia-1b": 1_011_781_632,
}


def test_every_named_size_is_tested():
  assert set(models.MODEL_NAMES) == set(EXPECTED_COUNTS)


@pytest.mark.parametrize("name", sorted(EXPECTED_COUNTS))
def test_param_count_arithmetic(name):
  cfg = models.get_model_config(name)
  assert models.param_count(cfg) == EXPECTED_COUNTS[name]
  assert models.param_bytes(cfg) == 4 * EXPECTED_COUNTS[name]


@pytest.mark.parametrize("name", sorted(EXPECTED_COUNTS))
def test_param_count_shape_only_init(name):
  # jax.eval_shape traces init without running it: no compute, no memory for 405M floats.
  cfg = models.get_model_config(name)
  shapes = jax.eval_shape(models.make_language_model(cfg).init, 0)
  leaves = jax.tree.leaves(shapes)
  assert all(leaf.dtype == np.float32 for leaf in leaves)
  assert sum(int(np.prod(leaf.shape)) for leaf in leaves) == EXPECTED_COUNTS[name]


def test_named_shapes():
  # docs/algorithms.md 5: (layers, d, heads) = 14M (6,128,4), 70M (6,512,8), 160M (12,768,12),
  # 410M (24,1024,16); vocabulary 50,304; sequence 2048.
  want = {"pythia-14m": (6, 128, 4), "pythia-70m": (6, 512, 8), "pythia-160m": (12, 768, 12),
          "pythia-410m": (24, 1024, 16), "tiny": (2, 128, 4), "micro": (2, 64, 2)}
  for name, (L, D, H) in want.items():
    cfg = models.get_model_config(name)
    assert (cfg.num_layers, cfg.d_model, cfg.num_heads) == (L, D, H)
    assert cfg.vocab_size == (256 if name in ("tiny", "micro") else 50_304)
    assert cfg.max_seq_len == {"tiny": 256, "micro": 64}.get(name, 2048)
    # Rotary on 25% of each head: head_dim 32 -> 8 dims, head_dim 64 -> 16 dims.
    assert cfg.rotary_ndims == cfg.head_dim // 4


def test_leaf_shapes_tiny():
  # Layers are stacked: a leading axis of size L = 2 on every leaf under 'layers'.
  cfg = models.get_model_config("tiny")
  shapes = jax.eval_shape(models.make_language_model(cfg).init, 0)
  layers = shapes["layers"]
  assert shapes["embed_in"]["embedding"].shape == (256, 128)
  assert shapes["embed_out"]["kernel"].shape == (128, 256)
  assert layers["attention"]["qkv"]["kernel"].shape == (2, 128, 384)
  assert layers["attention"]["qkv"]["bias"].shape == (2, 384)
  assert layers["mlp"]["dense_4h_to_h"]["kernel"].shape == (2, 512, 128)
  assert layers["input_layernorm"]["scale"].shape == (2, 128)
  assert shapes["final_layer_norm"]["scale"].shape == (128,)


def test_overrides_and_errors():
  cfg = models.get_model_config("tiny", compute_dtype="bfloat16", max_seq_len=64)
  assert (cfg.compute_dtype, cfg.max_seq_len) == ("bfloat16", 64)
  with pytest.raises(ValueError, match="unknown model name 'pythia-2b'.*tiny.*pythia-1b"):
    models.get_model_config("pythia-2b")
  with pytest.raises(ValueError, match="unknown PythiaConfig field.*d_modle"):
    models.get_model_config("tiny", d_modle=64)
  with pytest.raises(ValueError, match="compute_dtype.*'float16'"):
    models.get_model_config("tiny", compute_dtype="float16")
  with pytest.raises(ValueError, match="param_dtype"):
    models.get_model_config("tiny", param_dtype="bfloat16")
  with pytest.raises(ValueError, match="d_model=100 must be divisible by num_heads=3"):
    models.get_model_config("tiny", d_model=100, num_heads=3)
  with pytest.raises(ValueError, match="num_layers must be a positive int, got 0"):
    models.get_model_config("tiny", num_layers=0)
  # head_dim 32 * 0.1 = 3.2 -> 3 rotary dims: odd, cannot be paired.
  with pytest.raises(ValueError, match="rotary_ndims.*=3.*even"):
    models.get_model_config("tiny", rotary_pct=0.1)
  with pytest.raises(TypeError, match="PythiaConfig"):
    models.make_language_model({"vocab_size": 256})


def test_wang_init_std():
  # 2 / (L sqrt(D)): pythia-70m 2 / (6 * sqrt(512)) = 2 / 135.76 = 0.014731.
  cfg = models.get_model_config("pythia-70m")
  assert cfg.wang_init_std == pytest.approx(0.014731, rel=1e-4)
