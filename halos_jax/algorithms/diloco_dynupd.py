"""DiLoCo + DynUpd: DiLoCo whose workers run H_w = max(1, ceil(H * s_w)) local steps.

Faster workers do more local steps, so a round waits less for the slowest one (docs/algorithms.md
2.1, 2.4). Everything else is DiLoCo's (halos_jax/algorithms/diloco.py).

References:
  Liu et al., "Asynchronous Local-SGD Training for Language Modeling", 2024 (arXiv 2401.09135).
"""
from __future__ import annotations

from halos_jax.algorithms import diloco
from halos_jax.schedule.settings import ScheduleSettings

SYNCHRONOUS = True
REQUIRED_SETTINGS = ()
CONFIG_BLOCKS = diloco.CONFIG_BLOCKS
EVALUATED_MODEL = diloco.EVALUATED_MODEL
LABELS = diloco.LABELS
PAPER_SPEEDUP = "synchronous: up to 7.5x"
COMPARISON_REFERENCE = False
SUPPORTS_FAILURES = True  # schedule/synchronous.py: policies wait and quorum

local_H = diloco.local_H
make_plan = diloco.make_plan
build = diloco.build
server_rules = diloco.server_rules


def rescale(settings: ScheduleSettings) -> bool:
  """Always: DynUpd is what this algorithm adds to DiLoCo."""
  del settings
  return True
