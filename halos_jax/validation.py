"""Every user-facing input, checked before a run starts: config, environment, data, workdir.

`validate_run(config, workdir)` is the first thing `halos_jax.train.train_and_evaluate` does;
`validate_schedule_config(config)` checks what `experiments/schedule.py` builds from (the
scheduler's fields, and every other field present, with the same rules). The command lines
themselves (flags, config files) are halos_jax/cli.py's.

Every problem is a `ConfigError` (a ValueError) whose message is one line naming the field, the
value and what is allowed, e.g. `config.K=0: must be an integer >= 1`; the first problem found
is reported. Validation reads (the environment YAML, the MMIDIDX headers) but never writes:
no folder is created and no file touched, so a rejected run leaves nothing behind.

What is checked, beyond types and ranges of every field of `config_lib.base_config` and the
algorithm's optimizer blocks (its module's CONFIG_BLOCKS, e.g. outer, ps, lps, gps):
  global_batch     a multiple of local_batch (a global iteration is whole local steps)
  worker.t_max     > worker.t_warmup (the cosine needs a non-empty decay)
  <block>.c        in [0, 1 / <block>.N] (Delayed Nesterov's activation)
  workers_per_lps  fits the regions (the algorithm's `make_plan`: an LPS's workers share one
                   region)
  env              loads (`schedule.load_environment`: preset, YAML file or mapping)
  data             `data.parse_data_config`; the MMIDIDX .idx/.bin pair opens; the embedded
                   corpus is installed; seq_len and vocabulary fit the model (problem 'lm')
  seed             in [0, 2**32): jax.random.key keeps 32 bits, larger seeds alias smaller ones
  replay.num_devices  `distributed.mesh_devices` accepts it (the only check that starts JAX)
  nonfinite        'stop' or 'skip' when present
  workdir          an existing writable folder, or creatable (nearest existing ancestor is a
                   writable folder)
"""
from __future__ import annotations

import os
import stat
from collections.abc import Mapping
from pathlib import Path
from typing import Any


from halos_jax import algorithms
from halos_jax import config_lib
from halos_jax import fields
from halos_jax.cli import error_line
from halos_jax.data import corpus as corpus_lib
from halos_jax.data import mmidx as mmidx_lib
from halos_jax.data import stream as stream_lib
from halos_jax.schedule import environment as env_lib
from halos_jax.schedule import settings as settings_lib

PROBLEMS = ("lm", "quadratic")
SEED_LIMIT = 2**32
# Vocabulary of each tokeniser without building it (a trained BPE has bpe_vocab_size tokens).
_TOKENIZER_VOCAB = {"byte": 256, "gpt2": 50_257}


class ConfigError(ValueError):
  """A config value, environment, data path or workdir that cannot be used.

  The message is one line naming the field, the value and what is allowed.
  """


# ------------------------------------------------------------------------------------------------
# Rules (halos_jax/fields.py): (predicate, what is allowed).
# ------------------------------------------------------------------------------------------------

_BOOL, _POSITIVE, _UNIT, _MOMENTUM = fields.BOOL, fields.POSITIVE, fields.UNIT, fields.MOMENTUM
_INT0, _INT1 = fields.INT0, fields.INT1
_one_of = fields.one_of

# What the scheduler reads (halos_jax.schedule.ScheduleSettings.from_config): here only which
# fields a config must hold; their values are checked by ScheduleSettings itself (the rules live
# with the settings). The optional ones are required by the algorithms that name them in
# REQUIRED_SETTINGS (K, workers_per_lps); message_bytes may be None (then: the model's size).
_SCHEDULER_REQUIRED = ("algorithm", "H", "total_local_steps", "local_batch", "global_batch",
                       "step_time_ms")
_SCHEDULER_OPTIONAL = ("rescale_local_steps", "K", "workers_per_lps", "message_bytes")
_SCHEDULER_STREAMING = ("fragments", "overlap_steps")
_MESSAGE_BYTES = fields.optional(_INT1)
# The rest of a run config (config_lib.base_config), every field required.
_RUN = (
    ("runlocal", _BOOL),
    ("alpha", _UNIT),
    ("worker.max_lr", _POSITIVE),
    ("worker.min_lr_ratio", _UNIT),
    ("worker.t_warmup", _INT0),
    ("worker.t_max", _INT1),
    ("worker.b1", _MOMENTUM),
    ("worker.b2", _MOMENTUM),
    ("worker.eps", fields.NONNEGATIVE),
    ("worker.weight_decay", fields.NONNEGATIVE),
    ("worker.clip_norm", fields.POSITIVE_OR_INF),
    ("val_interval", _INT1),
    ("val_batch", _INT1),
    ("log_interval", _INT1),
    ("checkpoint_every", _INT0),
    ("checkpoint_every_s", fields.NONNEGATIVE),
    ("checkpoint_keep", _INT1),
    ("seed", fields.integer(0, SEED_LIMIT - 1)),
    ("replay.parallel", _BOOL),
    ("replay.num_devices", _INT0),
    ("replay.sync_every", _INT1),
    ("replay.device_memory_gb", fields.NONNEGATIVE),
    ("replay.progress", _BOOL),
    ("replay.plots", _BOOL),
)
_QUADRATIC = (("quadratic.dim", _INT1), ("quadratic.worker_lr", _POSITIVE))
# The fields of each kind of server-optimizer block (an algorithm module's CONFIG_BLOCKS maps
# its blocks to these kinds).
_BLOCK_FIELDS = {
    "outer_nesterov": (("lr", _POSITIVE), ("momentum", _MOMENTUM)),
    "delayed_nesterov": (("eta", _POSITIVE), ("beta", _MOMENTUM), ("N", _INT1),
                         ("c", fields.UNIT)),
}
_OPTIONAL = (("nonfinite", _one_of(config_lib.NONFINITE_POLICIES)),
             ("micro_batch", fields.optional(_INT1)))

_MISSING, _ABSENT = object(), object()  # get(): no default given / has(): not there


def _model_config():
  """halos_jax.models.config, imported on first use (the package imports JAX and Flax)."""
  from halos_jax.models import config  # pylint: disable=g-import-not-at-top
  return config


def _model_rules():
  mc = _model_config()
  return (("model.name", _one_of(mc.MODEL_NAMES)),
          ("model.compute_dtype", _one_of(mc.COMPUTE_DTYPES)),
          ("model.remat", _one_of(mc.REMAT_POLICIES)))


_short = fields.short


def _one_line(text: Any) -> str:
  return " ".join(str(text).split())


def _fail(path: str, value: Any, allowed: str):
  raise ConfigError(f"config.{path}={_short(value)}: must be {allowed}")


class _Config:
  """Read access to a config's nested fields by dotted path, as plain values."""

  def __init__(self, config: Any):
    try:
      if hasattr(config, "to_dict") and callable(config.to_dict):
        config = config.to_dict()  # ConfigDict / FrozenConfigDict (placeholders resolved)
    except OSError as e:  # config_flags' stand-in for a config file that failed to load
      raise ConfigError(f"config: cannot be loaded: {error_line(e)}") from None
    if not isinstance(config, Mapping):
      raise ConfigError(f"config={_short(config)}: must be an ml_collections.ConfigDict "
                        "(e.g. get_config() of configs/halos.py)")
    self.d = config

  def get(self, path: str, default: Any = _MISSING) -> Any:
    node, done = self.d, []
    for part in path.split("."):
      if not isinstance(node, Mapping):
        _fail(".".join(done), node, "a block of fields (a ConfigDict)")
      if part not in node:
        if default is not _MISSING:
          return default
        raise ConfigError(f"config.{path} is missing (required; see halos_jax/config_lib.py)")
      node = node[part]
      done.append(part)
    return node

  def has(self, path: str) -> bool:
    return self.get(path, _ABSENT) is not _ABSENT

  def check(self, path: str, rule) -> Any:
    value = self.get(path)
    ok, allowed = rule
    if not ok(value):
      _fail(path, value, allowed)
    return value


# ------------------------------------------------------------------------------------------------
# The config.
# ------------------------------------------------------------------------------------------------


def _check_environment(c: _Config, required: bool) -> env_lib.Environment:
  spec = c.get("env") if required else c.get("env", "geo4")
  if not isinstance(spec, (str, os.PathLike, Mapping)):
    _fail("env", spec, f"a preset name ({', '.join(env_lib.presets())}), a path to an "
                       "environment YAML file, or a mapping")
  try:
    return env_lib.load_environment(spec)
  except env_lib.InvalidEnvironment as e:
    where = "config.env (inline mapping)" if isinstance(spec, Mapping) else "config.env"
    raise ConfigError(f"{where}: {_one_line(e)}") from None


def _check_scheduler(c: _Config, required_all: bool) -> env_lib.Environment:
  """The scheduler's fields, their consistency and the fit with the environment."""
  for path in _SCHEDULER_REQUIRED:
    c.get(path)  # present (the values: ScheduleSettings below)
  name = c.get("algorithm")
  required = algorithms.get(name).REQUIRED_SETTINGS if name in algorithms.names() else ()
  for path in _SCHEDULER_OPTIONAL:
    if required_all or path in required:
      c.get(path)
  if required_all:  # a whole run config sets K and workers_per_lps, used or not
    for path in ("K", "workers_per_lps"):
      c.check(path, _INT1)
  for path in _SCHEDULER_STREAMING:  # only the streaming algorithms' configs have them
    if path in required:
      c.get(path)
  if c.has("message_bytes"):  # the config's rule: None means "the model's size"
    c.check("message_bytes", _MESSAGE_BYTES)
  try:  # every scheduler field's own rule (halos_jax/schedule/settings.py)
    settings = settings_lib.ScheduleSettings.from_config(c.d, default_message_bytes=1)
  except settings_lib.InvalidSettings as e:
    raise ConfigError(f"config.{_one_line(e)}") from None
  local, glob = settings.local_batch, settings.global_batch
  if glob % local:
    _fail("global_batch", glob, f"a multiple of config.local_batch={local} (a global iteration "
                                "is a whole number of local steps)")
  env = _check_environment(c, required_all)
  # The algorithm's server layout on this environment (e.g. HALoS: workers_per_lps must cut the
  # workers, numbered region by region, into groups that each sit in one region).
  try:
    settings.algorithm_module.make_plan(env, settings)
  except settings_lib.InvalidSettings as e:
    raise ConfigError(f"config.{_one_line(e)}") from None
  return env


def _check_block(c: _Config, block: str, kind: str) -> None:
  if not c.has(block):
    raise ConfigError(f"config.{block} is missing: algorithm {c.get('algorithm')!r} needs it "
                      f"(fields {', '.join(k for k, _ in _BLOCK_FIELDS[kind])})")
  for key, rule in _BLOCK_FIELDS[kind]:
    c.check(f"{block}.{key}", rule)
  if kind == "delayed_nesterov":
    n, act = c.get(f"{block}.N"), c.get(f"{block}.c")
    if act > 1.0 / n:
      _fail(f"{block}.c", act, f"in [0, 1/N] = [0, {1.0 / n:g}] with config.{block}.N={n}")


def _check_data(c: _Config) -> None:
  """config.data (problem 'lm'): fields, files, and the fit with the model."""
  try:
    s = stream_lib.parse_data_config(c.get("data"))
  except (ValueError, TypeError) as e:
    raise ConfigError(_one_line(e)) from None
  if s.source == "mmidx":
    try:
      mmidx_lib.IndexedDataset(s.path)  # reads the .idx header and both files' sizes
    except (ValueError, OSError) as e:  # MMIDIDXError is a ValueError
      raise ConfigError(f"config.data.path={_short(s.path)}: {_one_line(e)}") from None
  else:
    try:
      corpus_lib.texts_dir()
    except corpus_lib.CorpusNotInstalledError as e:
      raise ConfigError(f"config.data.source={s.source!r}: {_one_line(e)}") from None
  if s.cache_dir and os.path.exists(os.path.expanduser(s.cache_dir)) and not os.path.isdir(
      os.path.expanduser(s.cache_dir)):
    _fail("data.cache_dir", s.cache_dir, "a folder (created if missing) or '' (default)")
  tok_vocab = _TOKENIZER_VOCAB.get(s.tokenizer, s.bpe_vocab_size)
  if s.source == "shakespeare" and s.vocab_size and s.vocab_size < tok_vocab:
    _fail("data.vocab_size", s.vocab_size,
          f"0 or >= the {s.tokenizer} tokeniser's {tok_vocab} tokens")
  model = _model_config().get_model_config(c.get("model.name"))
  vocab = s.vocab_size or tok_vocab
  if vocab > model.vocab_size:
    what = "config.data.vocab_size" if s.vocab_size else f"the {s.tokenizer} tokeniser's"
    _fail("model.name", c.get("model.name"),
          f"a model whose vocabulary holds the data's tokens ({what} {vocab} > "
          f"{model.vocab_size})")
  if s.seq_len > model.max_seq_len:
    _fail("data.seq_len", s.seq_len,
          f"<= {model.max_seq_len}, the max_seq_len of model {c.get('model.name')!r}")


def _check_exchange(c: _Config) -> None:
  """config.exchange (docs/codecs.md): the codecs of each kind of message and their
  parameters; absent in configs written before codecs existed (no compression then)."""
  if not c.has("exchange"):
    return
  from halos_jax.codecs import registry  # pylint: disable=g-import-not-at-top
  names = registry.CODEC_NAMES
  c.check("exchange.codec", _one_of(names))
  c.check("exchange.global_codec", _one_of(names))
  # A model is sent whole each time: no residual to feed back, so no top-k.
  c.check("exchange.model_codec", _one_of(n for n in names if n != "topk"))
  c.check("exchange.block_size", _INT1)
  c.check("exchange.fraction", fields.real(0.0, 1.0, low_open=True))
  c.check("exchange.error_feedback", fields.optional(_BOOL))
  for kind in ("upload", "download", "delta", "global"):  # derived by resolve, or set by hand
    if c.has(f"exchange.{kind}_bytes"):
      c.check(f"exchange.{kind}_bytes", fields.optional(_INT1))


def _check_devices(c: _Config) -> None:
  n = c.get("replay.num_devices")
  if n:  # asks JAX only when a count is given (0 = all devices)
    from halos_jax import distributed  # pylint: disable=g-import-not-at-top
    try:
      distributed.mesh_devices(n)  # the rule of the mesh (a multiple of the process count)
    except ValueError as e:
      raise ConfigError(f"config.{_one_line(e)}") from None


def validate_schedule_config(config: Any) -> env_lib.Environment:
  """Checks what the scheduler reads from `config` (a run config or a scheduler-only config).

  Required: algorithm, H, total_local_steps, local_batch, global_batch, step_time_ms (and the
  algorithm's REQUIRED_SETTINGS, e.g. K and workers_per_lps for 'halos'); rescale_local_steps,
  K, workers_per_lps, message_bytes are checked when present (model.name when message_bytes is
  None: the size comes from the model); env defaults to 'geo4' like
  `schedule.schedule_from_config`.
  Every other field of a run config that is present (alpha, worker.*, the algorithm's optimizer
  blocks, ...) gets the same check as in `validate_config`, so the scheduler and the trainer
  accept and reject the same values.

  Returns:
    The loaded environment.

  Raises:
    ConfigError: the first problem found.
  """
  c = _Config(config)
  env = _check_scheduler(c, required_all=False)
  if c.get("message_bytes", None) is None:  # the size comes from the model then
    c.check("model.name", _model_rules()[0][1])
  for path, rule in _RUN + _OPTIONAL:
    if c.has(path):
      c.check(path, rule)
  for block, kind in algorithms.get(c.get("algorithm")).CONFIG_BLOCKS.items():
    if c.has(block):
      _check_block(c, block, kind)
  return env


def validate_config(config: Any, *, with_problem: bool = True) -> None:
  """Checks a whole run config (config_lib.base_config + the algorithm's block).

  Args:
    config: the run config (ConfigDict or mapping).
    with_problem: False when the caller brings its own Problem: config.problem, model, data
      and quadratic are then not used and not checked.

  Raises:
    ConfigError: the first problem found (one line: field, value, what is allowed).
  """
  c = _Config(config)
  _check_scheduler(c, required_all=True)
  algorithm = algorithms.get(c.get("algorithm"))
  for path, rule in _RUN:
    c.check(path, rule)
  t_warmup, t_max = c.get("worker.t_warmup"), c.get("worker.t_max")
  if t_max <= t_warmup:
    _fail("worker.t_max", t_max, f"> config.worker.t_warmup={t_warmup}")
  for block, kind in algorithm.CONFIG_BLOCKS.items():
    _check_block(c, block, kind)
  for path, rule in _OPTIONAL:
    if c.has(path):
      c.check(path, rule)
  micro, local = c.get("micro_batch", None), c.get("local_batch")
  if micro is not None and local % micro:
    _fail("micro_batch", micro, f"a divisor of config.local_batch={local} (a local step is a "
                                "whole number of micro-batches), or None")
  if with_problem:
    _check_problem(c)
  _check_exchange(c)
  _check_devices(c)


def _check_problem(c: _Config) -> None:
  """config.problem and what it reads: model + data ('lm') or quadratic."""
  problem = c.check("problem", _one_of(PROBLEMS))
  for path, rule in _model_rules() if problem == "lm" or c.has("model") else ():
    c.check(path, rule)
  for path, rule in _QUADRATIC if problem == "quadratic" or c.has("quadratic") else ():
    c.check(path, rule)
  if problem == "lm":
    _check_data(c)


# ------------------------------------------------------------------------------------------------
# The workdir.
# ------------------------------------------------------------------------------------------------


def validate_workdir(workdir: Any) -> None:
  """Checks that `workdir` is, or can be created as, a writable folder (creates nothing).

  Raises:
    ConfigError: not a path, an existing file, not writable, or a parent that is a file or not
      writable.
  """
  if isinstance(workdir, os.PathLike):
    workdir = os.fspath(workdir)
  if not isinstance(workdir, str) or not workdir:
    raise ConfigError(f"workdir={_short(workdir)}: must be the path of a folder (created if "
                      "missing)")
  if "\0" in workdir:
    raise ConfigError(f"workdir={_short(workdir)}: must not contain a NUL character")

  def fail(why: str):
    raise ConfigError(f"workdir={_short(workdir)}: {why}")

  path = Path(os.path.expanduser(workdir)).absolute()
  for p in (path, *path.parents):
    try:
      is_dir = stat.S_ISDIR(p.stat().st_mode)
    except (FileNotFoundError, NotADirectoryError):
      continue  # does not exist (yet), or sits under a file: look further up
    except OSError as e:
      fail(f"cannot be used: {e.strerror or e} ({_short(str(p))})")
    if p == path:
      if not is_dir:
        fail("is an existing file; must be a folder (created if missing)")
      if not os.access(p, os.W_OK | os.X_OK):
        fail("the folder is not writable")
    elif not is_dir:
      fail(f"cannot be created: {str(p)!r} is a file")
    elif not os.access(p, os.W_OK | os.X_OK):
      fail(f"cannot be created: no write permission in {str(p)!r}")
    return
  fail("cannot be created: no existing parent folder")


def validate_run(config: Any, workdir: Any, *, with_problem: bool = True) -> None:
  """validate_config(config) and validate_workdir(workdir): everything before a run starts."""
  validate_config(config, with_problem=with_problem)
  validate_workdir(workdir)
