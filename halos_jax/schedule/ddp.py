"""Synchronous data parallel (HALOS.md 2.3): one global step per round, H = 1.

Every step all W workers compute a gradient on their share (local_batch sequences each) of the
global batch, the gradients are all-reduced and averaged, and one AdamW step is applied:
    step time = step_time_ms / min_w s_w + 2 (W - 1) / W * B * 8 / (b* 1e9) * 1e3.
The events are DiLoCo's with H = 1 (`start`, `arrive`, `sync` per step); the "result" of a
round is a gradient, which the replay averages at the sync.
"""
from __future__ import annotations

from halos_jax.schedule import events as ev
from halos_jax.schedule.diloco import build_synchronous
from halos_jax.schedule.environment import Environment
from halos_jax.schedule.settings import ScheduleSettings


def build(env: Environment, settings: ScheduleSettings) -> ev.Schedule:
  """The DDP schedule of (env, settings); settings.H and rescale_local_steps are ignored."""
  return build_synchronous(env, settings)
