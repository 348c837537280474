"""Fuzzed bad input: every malformed config or environment file is one error line, nothing written.

Two hypothesis tests of 300 derandomized examples each (600 malformed inputs in all) run
in-process through `train.train_and_evaluate` with `config_lib.resolve` replaced by a sentinel, so a
config that got past validation fails the test at once instead of training. Each must raise
`ConfigError` (a ValueError) whose message is one line naming the field, and leave no workdir.
A small sample then goes through `python -m experiments.train` in subprocesses (absl flag
errors included): exit status 2, a single `error:` line on stderr, no traceback, no workdir.
"""
import collections
import copy
import math
import os
import subprocess
import sys

import ml_collections
import yaml
from hypothesis import given, settings
from hypothesis import strategies as st

from halos_jax import validation
from halos_jax.schedule import environment as env_lib

import validation_testlib as vt

N_CONFIGS = 300
N_ENV_FILES = 300
FUZZ = settings(max_examples=N_CONFIGS, deadline=None, derandomize=True, database=None)

# --- Bad values per kind of field ---------------------------------------------------------------

_NOT_A_NUMBER = st.one_of(st.text(max_size=8), st.none(), st.booleans(),
                          st.lists(st.integers(), max_size=2), st.just({}))


def bad_int(low, high=None):
  """Anything but an int in [low, high]: smaller/larger ints, any float, bools, text..."""
  parts = [st.integers(max_value=low - 1), st.floats(), _NOT_A_NUMBER]
  if high is not None:
    parts.append(st.integers(min_value=high + 1))
  return st.one_of(*parts)


def bad_real(low, high=math.inf, *, low_open=False, high_open=False, allow_inf=False):
  """Anything but a number in the interval (nan always, +-inf unless allowed)."""
  below = st.floats(max_value=low).filter(lambda x: x < low or (low_open and x == low))
  parts = [below, st.just(math.nan), st.just(-math.inf), _NOT_A_NUMBER,
           st.integers(max_value=math.floor(low) - 1)]
  if high < math.inf:
    parts.append(st.floats(min_value=high).filter(lambda x: x > high or (high_open and x == high)))
  if not allow_inf:
    parts.append(st.just(math.inf))
  return st.one_of(*parts)


BAD_BOOL = st.one_of(st.integers(), st.floats(), st.text(max_size=5), st.none())


def bad_choice(options):
  return st.one_of(st.text(max_size=12).filter(lambda s: s not in options), st.integers(),
                   st.none(), st.floats())


POSITIVE, UNIT, MOMENTUM = bad_real(0, low_open=True), bad_real(0, 1), bad_real(0, 1,
                                                                              high_open=True)
# path -> strategy of invalid values (fields of every run config).
FIELDS = {
    "algorithm": bad_choice(vt.ALGORITHMS),
    "runlocal": BAD_BOOL,
    "H": bad_int(1), "K": bad_int(1), "workers_per_lps": bad_int(1),
    "total_local_steps": bad_int(1), "local_batch": bad_int(1), "global_batch": bad_int(1),
    "rescale_local_steps": BAD_BOOL,
    "alpha": UNIT,
    "step_time_ms": POSITIVE,
    "message_bytes": bad_int(1).filter(lambda v: v is not None),
    "worker.max_lr": POSITIVE, "worker.min_lr_ratio": UNIT,
    "worker.t_warmup": bad_int(0), "worker.t_max": bad_int(1),
    "worker.b1": MOMENTUM, "worker.b2": MOMENTUM,
    "worker.eps": bad_real(0), "worker.weight_decay": bad_real(0),
    "worker.clip_norm": bad_real(0, low_open=True, allow_inf=True),
    "problem": bad_choice(("lm", "quadratic")),
    "model.name": bad_choice(("tiny", "pythia-14m", "pythia-70m", "pythia-160m", "pythia-410m")),
    "model.compute_dtype": bad_choice(("float32", "bfloat16")),
    "quadratic.dim": bad_int(1), "quadratic.worker_lr": POSITIVE,
    "val_interval": bad_int(1), "val_batch": bad_int(1), "log_interval": bad_int(1),
    "checkpoint_every": bad_int(0), "checkpoint_every_s": bad_real(0),
    "checkpoint_keep": bad_int(1),
    "seed": bad_int(0, 2**32 - 1),
    "replay.parallel": BAD_BOOL, "replay.num_devices": bad_int(0),
    "replay.sync_every": bad_int(1), "replay.progress": BAD_BOOL, "replay.plots": BAD_BOOL,
    "data.source": bad_choice(("shakespeare", "mmidx")),
    "data.tokenizer": bad_choice(("byte", "bpe", "gpt2")),
    "data.path": st.one_of(st.integers(), st.none(), st.floats()),
    "data.cache_dir": st.one_of(st.integers(), st.none(), st.booleans()),
    "data.seq_len": st.one_of(bad_int(1), st.integers(257, 10**6)),  # tiny: max_seq_len 256
    "data.val_sequences": bad_int(0), "data.seed": bad_int(0),
    "data.vocab_size": st.one_of(bad_int(0), st.integers(1, 255)),  # byte tokeniser: 256
    "data.bpe_vocab_size": st.one_of(bad_int(257, 65_536)),
    "data.wrap_around": BAD_BOOL, "data.shuffle": BAD_BOOL,
    "nonfinite": bad_choice(("stop", "skip")),
}
# Fields of the algorithms' optimizer blocks.
BLOCK_FIELDS = {"eta": POSITIVE, "beta": MOMENTUM, "N": bad_int(1), "c": bad_real(0, 1)}
OUTER_FIELDS = {"lr": POSITIVE, "momentum": MOMENTUM}
BLOCKS = {"ddp": (), "diloco": ("outer",), "diloco_dynupd": ("outer",),
          "async_local_sgd": ("ps",), "halos": ("lps", "gps"), "streaming_diloco": ("outer",),
          "streaming_halos": ("lps", "gps")}
# Required fields (missing data.* fields take their defaults).
REQUIRED = [p for p in FIELDS if p not in ("message_bytes", "nonfinite")
            and not p.startswith("data.")] + ["env", "data", "message_bytes"]


def _block_paths(algorithm):
  for block in BLOCKS[algorithm]:
    for key, strategy in (OUTER_FIELDS if block == "outer" else BLOCK_FIELDS).items():
      yield f"{block}.{key}", strategy


@st.composite
def bad_configs(draw, bases, tmp):
  """(config, field the message must name): one malformation of a valid tiny config."""
  algorithm = draw(st.sampled_from(vt.ALGORITHMS))
  d = copy.deepcopy(bases[algorithm])
  kind = draw(st.sampled_from(
      ["value"] * 8 + ["block_value", "missing", "not_a_block", "missing_block", "batches",
                       "warmup", "activation", "lps_layout", "env", "vocab", "mmidx_path",
                       "unknown_data_key", "cache_dir_file", "not_a_config"]))
  if kind == "value" or (kind in ("block_value", "activation", "missing_block") and
                         not BLOCKS[algorithm]):
    path = draw(st.sampled_from(sorted(FIELDS)))
    value = draw(FIELDS[path])
    vt.set_path(d, path, value)
    return d, f"config.{path}=", f"value:{path}"
  if kind == "block_value":
    path, strategy = draw(st.sampled_from(list(_block_paths(algorithm))))
    vt.set_path(d, path, draw(strategy))
    return d, f"config.{path}=", f"block:{path}"
  if kind == "missing":
    path = draw(st.sampled_from(REQUIRED))
    vt.del_path(d, path)
    return d, f"config.{path} is missing", "missing"
  if kind == "not_a_block":
    block = draw(st.sampled_from(["worker", "model", "replay", "data", "quadratic"]))
    d[block] = draw(st.one_of(st.integers(), st.text(max_size=4), st.none()))
    return d, f"config.{block}", "not_a_block"
  if kind == "missing_block":
    block = draw(st.sampled_from(BLOCKS[algorithm]))
    del d[block]
    return d, f"config.{block} is missing", "missing_block"
  if kind == "batches":  # global_batch not a multiple of local_batch
    local = draw(st.integers(2, 64))
    d["local_batch"] = local
    d["global_batch"] = local * draw(st.integers(0, 20)) + draw(st.integers(1, local - 1))
    return d, "config.global_batch=", kind
  if kind == "warmup":  # t_max <= t_warmup
    d["worker"]["t_warmup"] = warm = draw(st.integers(1, 10**6))
    d["worker"]["t_max"] = draw(st.integers(1, warm))
    return d, "config.worker.t_max=", kind
  if kind == "activation":  # Delayed Nesterov's c > 1 / N
    blocks = [b for b in BLOCKS[algorithm] if b != "outer"]
    if not blocks:
      d["outer"]["momentum"] = draw(st.floats(1.0, 10.0))
      return d, "config.outer.momentum=", kind
    block = draw(st.sampled_from(blocks))
    n = draw(st.integers(2, 64))
    d[block]["N"] = n
    d[block]["c"] = draw(st.floats(1.0 / n, 1.0).filter(lambda c: c > 1.0 / n))
    return d, f"config.{block}.c=", kind
  if kind == "lps_layout":  # the tiny environment has 2 regions of 2 workers
    d["algorithm"] = "halos"
    for key in ("fragments", "overlap_steps"):  # a streaming base: HALoS refuses fragments
      d.pop(key, None)
    d.setdefault("lps", copy.deepcopy(bases["halos"]["lps"]))
    d.setdefault("gps", copy.deepcopy(bases["halos"]["gps"]))
    d["workers_per_lps"] = draw(st.integers(3, 10**4))
    return d, "config.workers_per_lps=", kind
  if kind == "env":
    presets = env_lib.presets()
    d["env"] = draw(st.one_of(
        st.text(max_size=20).filter(lambda s: s not in presets and not os.path.isfile(s)),
        st.text(max_size=20).map(lambda s: os.path.join(tmp, "missing", s + ".yaml")),
        st.integers(), st.none(), st.floats(), st.lists(st.integers(), max_size=2),
        st.dictionaries(st.sampled_from(["network_bandwidths", "worker_speeds", "x"]),
                        st.integers(), max_size=2)))
    return d, "config.env", kind
  if kind == "vocab":  # the data's vocabulary does not fit the tiny model's 256 tokens
    if draw(st.booleans()):
      d["data"]["tokenizer"] = draw(st.sampled_from(["gpt2", "bpe"]))
    else:
      d["data"]["vocab_size"] = draw(st.integers(257, 10**6))
    return d, "config.model.name=", kind
  if kind == "mmidx_path":  # an MMIDIDX prefix without its .idx/.bin pair
    d["data"]["source"] = "mmidx"
    d["data"]["path"] = draw(st.one_of(
        st.just(""), st.text(min_size=1, max_size=12).map(lambda s: os.path.join(tmp, s))))
    return d, "config.data.path=", kind
  if kind == "unknown_data_key":
    key = draw(st.text("abcdefghij_", min_size=1, max_size=10).filter(
        lambda k: k not in d["data"]))
    d["data"][key] = 1
    return d, "config.data has unknown key", kind
  if kind == "cache_dir_file":
    d["data"]["cache_dir"] = os.path.join(tmp, "a_file")
    return d, "config.data.cache_dir=", kind
  assert kind == "not_a_config"
  return (draw(st.one_of(st.none(), st.integers(), st.text(max_size=5),
                         st.lists(st.integers(), max_size=3))), "config=", kind)


def _env_file(tmp_path):
  path = tmp_path / "tiny.yaml"
  path.write_text(vt.TINY_ENV)
  return str(path)


def test_fuzzed_malformed_configs_are_one_error_line_and_no_workdir(tmp_path):
  env = _env_file(tmp_path)
  (tmp_path / "a_file").write_text("not a folder")
  bases = {a: vt.tiny_config(a, env).to_dict() for a in vt.ALGORITHMS}
  for d in bases.values():  # the policy key another module adds: fuzzed as an optional field
    d.setdefault("nonfinite", "stop")
  for d in bases.values():  # the unmodified bases are valid
    validation.validate_run(ml_collections.ConfigDict(d), str(tmp_path / "wd"))
  workdir = str(tmp_path / "wd")
  kinds, fields = collections.Counter(), set()

  @FUZZ
  @given(case=bad_configs(bases, str(tmp_path)))
  def check(case):
    d, field, kind = case
    config = ml_collections.ConfigDict(d) if isinstance(d, dict) else d
    vt.assert_one_line_error(config, workdir, field)
    kinds[kind.split(":")[0]] += 1
    if kind.startswith(("value:", "block:")):
      fields.add(kind)

  check()
  n = sum(kinds.values())
  print(f"\nfuzzed {n} malformed configs ({len(fields)} distinct fields given bad values; "
        f"{dict(kinds)})")
  assert n >= N_CONFIGS * 0.95, n
  assert len(fields) >= 40 and len(kinds) == 15, (fields, kinds)


# --- Environment files ------------------------------------------------------------------------


@st.composite
def valid_envs(draw):
  r = draw(st.integers(1, 3))
  pos = st.floats(0.01, 1000.0)
  return {"network_bandwidths": [[draw(pos) for _ in range(r)] for _ in range(r)],
          "num_regions": r,
          "worker_speeds": [[draw(pos) for _ in range(draw(st.integers(1, 3)))]
                            for _ in range(r)]}


BAD_NUMBERS = st.one_of(
    st.sampled_from([math.nan, math.inf, -math.inf, 0, 0.0, -0.0, None, True, False, [], {}]),
    st.floats(max_value=0.0), st.integers(max_value=0), st.text(max_size=6))


@st.composite
def bad_env_objects(draw):
  """A valid environment with one structural fault (what a YAML file could hold)."""
  e = draw(valid_envs())
  r = e["num_regions"]
  fault = draw(st.sampled_from(["bandwidth", "speed", "ragged_row", "rows", "empty_region",
                                "speeds_shape", "missing_key", "unknown_key", "num_regions",
                                "not_a_mapping"]))
  if fault == "bandwidth":
    e["network_bandwidths"][draw(st.integers(0, r - 1))][draw(st.integers(0, r - 1))] = draw(
        BAD_NUMBERS)
  elif fault == "speed":
    region = e["worker_speeds"][draw(st.integers(0, r - 1))]
    region[draw(st.integers(0, len(region) - 1))] = draw(BAD_NUMBERS)
  elif fault == "ragged_row":
    row = e["network_bandwidths"][draw(st.integers(0, r - 1))]
    if draw(st.booleans()):
      row.pop()
    else:
      row.append(1.0)
  elif fault == "rows":
    if draw(st.booleans()):
      e["network_bandwidths"].pop()
    else:
      e["network_bandwidths"].append([1.0] * r)
  elif fault == "empty_region":
    e["worker_speeds"][draw(st.integers(0, r - 1))] = []
  elif fault == "speeds_shape":
    e["worker_speeds"] = draw(st.one_of(st.just([]), st.floats(), st.text(max_size=5),
                                        st.lists(st.floats(0.1, 1), min_size=1, max_size=3)))
  elif fault == "missing_key":
    del e[draw(st.sampled_from(["network_bandwidths", "worker_speeds"]))]
  elif fault == "unknown_key":
    e[draw(st.text(min_size=1, max_size=10).filter(lambda k: k not in e))] = 1
  elif fault == "num_regions":
    e["num_regions"] = draw(st.one_of(st.integers().filter(lambda n: n != r), st.floats(),
                                      st.booleans(), st.text(max_size=3), st.none()))
  else:
    e = draw(st.one_of(st.lists(st.integers(), max_size=3), st.integers(), st.floats(),
                       st.text(max_size=10), st.none(), st.just(list(e.values()))))
  return e


@st.composite
def bad_env_files(draw):
  """(bytes of a malformed environment YAML file, inline mapping or None, kind)."""
  kind = draw(st.sampled_from(["structure"] * 4 + ["truncated", "text", "binary", "undecodable",
                                                    "empty", "syntax", "bad_tag"]))
  if kind == "structure":
    obj = draw(bad_env_objects())
    return yaml.safe_dump(obj, default_flow_style=None).encode(), obj, kind
  valid = yaml.safe_dump(draw(valid_envs()), default_flow_style=None)  # worker_speeds last
  if kind == "truncated":  # every strict prefix before the final ']' is invalid
    return valid[:draw(st.integers(0, valid.rindex("]")))].encode(), None, kind
  if kind == "text":
    return draw(st.text(max_size=200)).encode("utf-8", "surrogatepass"), None, kind
  if kind == "binary":
    return draw(st.binary(max_size=200)), None, kind
  if kind == "undecodable":
    return b"\xff" + draw(st.binary(max_size=50)) + valid.encode(), None, kind
  if kind == "empty":
    return draw(st.sampled_from(["", "\n", "   \n", "# a comment\n", "---\n", "--- \n...\n",
                                 "null\n", "~\n"])).encode(), None, kind
  if kind == "syntax":
    junk = draw(st.sampled_from(["\n  bad: [", "\n: :", "\n\t- 1", "\nworker_speeds: {",
                                 "\n- [1, 2", "\n\"unterminated", "\n&a *b", "\n!!int abc: 1"]))
    return (valid + junk).encode(), None, kind
  tag = draw(st.sampled_from(["!!int abc", "!!float x", "!!timestamp 2020-99-99",
                              "!!python/object:os.system x", "!!binary ***", "!!set 5"]))
  return f"num_regions: {tag}\n{valid}".encode(), None, kind


def test_fuzzed_environment_files_are_one_error_line_and_no_workdir(tmp_path):
  env_path = tmp_path / "env.yaml"
  workdir = str(tmp_path / "wd")
  base = vt.tiny_config("halos", str(env_path)).to_dict()
  kinds = collections.Counter()

  @settings(max_examples=N_ENV_FILES, deadline=None, derandomize=True, database=None)
  @given(case=bad_env_files())
  def check(case):
    content, obj, kind = case
    env_path.write_bytes(content)
    try:
      env_lib.load_environment(str(env_path))
      raise AssertionError(f"accepted: {content[:200]!r}")
    except env_lib.InvalidEnvironment as e:
      message = str(e)
    assert "\n" not in message and str(env_path) in message, message
    if isinstance(obj, dict):  # the same content as an inline mapping: rejected too, one line
      try:
        env_lib.load_environment(obj)
        raise AssertionError(f"accepted inline: {obj!r}")
      except env_lib.InvalidEnvironment as e:
        assert "\n" not in str(e), str(e)
    vt.assert_one_line_error(ml_collections.ConfigDict(base), workdir, "config.env")
    kinds[kind] += 1

  check()
  n = sum(kinds.values())
  print(f"\nfuzzed {n} malformed environment files ({dict(kinds)})")
  assert n >= N_ENV_FILES * 0.95, n
  assert len(kinds) == 8, kinds


# --- Through the command line -------------------------------------------------------------------


def test_command_line_errors_are_one_line_exit_2_and_no_workdir(tmp_path):
  bad_yaml = tmp_path / "bad.yaml"
  bad_yaml.write_text("network_bandwidths: [[1, 2], [3\n")
  a_file = tmp_path / "a_file"
  a_file.write_text("keep me")
  cfg = "--config=configs/halos.py:runlocal"
  cases = {  # name -> (arguments, fragment of the error line)
      "config_arg_typo": (["--config=configs/halos.py:runlocl"], "unknown config argument"),
      "no_config_file": (["--config=configs/nope.py"], "'configs/nope.py' does not exist"),
      "bad_type": ([cfg, "--config.H=abc"], "--config.H=abc"),
      "unknown_key": ([cfg, "--config.Hx=3"], "unknown config key 'Hx'"),
      "unknown_flag": ([cfg, "--bogus=1"], "bogus"),
      "beta": ([cfg, "--config.lps.beta=1.0"], "config.lps.beta=1.0: must be a number in [0, 1)"),
      "env": ([cfg, f"--config.env={bad_yaml}"], "config.env: environment file"),
  }
  procs = {}
  for name, (args, _) in cases.items():  # all at once: each is mostly interpreter start-up
    procs[name] = subprocess.Popen(
        [sys.executable, "-m", "experiments.train", *args, f"--workdir={tmp_path / name}"],
        cwd=vt.ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
  procs["workdir_under_a_file"] = subprocess.Popen(
      [sys.executable, "-m", "experiments.train", cfg, f"--workdir={a_file / 'run'}"],
      cwd=vt.ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
  cases["workdir_under_a_file"] = ([], f"{str(a_file)!r} is a file")
  for name, proc in procs.items():
    _, err = proc.communicate(timeout=120)
    lines = err.strip().splitlines()
    assert proc.returncode == 2, (name, err)
    assert "Traceback" not in err, (name, err)
    assert len(lines) == 1 and lines[0].startswith("error: "), (name, err)
    assert cases[name][1] in lines[0], (name, lines[0])
    assert not (tmp_path / name).exists(), name
  assert a_file.read_text() == "keep me"
  print(f"\n{len(procs)} command lines rejected with one `error:` line and exit status 2")
