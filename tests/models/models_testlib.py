"""Shared helpers for tests/models: jitted functions cached per config (so every test file in
one pytest process reuses the same compilations) and the HF fixture loader.

Shapes used across the tests, to keep the number of XLA compilations small:
apply on tokens (2, 64), loss / value_and_grad on batches (2, 65).
"""
import functools
import json
import os
from typing import NamedTuple

import jax
import numpy as np

from halos_jax import models

FIXTURES = os.path.join(os.path.dirname(os.path.abspath(__file__)), "fixtures")


class Jitted(NamedTuple):
  lm: models.LanguageModel
  apply: object
  loss: object
  value_and_grad: object


@functools.cache
def jitted(cfg: models.PythiaConfig) -> Jitted:
  lm = models.make_language_model(cfg)
  return Jitted(lm, jax.jit(lm.apply), jax.jit(lm.loss), jax.jit(jax.value_and_grad(lm.loss)))


@functools.cache
def tiny_params(seed: int = 0):
  return models.make_language_model(models.get_model_config("tiny")).init(seed)


def load_hf_fixture(name: str):
  """Returns (hf_config dict, state dict of numpy arrays, input_ids, logits) of a fixture."""
  with np.load(os.path.join(FIXTURES, name + ".npz")) as z:
    hf_config = json.loads(str(z["config_json"]))
    state_dict = {k[len("param."):]: z[k] for k in z.files if k.startswith("param.")}
    return hf_config, state_dict, z["input_ids"], z["logits"]
