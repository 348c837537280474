"""The Pythia (GPT-NeoX) model family in Flax NNX, its pure functional view, and HF import."""
from halos_jax.models.config import COMPUTE_DTYPES
from halos_jax.models.config import MODEL_NAMES
from halos_jax.models.config import PythiaConfig
from halos_jax.models.config import get_model_config
from halos_jax.models.config import param_bytes
from halos_jax.models.config import param_count
from halos_jax.models.hf_import import config_from_hf
from halos_jax.models.hf_import import params_from_hf_state_dict
from halos_jax.models.lm import LanguageModel
from halos_jax.models.lm import cross_entropy
from halos_jax.models.lm import make_language_model
from halos_jax.models.pythia import Pythia
from halos_jax.models.pythia import apply_rotary
from halos_jax.models.pythia import rotary_cos_sin

__all__ = [
    "COMPUTE_DTYPES",
    "LanguageModel",
    "MODEL_NAMES",
    "Pythia",
    "PythiaConfig",
    "apply_rotary",
    "config_from_hf",
    "cross_entropy",
    "get_model_config",
    "make_language_model",
    "param_bytes",
    "param_count",
    "params_from_hf_state_dict",
    "rotary_cos_sin",
]
