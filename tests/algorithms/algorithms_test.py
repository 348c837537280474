"""halos_jax.algorithms: every module is found by name, has the whole interface, and no other
part of halos_jax knows an algorithm's name (issue 13)."""
import ast
import importlib.util
import os
import pathlib
import sys
import types

import pytest

from halos_jax import algorithms
from halos_jax import schedule

ROOT = pathlib.Path(__file__).resolve().parents[2]
PACKAGE = ROOT / "halos_jax"


def _config(name: str, arg=None):
  spec = importlib.util.spec_from_file_location(f"_cfg_{name}", ROOT / "configs" / f"{name}.py")
  module = importlib.util.module_from_spec(spec)
  spec.loader.exec_module(module)
  return module.get_config(arg)


def test_names_are_the_modules_of_the_package():
  files = sorted(p.stem for p in (PACKAGE / "algorithms").glob("*.py")
                 if not p.stem.startswith("_") and p.stem != "base")
  assert algorithms.names() == tuple(files)
  # The five of the paper at least (a new module adds itself).
  assert {"ddp", "diloco", "diloco_dynupd", "async_local_sgd", "halos"} <= set(files)


@pytest.mark.parametrize("name", algorithms.names())
def test_module_has_the_interface_and_a_config(name):
  m = algorithms.get(name)
  assert isinstance(m.SYNCHRONOUS, bool)
  assert all(isinstance(k, str) for k in m.REQUIRED_SETTINGS)
  assert isinstance(m.CONFIG_BLOCKS, dict)
  assert isinstance(m.EVALUATED_MODEL, str) and m.EVALUATED_MODEL
  assert set(m.LABELS) >= {"server_updates", "server"}
  assert m.PAPER_SPEEDUP is None or isinstance(m.PAPER_SPEEDUP, (float, str))
  assert isinstance(m.COMPARISON_REFERENCE, bool)
  for fn in ("local_H", "rescale", "make_plan", "build", "server_rules"):
    assert callable(getattr(m, fn)), fn
  config = _config(name)
  assert config.algorithm == name
  for block in m.CONFIG_BLOCKS:
    assert block in config, f"configs/{name}.py has no block {block!r}"


def test_unknown_algorithm_names_the_known_ones():
  with pytest.raises(algorithms.UnknownAlgorithm, match="halos") as e:
    algorithms.get("hallos")
  assert "'hallos'" in str(e.value)
  c = _config("halos", "runlocal")
  c.algorithm = "hallos"
  with pytest.raises(schedule.InvalidSettings, match="algorithm='hallos': must be one of"):
    schedule.ScheduleSettings.from_config(c)


def test_importing_the_scheduler_and_the_algorithms_imports_no_jax():
  # The scheduler is plain Python: a fresh interpreter builds a schedule without JAX.
  code = ("import sys\n"
          "from halos_jax import algorithms, schedule\n"
          "for n in algorithms.names(): algorithms.get(n)\n"
          "print('jax' in sys.modules)\n")
  import subprocess  # pylint: disable=g-import-not-at-top
  out = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True,
                       timeout=120, check=True)
  assert out.stdout.strip() == "False"


def _docstring_nodes(tree) -> set[int]:
  ids = set()
  for node in ast.walk(tree):
    if isinstance(node, (ast.Module, ast.ClassDef, ast.FunctionDef, ast.AsyncFunctionDef)):
      body = node.body
      if body and isinstance(body[0], ast.Expr) and isinstance(body[0].value, ast.Constant):
        ids.add(id(body[0].value))
  return ids


def test_no_algorithm_name_outside_its_module():
  # No list of names and no `== "<algorithm>"` branch: outside halos_jax/algorithms/, an
  # algorithm's name appears in no string literal except docstrings.
  # (The config files, one per algorithm, name theirs: halos_jax/configs/ is not scanned.)
  names = set(algorithms.names())
  hits = []
  for path in sorted(PACKAGE.rglob("*.py")):
    if (PACKAGE / "algorithms") in path.parents or (PACKAGE / "configs") in path.parents:
      continue
    tree = ast.parse(path.read_text())
    docs = _docstring_nodes(tree)
    for node in ast.walk(tree):
      if (isinstance(node, ast.Constant) and isinstance(node.value, str)
          and node.value in names and id(node) not in docs):
        hits.append(f"{path.relative_to(ROOT)}:{node.lineno}: {node.value!r}")
  assert not hits, "algorithm names outside halos_jax/algorithms/:\n" + "\n".join(hits)


def test_the_scan_catches_a_branch(tmp_path):
  # The scan above would find a name branch (so its silence means something).
  tree = ast.parse('def f(s):\n  """halos"""\n  return s.algorithm == "halos"\n')
  docs = _docstring_nodes(tree)
  found = [n for n in ast.walk(tree) if isinstance(n, ast.Constant) and n.value == "halos"
           and id(n) not in docs]
  assert len(found) == 1


def test_a_new_module_is_found_by_name(tmp_path, monkeypatch):
  # Adding an algorithm is adding a module: a module dropped into the package's path is listed
  # and loaded by name, with nothing registered anywhere.
  extra = tmp_path / "algorithms_extra"
  extra.mkdir()
  (extra / "async_copy.py").write_text(
      "from halos_jax.algorithms.async_local_sgd import *  # noqa: F401,F403\n"
      "from halos_jax.algorithms import async_local_sgd as _a\n"
      "SYNCHRONOUS, REQUIRED_SETTINGS = _a.SYNCHRONOUS, _a.REQUIRED_SETTINGS\n")
  monkeypatch.setattr(algorithms, "__path__", list(algorithms.__path__) + [str(extra)])
  algorithms.names.cache_clear()
  try:
    assert "async_copy" in algorithms.names()
    m = algorithms.get("async_copy")
    assert isinstance(m, types.ModuleType) and m.build is algorithms.get("async_local_sgd").build
    c = _config("async_local_sgd", "runlocal")
    c.algorithm = "async_copy"
    ours = schedule.schedule_from_config(c)
    c.algorithm = "async_local_sgd"
    ref = schedule.schedule_from_config(c)
    assert len(ours) == len(ref)
    assert (ours.columns["t"] == ref.columns["t"]).all()
  finally:
    monkeypatch.undo()
    algorithms.names.cache_clear()
    sys.modules.pop("halos_jax.algorithms.async_copy", None)
  assert "async_copy" not in algorithms.names()
  assert os.path.exists(extra / "async_copy.py")
