r"""HALoS (Kim et al., ICML 2025): 4 LPS x 4 workers on geo4, GPS in region 0.

Reference run (Pythia-70M on the pre-tokenised Pile, see docs/scale.md):
  python -m experiments.train --config=configs/halos.py --workdir=runs/halos \
    --config.data.path=/data/pile/pile_deduped_pythia_preshuffled
Seconds-to-minutes run on a laptop (tiny model, embedded corpus, the paper's timing):
  python -m experiments.train --config=configs/halos.py:runlocal --workdir=runs/halos_local
Hand-checkable toy problem:  --config=configs/halos.py:quadratic
"""
import ml_collections

from halos_jax import config_lib


def get_config(arg=None):
  c = config_lib.base_config("halos")
  c.H = 8  # H: local steps per worker round, rescaled by speed (H_w = ceil(H * s_w))
  c.rescale_local_steps = True
  c.K = 32  # K: LPS updates between Deltas (counted from the last merge)
  c.alpha = 0.25  # alpha: LPS merge weight of the global model
  c.workers_per_lps = 4  # 4 LPS x 4 workers, one LPS per region
  c.lps = ml_collections.ConfigDict()
  c.lps.eta = 0.2  # eta_l: LPS DN base lr (the DN lr is eta_l * N_l)
  c.lps.beta = 0.9  # beta_l: LPS momentum
  c.lps.N = 16  # N_l: LPS DN buffer size
  c.lps.c = 0.0  # DN activation c
  c.gps = ml_collections.ConfigDict()
  c.gps.eta = 0.15  # eta_g: GPS DN base lr (the DN lr is eta_g * N_g)
  c.gps.beta = 0.5  # beta_g: GPS momentum
  c.gps.N = 2  # N_g: GPS DN buffer size
  c.gps.c = 0.0  # DN activation c
  return config_lib.finish(c, arg)
