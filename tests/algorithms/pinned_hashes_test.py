"""The runs of today, pinned: restructuring the code must not move a single bit (issue 13).

Recorded on 2026-12-03 with the code of commit 321da7c (issue 18's weight-decay fix, before the
restructuring) on an Intel Sapphire Rapids host (AVX-512), by
`python -m experiments.train --config=configs/<name>.py:<arg> --workdir=...` and reading
summary.json:
- schedule_sha256 of every algorithm's config with `:runlocal` (the same schedule as
  `:quadratic`) and with no argument (the paper's configuration): plain Python and numpy float64,
  the same on every host;
- params_sha256 of every `:quadratic` run and of every `:runlocal` language-model run. XLA's CPU
  code may differ between instruction sets, so these are checked on a host of the kind that
  recorded them (AVX-512) and skipped elsewhere, with the reason. The language-model runs take
  1-2 minutes each: they run only with HALOS_PINNED_LM=1.
To re-pin after an intended change, run those commands and state in the commit why a hash moved.
streaming_diloco and streaming_halos were pinned when they were added (issue 16), the same way,
on the same kind of host.
"""
import importlib.util
import os
import pathlib

import pytest

from halos_jax import algorithms
from halos_jax import config_lib
from halos_jax import schedule
from halos_jax import train

ROOT = pathlib.Path(__file__).resolve().parents[2]

SCHEDULE_SHA256 = {
    "ddp": {
        "runlocal": "228fec2f594de5901ea46f6a6cc2718d9ed27441ea739d1b8c2237887290ea5d",
        "reference": "df44de4b7bd487ff68f3030c4e9cfdec2d1126f39b12edfa5d7e422b025fa16a",
    },
    "diloco": {
        "runlocal": "b3ba8de43f6a57d436542872d1a8bb7cc66688afc266e09c9d4ed20e9fe2bbe5",
        "reference": "eed590411f43180cddc2c07984959e2659a939d338934d0a11d425d5091537e2",
    },
    "diloco_dynupd": {
        "runlocal": "570aac452747e4d536e58dbad547463055e1d40a4fb0013e8c94616d1332c80b",
        "reference": "2104fab5e68c85dd3aa3548a99eab1dbaafdf52556b14c0ce225a1d3dcf25935",
    },
    "async_local_sgd": {
        "runlocal": "331ba6916b440df45ca508a4014c70800171d41c470bb59e3fa63205bee41c1b",
        "reference": "2d8b0cbce09eeab123001fb74c7eca1b3a28e05066b9dbcc86b1a30af935596d",
    },
    "halos": {
        "runlocal": "5bd632a5d52d92e67a820c03a5a6b1892c25df1497e9c7da90eb611c97beb3cb",
        "reference": "4a2a75272a350c34daa4b24c846eaf4139f036d23b493a6982f9ba36639dd8d1",
    },
    "streaming_diloco": {
        "runlocal": "008da35533b870d3376a924adef21443349362a1b4b6afb1daaa6a0f182fa384",
        "reference": "9694ea87eaad21da9cfeb12359250949fb05a265a5433ad16b37fb249985397b",
    },
    "streaming_halos": {
        "runlocal": "6c32b4d739cb2533cbec58d6d6d938f24b1be9e6143fcfcecd114aeaf27cbade",
        "reference": "d488d24e8c99bb9d88234cd170172727875727bc4fbd10f522ef24f787e1e5c7",
    },
}
QUADRATIC_PARAMS_SHA256 = {  # recorded on an AVX-512 host
    "ddp": "3eb64beaacb4a0347bba38d35c53a6c6b91aafc51e822e0a837d900db16ada6d",
    "diloco": "83c5700701155c034bc0c1854fdae6c9b7887cd9c984e161aff9c27ea4438f2c",
    "diloco_dynupd": "baee9a3cd8601a70ed184d17b7ed6f1368668154d424dd7f6b58d10ef279be21",
    "async_local_sgd": "9556b6438489bd98d2264dcd86ae40a0c66eaec35de0d53e5b4f52648acdd2f9",
    "halos": "3260e232c623dad6e91dad27d4fc8d8867461a082070c1cbf8896f3eafa692e4",
    "streaming_diloco": "25d9c81498c528200bf529072865092e0a8a3e52541065beb2405956ccb6ad4e",
    "streaming_halos": "a7ea4a0e0933143c7f572c28362e726a1e6a2535979b58d6671ee97ed969da2a",
}
RUNLOCAL_PARAMS_SHA256 = {  # by instruction set of the host that measured them
    "avx512": {
        "ddp": "dcbbf4e915d97f8bb9725a47d5d4992ad1caae7c0ffb8d805560dbc7380d414c",
        "diloco": "8419fbbf475264191ca4910cd48c52874b7af15f306004ed6b12c982c3f8d8e8",
        "diloco_dynupd": "dd05de8d3fcdfb6162cf5c95d583d016a8d089ba6b3abe95903ef8101e92e318",
        "async_local_sgd": "6a3a680178ee9fe50e0aedb6e7ff74fc73ce039989d035e7a7f71f6f0b014755",
        "halos": "7cbeaa6db4e6d9a878ac732b20ac79dcae673a7bfe6b787e90e54a64e360b0a3",
        "streaming_diloco": "2a18e32392fb61f64aaee942265365517921a808c43599939077f1d4a04ae64a",
        "streaming_halos": "3ffb0fabea9eea8061dce2c1707c8777f0a2538ade3028847713174918a6e047",
    },
}


def _config(name: str, arg=None):
  spec = importlib.util.spec_from_file_location(f"_pin_{name}", ROOT / "configs" / f"{name}.py")
  module = importlib.util.module_from_spec(spec)
  spec.loader.exec_module(module)
  c = module.get_config(arg)
  if c.message_bytes is None:  # what config_lib.resolve derives: Pythia-70M in fp32
    c.message_bytes = config_lib.PYTHIA_70M_BYTES
  c.replay.progress = False
  c.replay.plots = False
  return c


def _isa() -> str:
  try:
    flags = pathlib.Path("/proc/cpuinfo").read_text()
  except OSError:
    return "unknown"
  return "avx512" if " avx512f" in flags else "avx2" if " avx2" in flags else "unknown"


def test_every_algorithm_is_pinned():
  assert set(SCHEDULE_SHA256) == set(QUADRATIC_PARAMS_SHA256) == set(algorithms.names())


@pytest.mark.parametrize("name", sorted(SCHEDULE_SHA256))
@pytest.mark.parametrize("arg", ["runlocal", "reference"])
def test_schedule_sha256_unchanged(name, arg):
  c = _config(name, None if arg == "reference" else arg)
  assert schedule.schedule_from_config(c).sha256() == SCHEDULE_SHA256[name][arg]


@pytest.mark.parametrize("name", sorted(QUADRATIC_PARAMS_SHA256))
def test_quadratic_run_unchanged(name, tmp_path):
  summary = train.train_and_evaluate(_config(name, "quadratic"), str(tmp_path))
  assert summary["schedule_sha256"] == SCHEDULE_SHA256[name]["runlocal"]
  if _isa() != "avx512":
    pytest.skip(f"params pinned on an AVX-512 host; this one is {_isa()}")
  assert summary["params_sha256"] == QUADRATIC_PARAMS_SHA256[name]


@pytest.mark.skipif(os.environ.get("HALOS_PINNED_LM") != "1",
                    reason="five 1-2 minute runs: set HALOS_PINNED_LM=1")
@pytest.mark.parametrize("name", sorted(QUADRATIC_PARAMS_SHA256))
def test_runlocal_lm_run_unchanged(name, tmp_path):
  pins = RUNLOCAL_PARAMS_SHA256.get(_isa())
  if pins is None:
    pytest.skip(f"no runlocal pins for a {_isa()} host (XLA's CPU code depends on the ISA)")
  summary = train.train_and_evaluate(_config(name, "runlocal"), str(tmp_path))
  assert summary["params_sha256"] == pins[name]
