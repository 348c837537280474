"""Codecs wired into the exchanges: message sizes per kind in the schedule (timing by the bytes
a message really carries), the replay's numerics, the config's checks."""
import json

import numpy as np
import pytest

from halos_jax import codecs
from halos_jax import config_lib
from halos_jax import schedule as schedule_lib
from halos_jax import train
from halos_jax.schedule import ScheduleSettings, build_schedule, environment_from_dict
from halos_jax.validation import ConfigError, validate_config

from tiny_configs import load_config, tiny_config

ENV = environment_from_dict({"num_regions": 2, "network_bandwidths": [[100.0, 1.0], [0.5, 100.0]],
                             "worker_speeds": [[1.0, 0.5], [1.0, 0.25]]}, name="tiny")
B = 12_500_000_000  # 1e11 bits: 1,000 ms inside a region, 100,000 ms 0 -> 1


def _settings(algorithm, **kw):
  base = dict(algorithm=algorithm, H=2, total_local_steps=8, local_batch=2, global_batch=8,
              step_time_ms=1000.0, message_bytes=B, K=2, workers_per_lps=2)
  base.update(kw)
  return ScheduleSettings(**base)


def _columns(s):
  return {k: np.asarray(v) for k, v in s.columns.items()}


@pytest.mark.parametrize("algorithm", ["ddp", "diloco", "async_local_sgd", "halos"])
def test_equal_sizes_of_every_kind_are_the_plain_schedule(algorithm):
  """Per-kind sizes all equal to X time exactly like message_bytes = X (a codec's payload is
  just a message size to the scheduler)."""
  x = B // 4
  plain = build_schedule(ENV, _settings(algorithm, message_bytes=x))
  kinds = build_schedule(ENV, _settings(algorithm, upload_bytes=x, download_bytes=x,
                                        delta_bytes=x, global_bytes=x))
  a, b = _columns(plain), _columns(kinds)
  assert a.keys() == b.keys()
  for k in a:
    np.testing.assert_array_equal(a[k], b[k])


def test_a_codec_schedule_equals_the_plain_one_at_the_payload_size():
  """Async Local-SGD on geo4 (runlocal sizes) with int8 both ways is the schedule of
  message_bytes = int8's payload; DiLoCo's all-reduce with int4 likewise."""
  for name, changes in (("async_local_sgd", {"exchange.codec": "int8",
                                             "exchange.model_codec": "int8"}),
                        ("diloco", {"exchange.codec": "int4"})):
    c = load_config(name)
    for key, value in changes.items():
      c.exchange[key.split(".")[1]] = value
    c = config_lib.resolve(c)
    codec = codecs.make(changes["exchange.codec"])
    payload = codec.payload_bytes({"x": np.zeros(c.message_bytes // 4, np.float32)})
    assert c.exchange.upload_bytes == payload
    plain = load_config(name)
    plain.message_bytes = payload
    a = _columns(schedule_lib.schedule_from_config(c))
    b = _columns(schedule_lib.schedule_from_config(config_lib.resolve(plain)))
    for k in a:
      np.testing.assert_array_equal(a[k], b[k])


def test_upload_and_download_sizes_time_a_round_by_hand():
  """One Async round of worker 0 (region 0, speed 1, H = 2): download 1,000 ms (B over 100
  Gbps), compute 2,000 ms, upload of B / 4: 250 ms; arrival at 3,250 ms."""
  s = build_schedule(ENV, _settings("async_local_sgd", upload_bytes=B // 4))
  first = next(e for e in s.events if e.kind == "arrive" and e.worker == 0)
  assert first.t == 3250.0
  assert s.plan.round_ms[0] == 3250.0
  summary = schedule_lib.analysis.summarize(s)
  assert summary["message_bytes"] == {"upload": B // 4, "download": B}


def test_sizes_are_absent_from_the_header_unless_set():
  """A schedule without codecs keeps its header, hence its sha256."""
  header = build_schedule(ENV, _settings("halos")).header()
  assert "upload_bytes" not in header["settings"]
  header = build_schedule(ENV, _settings("halos", delta_bytes=7)).header()
  assert header["settings"]["delta_bytes"] == 7


@pytest.mark.parametrize("algorithm,key", [("async_local_sgd", "codec"), ("halos", "codec"),
                                           ("halos", "global_codec"), ("ddp", "codec")])
def test_topk_of_everything_is_the_uncompressed_run_bitwise(algorithm, key, tiny_env, tmp_path):
  """top-k with fraction 1 sends every entry exactly: the numbers are those of the run without
  a codec on the same schedule (values + indices are twice the bytes: the uncompressed run is
  given that message size for the kind)."""
  kind = {"codec": "upload_bytes", "global_codec": "delta_bytes"}[key]
  runs = {}
  for codec in ("none", "topk"):
    c = tiny_config(algorithm, tiny_env, problem="quadratic")
    c.exchange[key] = codec
    c.exchange.fraction = 1.0
    if codec == "none":
      c.exchange[kind] = 2 * int(c.message_bytes)
    runs[codec] = train.train_and_evaluate(c, str(tmp_path / codec))
  assert runs["topk"]["schedule_sha256"] == runs["none"]["schedule_sha256"]
  assert runs["topk"]["params_sha256"] == runs["none"]["params_sha256"]


def test_a_lossy_codec_changes_the_run_a_little(tiny_env, tmp_path):
  out = {}
  for codec in ("none", "bf16", "int4"):
    c = tiny_config("async_local_sgd", tiny_env, problem="quadratic")
    c.exchange.codec = codec
    out[codec] = train.train_and_evaluate(c, str(tmp_path / codec))
  assert out["bf16"]["params_sha256"] != out["none"]["params_sha256"]
  assert out["bf16"]["final_val_loss"] == pytest.approx(out["none"]["final_val_loss"], rel=1e-2)
  assert out["int4"]["message_bytes"]["upload"] < out["bf16"]["message_bytes"]["upload"]
  with open(tmp_path / "int4" / "summary.json") as f:
    assert json.load(f)["message_bytes"] == out["int4"]["message_bytes"]


def test_exchange_config_errors():
  c = load_config("halos")
  c.exchange.codec = "zip"
  with pytest.raises(ConfigError, match=r"config.exchange.codec='zip': must be one of none, "):
    validate_config(c)
  c = load_config("halos")
  c.exchange.model_codec = "topk"
  with pytest.raises(ConfigError, match=r"config.exchange.model_codec='topk'"):
    validate_config(c)
  c = load_config("halos")
  c.exchange.fraction = 0.0
  with pytest.raises(ConfigError, match=r"config.exchange.fraction=0.0"):
    validate_config(c)
