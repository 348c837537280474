"""What the replay trains: a `Problem` (parameters, loss, data, worker optimizer).

The replay never looks inside a problem. Any JAX model and loss can be plugged in by building a
`Problem`; two ship with halos_jax:

- `language_model_problem`: the Pythia family on the embedded corpus or the Pile, workers with
  AdamW + warmup/cosine (docs/algorithms.md 2.1);
- `quadratic_problem`: loss(x) = 0.5 * sum_i h_i (x_i - 1)^2, h = linspace(0.1, 1, dim), x0 = 0,
  workers with plain constant-lr SGD; the data blocks are ignored. Whole-run trajectories of this
  problem can be derived by hand (tests/replay/quadratic_test.py does it with a numpy loop).
"""
from __future__ import annotations

import hashlib
from typing import Any, Callable, NamedTuple, Protocol

import jax
import jax.numpy as jnp
import numpy as np
import optax

Params = Any
Batch = jax.Array  # int32 (B, T + 1) for language models


class DataSource(Protocol):
  """The data a replay needs: training blocks in stream order, and a validation set."""

  def block(self, start: int, end: int) -> np.ndarray:
    """Training sequences [start, end) of the stream, shape (end - start, ...)."""

  def validation(self) -> np.ndarray:
    """The held-out validation sequences."""

  def fingerprint(self) -> str:
    """A string identifying the data (source, tokeniser, order) for resume checks."""


class Problem(NamedTuple):
  """A trainable problem: pure functions plus a data source.

  Attributes:
    name: short name for logs ('lm:tiny', 'quadratic:16').
    init_params: () -> initial parameters x0 (a pytree of arrays).
    loss: (params, batch) -> scalar mean loss of one local step's batch.
    worker_optimizer: the workers' inner optimizer; its update takes this step's
      learning rate as keyword `learning_rate` (see halos_jax.optim.worker_adamw).
    learning_rate: optax schedule of the workers' step counter (docs/algorithms.md 2.1).
    data: the data source; block shapes are (n, *sequence_shape).
    tokens_per_sequence: tokens counted per sequence in reports (seq_len for an LM).
  """
  name: str
  init_params: Callable[[], Params]
  loss: Callable[[Params, Batch], jax.Array]
  worker_optimizer: optax.GradientTransformationExtraArgs
  learning_rate: optax.Schedule
  data: DataSource
  tokens_per_sequence: int


# ----------------------------------------------------------------------------------------------
# The quadratic.
# ----------------------------------------------------------------------------------------------


class _NoData:
  """Blocks of placeholder sequences for problems whose loss ignores the data."""

  def block(self, start: int, end: int) -> np.ndarray:
    return np.zeros((end - start, 1), np.int32)

  def validation(self) -> np.ndarray:
    return np.zeros((1, 1), np.int32)

  def fingerprint(self) -> str:
    return "no-data"


def quadratic_curvatures(dim: int) -> np.ndarray:
  """h = linspace(0.1, 1.0, dim) in float32, the quadratic's diagonal Hessian."""
  return np.linspace(0.1, 1.0, dim, dtype=np.float32)


def quadratic_problem(dim: int = 16, worker_lr: float = 0.1) -> Problem:
  """loss(x) = 0.5 * sum_i h_i (x_i - 1)^2 with x0 = 0; constant-lr SGD workers."""
  from halos_jax import optim  # pylint: disable=g-import-not-at-top

  if dim < 1:
    raise ValueError(f"quadratic.dim must be >= 1, got {dim}")
  if not worker_lr > 0:
    raise ValueError(f"quadratic.worker_lr must be > 0, got {worker_lr}")
  h = jnp.asarray(quadratic_curvatures(dim))

  def loss(params, batch):
    del batch  # the quadratic ignores the data blocks
    x = params["x"]
    return 0.5 * jnp.sum(h * (x - 1.0) ** 2)

  return Problem(
      name=f"quadratic:{dim}",
      init_params=lambda: {"x": jnp.zeros((dim,), jnp.float32)},
      loss=loss,
      worker_optimizer=optim.worker_sgd(),
      learning_rate=optax.constant_schedule(worker_lr),
      data=_NoData(),
      tokens_per_sequence=0,
  )


# ----------------------------------------------------------------------------------------------
# The language model.
# ----------------------------------------------------------------------------------------------


def language_model_problem(config) -> Problem:
  """Pythia-family LM on the configured data, AdamW workers (docs/algorithms.md 2.1, 5)."""
  from halos_jax import data as data_lib  # pylint: disable=g-import-not-at-top
  from halos_jax import models  # pylint: disable=g-import-not-at-top
  from halos_jax import optim  # pylint: disable=g-import-not-at-top

  stream = data_lib.build_stream(config.data)
  cfg = lm_model_config(config)
  if stream.vocab_size > cfg.vocab_size:
    raise ValueError(
        f"model.name={config.model.name!r} has vocab_size {cfg.vocab_size} but the data's "
        f"tokeniser ({config.data.tokenizer!r}) has {stream.vocab_size} tokens")
  if config.data.seq_len > cfg.max_seq_len:
    raise ValueError(
        f"data.seq_len={config.data.seq_len} exceeds model {config.model.name!r} "
        f"max_seq_len {cfg.max_seq_len}")
  lm = models.make_language_model(cfg)
  w = config.worker
  return Problem(
      name=f"lm:{config.model.name}",
      init_params=lambda: jax.jit(lm.init, static_argnums=0)(int(config.seed)),
      loss=lm.loss,
      worker_optimizer=lm_worker_optimizer(w, lm),
      learning_rate=optim.warmup_cosine_schedule(
          w.max_lr, w.t_warmup, w.t_max, min_lr_ratio=w.min_lr_ratio),
      data=stream,
      tokens_per_sequence=config.data.seq_len,
  )


def lm_model_config(config, name: str | None = None):
  """The PythiaConfig a run config trains: `model.name` (or `name`) with the config's
  compute_dtype and remat."""
  from halos_jax import models  # pylint: disable=g-import-not-at-top
  return models.get_model_config(name or config.model.name,
                                 compute_dtype=config.model.compute_dtype,
                                 remat=config.model.get("remat", "none"))


def lm_worker_optimizer(worker_config, lm) -> optax.GradientTransformationExtraArgs:
  """The workers' AdamW for a language model: `config.worker`'s settings, the model's decay mask."""
  from halos_jax import optim  # pylint: disable=g-import-not-at-top

  w = worker_config
  return optim.worker_adamw(b1=w.b1, b2=w.b2, eps=w.eps, weight_decay=w.weight_decay,
                            clip_norm=w.clip_norm, decay_mask=lm.decay_mask)


def make_problem(config) -> Problem:
  """The problem a config asks for (`config.problem`)."""
  if config.problem == "quadratic":
    return quadratic_problem(config.quadratic.dim, config.quadratic.worker_lr)
  if config.problem == "lm":
    return language_model_problem(config)
  raise ValueError(f"problem must be 'lm' or 'quadratic', got {config.problem!r}")


def params_sha256(params: Params) -> str:
  """sha256 over the parameters' dtype, shape and bytes, leaves in sorted key-path order."""
  leaves = jax.tree_util.tree_flatten_with_path(params)[0]
  h = hashlib.sha256()
  for path, leaf in sorted(leaves, key=lambda kv: jax.tree_util.keystr(kv[0])):
    a = np.asarray(leaf)
    h.update(jax.tree_util.keystr(path).encode())
    h.update(str(a.dtype).encode())
    h.update(str(a.shape).encode())
    h.update(np.ascontiguousarray(a).tobytes())
  return h.hexdigest()
