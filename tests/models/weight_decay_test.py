"""The workers' weight decay on the real Pythia parameter trees, and the other per-leaf rules that
could mistake the stacked layer axis for a parameter dimension (issue 18).

The reference decays each layer's weight matrices and the embeddings (tensors of rank >= 2 *per
layer*), never biases or LayerNorm parameters. Our layers are stacked along a leading axis, so
every per-layer vector is stored with ndim 2: the rule must come from what a leaf is.
"""
import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import optax
import pytest
from flax import nnx

import models_testlib
from halos_jax import models
from halos_jax import optim
from halos_jax.models import lm as lm_lib
from halos_jax.models.pythia import Block
from halos_jax.replay.problem import lm_worker_optimizer

# The leaves that decay, listed by hand from the architecture (docs/models.md): the four Linear
# kernels of a block, the two embedding tables. Everything else is a bias or a LayerNorm vector.
DECAYED = {
    "embed_in/embedding",
    "embed_out/kernel",
    "layers/attention/qkv/kernel",
    "layers/attention/dense/kernel",
    "layers/mlp/dense_h_to_4h/kernel",
    "layers/mlp/dense_4h_to_h/kernel",
}


def _paths(tree):
  return {lm_lib._path_str(p): leaf for p, leaf in jax.tree_util.tree_flatten_with_path(tree)[0]}


def _worker_config(weight_decay=0.1):
  w = ml_collections.ConfigDict()
  w.b1, w.b2, w.eps, w.clip_norm, w.weight_decay = 0.9, 0.95, 1e-8, 1.0, weight_decay
  return w


@pytest.fixture(scope="module", params=["tiny", "pythia-14m"])
def model(request):
  cfg = models.get_model_config(request.param)
  lm = models.make_language_model(cfg)
  return cfg, lm, lm.init(0)


def test_mask_is_the_hand_list(model):
  _, lm, params = model
  mask = _paths(lm.decay_mask)
  assert set(mask) == set(_paths(params))
  assert {path for path, decayed in mask.items() if decayed} == DECAYED
  # The bug this guards against: stacked per-layer vectors have ndim 2, so a rank rule on the
  # stored arrays decays them.
  stored_rank = _paths(optim.rank_decay_mask(params))
  assert stored_rank["layers/input_layernorm/scale"] and not mask["layers/input_layernorm/scale"]


def test_zero_gradient_step_decays_exactly_the_matrices(model):
  # With g = 0: clipping keeps 0, Adam's m = v = 0 gives a direction 0 / (0 + eps) = 0, so with
  # lr 1 the update is exactly -wd * x on the decayed leaves (one fp32 product, no other
  # rounding) and exactly 0 everywhere else.
  _, lm, params = model
  wd = 0.1
  opt = lm_worker_optimizer(_worker_config(wd), lm)
  zeros = jax.tree.map(jnp.zeros_like, params)
  updates, _ = jax.jit(lambda g, x: opt.update(g, opt.init(x), x, learning_rate=1.0))(
      zeros, params)
  new = _paths(optax.apply_updates(params, updates))
  updates, old = _paths(updates), _paths(params)
  for path, u in updates.items():
    x = np.asarray(old[path])
    if path in DECAYED:
      np.testing.assert_array_equal(u, -(np.float32(wd) * x), err_msg=path)
      assert np.any(new[path] != x), path
    else:
      np.testing.assert_array_equal(u, 0.0, err_msg=path)
      np.testing.assert_array_equal(new[path], x, err_msg=path)


def _unstacked(params, num_layers, take=lambda x, i: x[i]):
  """The same parameters as a model built layer by layer: one subtree per layer."""
  out = {k: v for k, v in params.items() if k != "layers"}
  for i in range(num_layers):
    out[f"layers_{i}"] = jax.tree.map(lambda x, i=i: take(x, i), params["layers"])
  return out


def test_stacked_mask_equals_the_layer_by_layer_reference_rule(model):
  cfg, lm, params = model
  # Layer by layer, every leaf is one parameter and the reference's rank >= 2 rule applies.
  reference = optim.rank_decay_mask(_unstacked(params, cfg.num_layers))
  # A layer's mask entry holds for each of its L slices.
  assert _unstacked(lm.decay_mask, cfg.num_layers, take=lambda m, i: m) == reference
  # The same against one Block built on its own by NNX (no stacking anywhere).
  block = nnx.eval_shape(lambda: Block(cfg, rngs=nnx.Rngs(0)))
  block_params = nnx.to_pure_dict(nnx.state(block))
  assert lm.decay_mask["layers"] == optim.rank_decay_mask(block_params)
  assert lm_lib.weight_decay_mask(block_params) == lm.decay_mask["layers"]


def test_unknown_parameter_kind_is_an_error():
  with pytest.raises(ValueError, match="gate/weight"):
    lm_lib.weight_decay_mask({"gate": {"weight": jnp.ones((2, 2))}})


def test_global_norm_clipping_ignores_the_layer_axis():
  # The clip threshold is a norm over all parameters: stacking must not change it.
  params = models_testlib.tiny_params(0)
  stacked = optax.tree.norm(params)
  unstacked = optax.tree.norm(_unstacked(params, 2))
  np.testing.assert_allclose(stacked, unstacked, rtol=1e-6)


def test_each_stacked_layer_is_initialised_on_its_own():
  # nnx.vmap over split rngs: every layer draws its own weights (no copies), and each layer on
  # its own has the documented std (test_init_statistics checks the pooled layers).
  cfg = models.get_model_config("tiny")
  params = models_testlib.tiny_params(0)
  layers = params["layers"]
  wang = 2.0 / (cfg.num_layers * np.sqrt(cfg.d_model))
  for name, std in [(("attention", "qkv"), 0.02), (("mlp", "dense_4h_to_h"), wang)]:
    kernel = np.asarray(layers[name[0]][name[1]]["kernel"])
    assert not np.array_equal(kernel[0], kernel[1])
    for i in range(cfg.num_layers):
      # >= 16k samples per layer: the sample std is within 4% of the true one.
      assert np.std(kernel[i]) == pytest.approx(std, rel=0.04)
  np.testing.assert_array_equal(layers["post_attention_layernorm"]["scale"], 1.0)
  np.testing.assert_array_equal(layers["post_attention_layernorm"]["bias"], 0.0)
