r"""DiLoCo + DynUpd: DiLoCo whose workers run H_w = ceil(H * s_w) local steps per round.

  python -m experiments.train --config=configs/diloco_dynupd.py:runlocal --workdir=runs/dyn
"""
import ml_collections

from halos_jax import config_lib


def get_config(arg=None):
  c = config_lib.base_config("diloco_dynupd")
  c.H = 32  # H: local steps per round of the fastest worker
  c.rescale_local_steps = True  # DynUpd: H_w = max(1, ceil(H * s_w))
  c.outer = ml_collections.ConfigDict()
  c.outer.lr = 0.7  # outer Nesterov SGD learning rate
  c.outer.momentum = 0.9  # outer Nesterov momentum (dampening 0)
  return config_lib.finish(c, arg)
