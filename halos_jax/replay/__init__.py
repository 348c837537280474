"""Executes a schedule on real numbers: problems, worker rounds, server rules, checkpoints."""
from halos_jax.replay.engine import Replay
from halos_jax.replay.state import ReplayMeta, ReplayState
from halos_jax.replay.problem import (Problem, language_model_problem, make_problem,
                                      params_sha256, quadratic_problem)
from halos_jax.replay.rounds import RoundResult, RoundRunner, RoundSpec
from halos_jax.algorithms.base import ServerRules

__all__ = [
    "Problem", "Replay", "ReplayMeta", "ReplayState", "RoundResult", "RoundRunner", "RoundSpec",
    "ServerRules", "language_model_problem", "make_problem", "params_sha256", "quadratic_problem",
]
