r"""DiLoCo: synchronous rounds of H local steps, Nesterov outer optimizer, geo4.

  python -m experiments.train --config=configs/diloco.py:runlocal --workdir=runs/diloco
"""
import ml_collections

from halos_jax import config_lib


def get_config(arg=None):
  c = config_lib.base_config("diloco")
  c.H = 32  # H: local steps per round (the same for every worker)
  c.rescale_local_steps = False
  c.outer = ml_collections.ConfigDict()
  c.outer.lr = 0.7  # outer Nesterov SGD learning rate
  c.outer.momentum = 0.9  # outer Nesterov momentum (dampening 0)
  return config_lib.finish(c, arg)
