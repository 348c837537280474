"""Tests for halos_jax.runtime: the huge-page malloc re-execution and its opt-outs."""
import os
import subprocess
import sys

import pytest

from halos_jax import runtime

_ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
_THP = "/sys/kernel/mm/transparent_hugepage/enabled"


def test_env_sets_the_tunable():
  env = runtime.huge_pages_env({"PATH": "/bin"})
  if sys.platform != "linux":
    assert env is None
    return
  assert env["GLIBC_TUNABLES"] == "glibc.malloc.hugetlb=1" and env["PATH"] == "/bin"
  assert runtime.huge_pages_env(env) is None  # the re-executed process does not loop


@pytest.mark.skipif(sys.platform != "linux", reason="glibc tunables are Linux-only")
def test_env_appends_to_other_tunables_and_respects_existing_and_opt_out():
  env = runtime.huge_pages_env({"GLIBC_TUNABLES": "glibc.malloc.arena_max=2"})
  assert env["GLIBC_TUNABLES"] == "glibc.malloc.arena_max=2:glibc.malloc.hugetlb=1"
  assert runtime.huge_pages_env({"GLIBC_TUNABLES": "glibc.malloc.hugetlb=0"}) is None
  assert runtime.huge_pages_env({runtime._OPT_OUT: "0"}) is None  # pylint: disable=protected-access


_PROBE = """
import ctypes, os, resource, sys
from halos_jax import runtime
runtime.use_malloc_huge_pages()
libc = ctypes.CDLL(None)
libc.malloc.restype = ctypes.c_void_p
n = 256 * 2**20  # one mmap-backed glibc malloc (numpy would madvise huge pages itself)
before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
ctypes.memset(libc.malloc(n), 1, n)  # touch every page
faults = resource.getrusage(resource.RUSAGE_SELF).ru_minflt - before
print(os.environ.get("GLIBC_TUNABLES"), os.getpid(), faults, sys.argv[1:])
"""


def _probe(**env):
  environ = {k: v for k, v in os.environ.items()
             if k not in ("GLIBC_TUNABLES", runtime._OPT_OUT, runtime._REEXECUTED)}  # pylint: disable=protected-access
  environ.update(env)
  environ["PYTHONPATH"] = _ROOT
  proc = subprocess.Popen([sys.executable, "-c", _PROBE, "arg1", "--flag=x"], env=environ,
                          stdout=subprocess.PIPE, text=True)
  out, _ = proc.communicate(timeout=120)
  assert proc.returncode == 0
  tunables, pid, faults, argv = out.strip().split(" ", 3)
  return tunables, int(pid), int(faults), argv, proc.pid


@pytest.mark.skipif(sys.platform != "linux", reason="glibc tunables are Linux-only")
def test_reexecutes_in_place_with_the_same_arguments():
  tunables, pid, _, argv, child = _probe()
  assert tunables == runtime.HUGEPAGE_TUNABLE
  assert pid == child  # execve: same process, so signals and exit codes reach the caller
  assert argv == "['arg1', '--flag=x']"
  tunables, _, _, _, _ = _probe(HALOS_MALLOC_HUGEPAGES="0")
  assert tunables == "None"


@pytest.mark.skipif(
    not os.path.exists(_THP) or "[never]" in open(_THP).read(),
    reason="transparent huge pages are disabled on this machine")
def test_huge_pages_cut_page_faults():
  # 256 MiB touched: 65,536 faults with 4 KiB pages, ~128 with 2 MiB pages (plus a few
  # hundred for the rest of the process). Counts, not seconds: reliable on a loaded machine.
  _, _, faults_off, _, _ = _probe(HALOS_MALLOC_HUGEPAGES="0")
  _, _, faults_on, _, _ = _probe()
  assert faults_off > 60_000
  assert faults_on < 10_000
