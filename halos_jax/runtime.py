"""Process setup shared by the command-line entry points (experiments/*.py).

Two things that must happen before JAX computes anything:

- `use_malloc_huge_pages()` (before JAX is imported): XLA's CPU runtime allocates each
  execution's temporaries as one large buffer (2.6 GB for a Pythia-70M step at 1 x 2048), which
  glibc maps fresh and unmaps again on every step; with 4 KiB pages that is ~850,000 page faults
  per step. With the glibc tunable `glibc.malloc.hugetlb=1` malloc asks for transparent huge
  pages on those mappings: ~8,000 faults and a 70M step about 15% faster on CPU
  (docs/performance.md). glibc reads tunables only at process start, so the process re-executes
  itself once with GLIBC_TUNABLES set (same pid, same arguments). HALOS_MALLOC_HUGEPAGES=0 turns
  this off; it is skipped where it cannot apply (not Linux/glibc, tunable already set).
- `setup_compilation_cache()`: the persistent compilation cache.
"""
import os
import platform
import sys

HUGEPAGE_TUNABLE = "glibc.malloc.hugetlb=1"
_OPT_OUT = "HALOS_MALLOC_HUGEPAGES"
_REEXECUTED = "_HALOS_MALLOC_REEXECUTED"  # set in the re-executed process: never a second time


def huge_pages_env(environ=None) -> dict | None:
  """The environment to re-execute with, or None when no re-execution is wanted."""
  environ = dict(os.environ if environ is None else environ)
  if environ.get(_OPT_OUT, "1") == "0" or _REEXECUTED in environ or sys.platform != "linux":
    return None
  if platform.libc_ver()[0] != "glibc":
    return None
  tunables = environ.get("GLIBC_TUNABLES", "")
  if "glibc.malloc.hugetlb" in tunables:  # already set, by us or by the user
    return None
  environ["GLIBC_TUNABLES"] = f"{tunables}:{HUGEPAGE_TUNABLE}" if tunables else HUGEPAGE_TUNABLE
  environ[_REEXECUTED] = "1"
  return environ


def use_malloc_huge_pages():
  """Re-executes this process with huge-page malloc (see the module docstring); else returns."""
  environ = huge_pages_env()
  if environ is None or "jax" in sys.modules:  # called late: do not redo the work so far
    return
  argv = [sys.executable] + sys.orig_argv[1:]
  sys.stdout.flush()
  sys.stderr.flush()
  try:
    os.execve(sys.executable, argv, environ)
  except OSError:  # cannot re-execute (unusual sandbox): run on with normal pages
    return


def setup_compilation_cache():
  """Reuses compiled programs across runs (same executables, same bits).

  JAX_COMPILATION_CACHE_DIR overrides the location (default ~/.cache/halos_jax/jax); an empty
  value turns the cache off.
  """
  cache = os.environ.get("JAX_COMPILATION_CACHE_DIR",
                         os.path.expanduser("~/.cache/halos_jax/jax"))
  if cache:
    import jax  # pylint: disable=g-import-not-at-top
    jax.config.update("jax_compilation_cache_dir", cache)
    jax.config.update("jax_persistent_cache_min_compile_time_secs", 0.5)


def cpu_line() -> str:
  """The CPU model and ISA flags that matter here (Linux /proc/cpuinfo; else platform)."""
  model, flags = platform.processor() or platform.machine(), set()
  try:
    with open("/proc/cpuinfo") as f:
      for line in f:
        if line.startswith("model name") and ":" in line:
          model = line.split(":", 1)[1].strip()
        elif line.startswith("flags") and ":" in line:
          flags = set(line.split(":", 1)[1].split())
          break
  except OSError:
    pass
  isa = [f for f in ("sse4_2", "avx", "avx2", "avx512f", "amx_tile") if f in flags]
  return f"cpu: {model} ({platform.machine()}; {', '.join(isa) or 'ISA flags unknown'})"
