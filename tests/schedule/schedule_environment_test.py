"""Environment loading and validation; ScheduleSettings validation and from_config."""
import math
import os

import ml_collections
import numpy as np
import pytest

from halos_jax.schedule import (Environment, InvalidEnvironment, InvalidSettings,
                                ScheduleSettings, build_schedule, environment_from_dict,
                                load_environment, presets)

GOOD = {"num_regions": 2, "network_bandwidths": [[100.0, 1.0], [0.5, 100.0]],
        "worker_speeds": [[1.0, 0.5], [2.0]]}


def test_presets_load():
  assert set(presets()) >= {"geo4", "homogeneous4x4", "single_region"}
  geo4 = load_environment("geo4")
  assert (geo4.num_regions, geo4.num_workers) == (4, 16)
  # geo4's bandwidth[2][3] is 0.127 Gbps and the fastest raw speed is 0.907 (worker 1).
  assert geo4.bandwidth_gbps[2, 3] == 0.127
  assert geo4.worker_speed[1] == 1.0
  assert geo4.worker_speed[0] == 0.232 / 0.907  # same division, exact
  assert geo4.worker_region.tolist() == [0] * 4 + [1] * 4 + [2] * 4 + [3] * 4
  assert load_environment("single_region").num_regions == 1
  h = load_environment("homogeneous4x4")
  assert np.all(h.worker_speed == 1.0)


# The specification's copy of the paper's environment, in the steering checkout beside this repo.
SHARED_GEO4 = os.path.join(os.path.dirname(__file__), "..", "..", "..", "shared", "envs",
                           "geo4.yaml")


@pytest.mark.skipif(not os.path.exists(SHARED_GEO4), reason="no shared/ beside the checkout")
def test_the_shared_geo4_file_equals_the_preset():
  assert load_environment(SHARED_GEO4) == load_environment("geo4")


def test_from_dict_normalises_and_numbers_workers_region_by_region():
  env = environment_from_dict(GOOD)
  # raw speeds 1, 0.5, 2 -> divided by the largest (2): 0.5, 0.25, 1.
  assert env.worker_speed.tolist() == [0.5, 0.25, 1.0]
  assert env.worker_region.tolist() == [0, 0, 1]
  assert list(env.region_workers(1)) == [2]
  with pytest.raises(ValueError):  # read-only arrays
    env.bandwidth_gbps[0, 0] = 3.0


def test_mapping_and_configdict_are_accepted():
  assert load_environment(GOOD) == environment_from_dict(GOOD)
  assert load_environment(ml_collections.ConfigDict(GOOD)) == environment_from_dict(GOOD)


def _bad(**changes):
  d = {k: v for k, v in GOOD.items()}
  d.update(changes)
  return d


@pytest.mark.parametrize("d, fragment", [
    (_bad(network_bandwidths=[[100.0, 1.0]]), "network_bandwidths has 1 rows"),
    (_bad(network_bandwidths=[[100.0, 1.0], [0.5]]), "row 1 must have 2 entries"),
    (_bad(network_bandwidths=[[100.0, 0.0], [0.5, 100.0]]), "network_bandwidths[0][1]"),
    (_bad(network_bandwidths=[[100.0, -1.0], [0.5, 100.0]]), "positive and finite"),
    (_bad(network_bandwidths=[[100.0, math.inf], [0.5, 100.0]]), "positive and finite"),
    (_bad(network_bandwidths=[[100.0, math.nan], [0.5, 100.0]]), "positive and finite"),
    (_bad(network_bandwidths=[[100.0, "fast"], [0.5, 100.0]]), "must be a number"),
    (_bad(worker_speeds=[[1.0], []]), "region 1 has no workers"),
    (_bad(worker_speeds=[[1.0, 0.0], [1.0]]), "worker_speeds[0][1]"),
    (_bad(worker_speeds=[[1.0, True], [1.0]]), "must be a number"),
    (_bad(worker_speeds=[]), "at least one region"),
    (_bad(num_regions=3), "num_regions is 3"),
    (_bad(num_regions=0), "num_regions must be a positive integer"),
    (_bad(bandwidths=[[1.0]]), "unknown key(s) ['bandwidths']"),
    ({"worker_speeds": [[1.0]]}, "missing key 'network_bandwidths'"),
    ([1, 2], "expected a mapping"),
])
def test_invalid_environments(d, fragment):
  with pytest.raises(InvalidEnvironment) as e:
    environment_from_dict(d)
  assert fragment in str(e.value)


def test_file_errors(tmp_path):
  with pytest.raises(InvalidEnvironment, match="unknown environment preset 'nope'.*geo4"):
    load_environment("nope")
  with pytest.raises(InvalidEnvironment, match="does not exist"):
    load_environment(tmp_path / "missing.yaml")
  bad = tmp_path / "bad.yaml"
  bad.write_text("network_bandwidths: [[1, 2], [3\n")
  with pytest.raises(InvalidEnvironment, match="malformed YAML") as e:
    load_environment(bad)
  assert "\n" not in str(e.value)  # one line
  empty = tmp_path / "empty.yaml"
  empty.write_text("")
  with pytest.raises(InvalidEnvironment, match="is empty"):
    load_environment(str(empty))
  bad_matrix = tmp_path / "m.yaml"
  bad_matrix.write_text("network_bandwidths: [[1.0, 2.0]]\nworker_speeds: [[1.0]]\n")
  with pytest.raises(InvalidEnvironment,
                     match="m.yaml': network_bandwidths row 0 must have 1 entries"):
    load_environment(bad_matrix)


def test_environment_equality_ignores_the_name():
  a = environment_from_dict(GOOD, name="a")
  b = Environment(np.array(GOOD["network_bandwidths"]), GOOD["worker_speeds"], name="b")
  assert a == b and hash(a) == hash(b)


# -- settings ------------------------------------------------------------------------------------

BASE = dict(algorithm="halos", H=8, total_local_steps=100, local_batch=64, global_batch=1024,
            step_time_ms=238.391, message_bytes=1000, rescale_local_steps=True, K=32,
            workers_per_lps=4)


@pytest.mark.parametrize("change, fragment", [
    ({"algorithm": "fedavg"}, "algorithm='fedavg': must be one of"),
    ({"H": 0}, "H=0: must be an integer >= 1"),
    ({"H": 2.5}, "H=2.5: must be an integer"),
    ({"H": True}, "H=True: must be an integer"),
    ({"total_local_steps": 0}, "total_local_steps"),
    ({"local_batch": -1}, "local_batch"),
    ({"global_batch": "1024"}, "global_batch"),
    ({"step_time_ms": 0.0}, "step_time_ms=0.0: must be a finite number > 0"),
    ({"step_time_ms": math.inf}, "step_time_ms"),
    ({"message_bytes": 2.8e8}, "message_bytes=280000000.0: must be an integer"),
    ({"rescale_local_steps": "yes"}, "rescale_local_steps='yes': must be True or False"),
    ({"K": None}, "K is required for algorithm 'halos'"),
    ({"K": 0}, "K=0: must be an integer >= 1"),
    ({"workers_per_lps": None}, "workers_per_lps is required"),
])
def test_invalid_settings(change, fragment):
  with pytest.raises(InvalidSettings) as e:
    ScheduleSettings(**{**BASE, **change})
  assert fragment in str(e.value)
  assert e.value.field == next(iter(change))  # the error names its field


def test_lps_grouping_must_fit_the_regions():
  geo4 = load_environment("geo4")
  with pytest.raises(InvalidSettings, match="workers_per_lps=3 does not divide the 16"):
    build_schedule(geo4, ScheduleSettings(**{**BASE, "workers_per_lps": 3}))
  with pytest.raises(InvalidSettings, match="LPS 0 would hold workers 0..7 from regions"):
    build_schedule(geo4, ScheduleSettings(**{**BASE, "workers_per_lps": 8}))
  # 2 per LPS fits (8 LPS, two per region); other algorithms ignore workers_per_lps.
  assert build_schedule(geo4, ScheduleSettings(**{**BASE, "workers_per_lps": 2})).num_servers == 8
  s = ScheduleSettings(**{**BASE, "algorithm": "async_local_sgd", "workers_per_lps": 3})
  assert build_schedule(geo4, s).num_servers == 1


def test_local_steps():
  s = ScheduleSettings(**{**BASE, "H": 32})
  # H_w = max(1, ceil(32 s)): s = 0.5 -> 16, 0.01 -> ceil(0.32) = 1, 1/3 -> ceil(10.67) = 11.
  assert s.local_steps([1.0, 0.5, 0.01, 1 / 3]).tolist() == [32, 16, 1, 11]
  assert ScheduleSettings(**{**BASE, "algorithm": "ddp"}).local_steps([0.5]).tolist() == [1]
  plain = ScheduleSettings(**{**BASE, "algorithm": "diloco", "rescale_local_steps": False})
  assert plain.local_steps([0.5]).tolist() == [8]
  forced = ScheduleSettings(**{**BASE, "algorithm": "diloco_dynupd",
                               "rescale_local_steps": False})
  assert forced.local_steps([0.5]).tolist() == [4]


def _config(**over):
  c = ml_collections.ConfigDict(dict(BASE))
  c.message_bytes = None
  c.env = "geo4"
  c.alpha = 0.25
  c.lps = ml_collections.ConfigDict({"eta": 0.2, "beta": 0.9})
  c.model = ml_collections.ConfigDict({"name": "pythia-70m"})
  for k, v in over.items():
    c[k] = v
  return c


def test_from_config_reads_only_the_scheduler_keys():
  s = ScheduleSettings.from_config(_config(), default_message_bytes=123)
  assert s == ScheduleSettings(**{**BASE, "message_bytes": 123})
  s = ScheduleSettings.from_config(_config(message_bytes=77), default_message_bytes=123)
  assert s.message_bytes == 77  # an explicit config value wins over the model default
  assert ScheduleSettings.from_config(dict(BASE)).message_bytes == 1000  # plain mappings too


def test_from_config_errors():
  with pytest.raises(InvalidSettings, match="message_bytes is None"):
    ScheduleSettings.from_config(_config())
  c = dict(BASE)
  del c["H"]
  with pytest.raises(InvalidSettings, match="config has no key 'H'"):
    ScheduleSettings.from_config(c)
