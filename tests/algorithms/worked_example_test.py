"""docs/architecture.md's worked example: adding an algorithm is one module + one config file.

The diff in the doc is applied with `git apply` to a copy of the tree, and the new algorithm is
found by name, runs on the quadratic and gets its schedule, in a fresh interpreter.
"""
import json
import pathlib
import re
import shutil
import subprocess
import sys

ROOT = pathlib.Path(__file__).resolve().parents[2]


def _diff() -> str:
  doc = (ROOT / "docs" / "architecture.md").read_text()
  block = re.search(
      r"<!-- worked-example-begin -->\n```diff\n(.*?)```\n<!-- worked-example-end -->", doc, re.S)
  assert block, "docs/architecture.md lost its worked-example block"
  return block.group(1)


def test_the_diff_touches_exactly_two_new_files():
  files = re.findall(r"^\+\+\+ b/(\S+)$", _diff(), re.M)
  assert files == ["halos_jax/algorithms/async_nesterov.py", "halos_jax/configs/async_nesterov.py"]
  assert re.findall(r"^--- (\S+)$", _diff(), re.M) == ["/dev/null", "/dev/null"]


def test_the_worked_example_applies_and_runs(tmp_path):
  tree = tmp_path / "tree"
  tree.mkdir()
  for name in ("halos_jax", "experiments"):
    shutil.copytree(ROOT / name, tree / name,
                    ignore=shutil.ignore_patterns("__pycache__", "*.pyc"))
  (tree / "configs").symlink_to("halos_jax/configs")  # as in the checkout
  patch = tmp_path / "example.diff"
  patch.write_text(_diff())
  subprocess.run(["git", "apply", str(patch)], cwd=tree, check=True, capture_output=True)
  code = """
import json, sys, tempfile
from halos_jax import algorithms, schedule, train
sys.path.insert(0, "configs")
import async_nesterov
assert "async_nesterov" in algorithms.names(), algorithms.names()
c = async_nesterov.get_config("quadratic")
c.outer.momentum = 0.0  # SGD(0.1) on each pseudo-gradient (momentum 0.9 diverges here)
c.replay.progress = False
c.replay.plots = False
s = schedule.schedule_from_config(async_nesterov.get_config("runlocal"))
ref = async_nesterov.get_config("runlocal")
ref.algorithm = "async_local_sgd"
same_timing = bool((s.columns["t"] == schedule.schedule_from_config(ref).columns["t"]).all())
with tempfile.TemporaryDirectory() as d:
  summary = train.train_and_evaluate(c, d)
  first = json.loads(open(d + "/metrics.jsonl").readline())
print(json.dumps({"events": len(s), "final": summary["final_val_loss"], "same": same_timing,
                  "first": first.get("val_loss"), "steps": summary["local_steps"]}))
"""
  proc = subprocess.run([sys.executable, "-c", code], cwd=tree, capture_output=True, text=True,
                        timeout=600, env={"PYTHONPATH": str(tree), "PATH": "/usr/bin:/bin",
                                          "JAX_PLATFORMS": "cpu"})
  assert proc.returncode == 0, proc.stderr[-3000:]
  out = json.loads(proc.stdout.strip().splitlines()[-1])
  assert out["events"] > 16 and out["steps"] >= 1024
  assert out["same"]  # Async Local-SGD's timing, event for event
  # x0 = 0 on the quadratic: loss 4.4 at the start (tests/replay/end_to_end_test.py); the
  # new server must bring it down.
  assert out["final"] < 0.5 * 4.4
