"""A non-editable install: the wheel carries the configs and environment presets, and its
`python -m experiments.train --config=configs/...` runs from any directory."""
import json
import os
import pathlib
import shutil
import subprocess
import sys

ROOT = pathlib.Path(__file__).resolve().parents[2]


def test_the_wheel_runs_from_any_directory(tmp_path):
  src = tmp_path / "src"  # a copy: building writes build/ and *.egg-info next to the sources
  src.mkdir()
  for name in ("halos_jax", "experiments"):
    shutil.copytree(ROOT / name, src / name, ignore=shutil.ignore_patterns("__pycache__"))
  for name in ("pyproject.toml", "README.md"):
    shutil.copy(ROOT / name, src / name)
  pip = [sys.executable, "-m", "pip", "--disable-pip-version-check", "-q"]
  subprocess.run(pip + ["wheel", "--no-deps", "--no-build-isolation", "-w", str(tmp_path / "dist"),
                        str(src)], check=True, capture_output=True, timeout=300)
  (wheel,) = (tmp_path / "dist").glob("halos_jax-*.whl")
  site = tmp_path / "site"
  subprocess.run(pip + ["install", "--no-deps", "--target", str(site), str(wheel)], check=True,
                 capture_output=True, timeout=300)
  assert (site / "halos_jax" / "configs" / "envs" / "geo4.yaml").is_file()

  cwd = tmp_path / "elsewhere"  # no configs/ here: the package's own copy is used
  cwd.mkdir()
  env = {**os.environ, "PYTHONPATH": str(site), "HALOS_MALLOC_HUGEPAGES": "0"}
  where = subprocess.run([sys.executable, "-c", "import halos_jax; print(halos_jax.__file__)"],
                         cwd=cwd, env=env, capture_output=True, text=True, check=True)
  assert where.stdout.strip().startswith(str(site))
  proc = subprocess.run(
      [sys.executable, "-m", "experiments.train", "--config=configs/halos.py:quadratic",
       f"--workdir={tmp_path / 'run'}", "--config.replay.plots=False",
       "--config.replay.progress=False", "--config.total_local_steps=64"],
      cwd=cwd, env=env, capture_output=True, text=True, timeout=600)
  assert proc.returncode == 0, proc.stderr[-3000:]
  summary = json.loads((tmp_path / "run" / "summary.json").read_text())
  assert summary["algorithm"] == "halos" and summary["local_steps"] >= 64
  # A config path that exists neither here nor in the package is one error line.
  bad = subprocess.run(
      [sys.executable, "-m", "experiments.train", "--config=configs/nope.py",
       f"--workdir={tmp_path / 'bad'}"], cwd=cwd, env=env, capture_output=True, text=True,
      timeout=300)
  assert bad.returncode == 2
  assert bad.stderr.strip().splitlines() == [
      "error: --config=configs/nope.py: config file 'configs/nope.py' does not exist"]
