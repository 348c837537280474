r"""Async Local-SGD (DN server + DynUpd workers), one parameter server in region 0, geo4.

  python -m experiments.train --config=configs/async_local_sgd.py:runlocal --workdir=runs/async
"""
import ml_collections

from halos_jax import config_lib


def get_config(arg=None):
  c = config_lib.base_config("async_local_sgd")
  c.H = 32  # H: local steps per worker round, rescaled by speed
  c.rescale_local_steps = True
  c.ps = ml_collections.ConfigDict()
  c.ps.eta = 0.05  # eta: PS DN base lr (the DN lr is eta * N)
  c.ps.beta = 0.9  # beta: PS momentum
  c.ps.N = 32  # N: PS DN buffer size
  c.ps.c = 0.0  # DN activation c
  return config_lib.finish(c, arg)
