"""halos_jax.optim: server rules and worker optimizers as pure, jittable Optax pieces.

Works on any pytree; knows nothing of time, models or the replay. Server transforms take a
pseudo-gradient g = x_start - x_end and return updates to add (`optax.apply_updates`).
Math and usage: docs/optimizers.md.
"""
from halos_jax.optim.delayed_nesterov import DelayedNesterovState
from halos_jax.optim.delayed_nesterov import delayed_nesterov
from halos_jax.optim.delayed_nesterov import delayed_nesterov_from_base_lr
from halos_jax.optim.halos import GPSState
from halos_jax.optim.halos import LPSState
from halos_jax.optim.halos import gps_apply
from halos_jax.optim.halos import gps_init
from halos_jax.optim.halos import lps_delta
from halos_jax.optim.halos import lps_init
from halos_jax.optim.halos import lps_merge
from halos_jax.optim.halos import lps_receive
from halos_jax.optim.outer import diloco_outer
from halos_jax.optim.outer import mean_over_leading_axis
from halos_jax.optim.outer import mean_pseudo_gradient
from halos_jax.optim.outer import pseudo_gradient
from halos_jax.optim.worker import round_learning_rates
from halos_jax.optim.worker import warmup_cosine_schedule
from halos_jax.optim.worker import rank_decay_mask
from halos_jax.optim.worker import worker_adamw
from halos_jax.optim.worker import worker_sgd

__all__ = [
    "DelayedNesterovState",
    "GPSState",
    "LPSState",
    "delayed_nesterov",
    "delayed_nesterov_from_base_lr",
    "diloco_outer",
    "gps_apply",
    "gps_init",
    "lps_delta",
    "lps_init",
    "lps_merge",
    "lps_receive",
    "mean_over_leading_axis",
    "mean_pseudo_gradient",
    "pseudo_gradient",
    "rank_decay_mask",
    "round_learning_rates",
    "warmup_cosine_schedule",
    "worker_adamw",
    "worker_sgd",
]
