r"""Streaming HALoS: HALoS (configs/halos.py) whose LPS <-> GPS exchanges carry one of P
fragments of the model, every K / P LPS updates (halos_jax/algorithms/streaming_halos.py).

  python -m experiments.train --config=configs/streaming_halos.py:runlocal \
    --workdir=runs/streaming_halos
With fragments=1 it is HALoS exactly.
"""
from halos_jax.configs import halos


def get_config(arg=None):
  c = halos.get_config(arg)
  c.algorithm = "streaming_halos"
  c.fragments = 2  # P: fragments (strided layers); an LPS sends one every K / P updates
  return c
