r"""Synchronous data parallel: every step all workers' gradients are averaged, one AdamW step.

  python -m experiments.train --config=configs/ddp.py:runlocal --workdir=runs/ddp
"""
from halos_jax import config_lib


def get_config(arg=None):
  c = config_lib.base_config("ddp")
  c.H = 1  # one step per round: a global AdamW step on the averaged gradient
  c.rescale_local_steps = False
  return config_lib.finish(c, arg)
