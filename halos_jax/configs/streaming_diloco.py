r"""Streaming DiLoCo (Douillard et al., 2025): DiLoCo synchronised in P fragments, overlapped.

  python -m experiments.train --config=configs/streaming_diloco.py:runlocal \
    --workdir=runs/streaming_diloco
With fragments=1, overlap_steps=0, alpha=1 it is DiLoCo (configs/diloco.py) exactly.
"""
import ml_collections

from halos_jax import config_lib


def get_config(arg=None):
  c = config_lib.base_config("streaming_diloco")
  c.H = 32  # H: local steps between two outer steps of the same fragment
  c.rescale_local_steps = False  # all workers run every segment together (no DynUpd)
  c.fragments = 2  # P: fragments (strided layers), one synchronised every H / P local steps
  c.overlap_steps = 8  # tau: local steps the all-reduce of a fragment overlaps (< H / P);
  # on geo4 a Pythia-70M half all-reduces in about 8 steps of the slowest worker
  c.alpha = 0.5  # alpha: weight of the GLOBAL fragment when a worker mixes it in
  c.outer = ml_collections.ConfigDict()
  c.outer.lr = 0.7  # outer Nesterov SGD learning rate (DiLoCo's)
  c.outer.momentum = 0.9  # outer Nesterov momentum (dampening 0)
  return config_lib.finish(c, arg)
