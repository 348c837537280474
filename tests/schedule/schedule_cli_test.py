"""experiments/schedule.py end to end, in subprocesses (absl flags are process-global)."""
import json
import os
import subprocess
import sys

import pytest

from halos_jax.schedule import read_jsonl

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

TINY_YAML = """\
network_bandwidths:
  - [100.0, 1.0]
  - [0.5, 100.0]
worker_speeds:
  - [1.0, 0.5]
  - [1.0, 0.25]
"""

CONFIG = '''\
import ml_collections

def get_config():
  c = ml_collections.ConfigDict()
  c.algorithm = "halos"
  c.env = {env!r}
  c.H = 2
  c.rescale_local_steps = False
  c.K = 2
  c.alpha = 0.25  # not a scheduler setting: ignored
  c.workers_per_lps = 2
  c.total_local_steps = 10
  c.local_batch = 2
  c.global_batch = 8
  c.step_time_ms = 1000.0
  c.message_bytes = {message_bytes}
  c.model = ml_collections.ConfigDict({{"name": "tiny"}})
  return c
'''


@pytest.fixture
def workdir(tmp_path):
  (tmp_path / "tiny.yaml").write_text(TINY_YAML)
  (tmp_path / "cfg.py").write_text(CONFIG.format(env=str(tmp_path / "tiny.yaml"),
                                                 message_bytes=12_500_000_000))
  (tmp_path / "cfg_default_bytes.py").write_text(CONFIG.format(env=str(tmp_path / "tiny.yaml"),
                                                               message_bytes=None))
  (tmp_path / "bad.yaml").write_text("network_bandwidths: [[1, 2], [3\n")
  (tmp_path / "out").mkdir()
  return tmp_path


def _run(*args):
  return subprocess.run([sys.executable, "-m", "experiments.schedule", *args], cwd=ROOT,
                        capture_output=True, text=True, timeout=120)


def test_writes_everything_and_prints_the_summary(workdir):
  out = workdir / "out"
  r = _run(f"--config={workdir / 'cfg.py'}", f"--out={out / 's.jsonl'}",
           f"--summary_json={out / 'summary.json'}", f"--gantt={out / 'g.png'}",
           f"--staleness={out / 'h.png'}")
  assert r.returncode == 0, r.stderr
  assert sorted(p.name for p in out.iterdir()) == ["g.png", "h.png", "s.jsonl", "summary.json"]
  summary = json.loads((out / "summary.json").read_text())
  # The hand-derived tiny HALoS run (schedule_builders_test.test_halos): stop at 13,000 ms
  # after 2 GPS updates counting 10 local steps.
  assert (summary["simulated_time_ms"], summary["server_updates"], summary["local_steps"]) == (
      13000.0, 2, 10)
  assert summary["schedule_sha256"] == read_jsonl(out / "s.jsonl").sha256()
  assert "13,000.000 ms" in r.stdout and summary["schedule_sha256"] in r.stdout
  assert summary["link_bytes"]["0->0"] == 15 * 12_500_000_000  # see schedule_analysis_test


def test_overrides(workdir):
  r = _run(f"--config={workdir / 'cfg.py'}", "--config.total_local_steps=4",
           f"--summary_json={workdir / 'out' / 'summary.json'}")
  assert r.returncode == 0, r.stderr
  # The first GPS apply (7,000 ms) already counts 4 local steps.
  summary = json.loads((workdir / "out" / "summary.json").read_text())
  assert (summary["simulated_time_ms"], summary["server_updates"]) == (7000.0, 1)


def test_message_bytes_default_comes_from_the_model(workdir):
  r = _run(f"--config={workdir / 'cfg_default_bytes.py'}", f"--out={workdir / 'out' / 's.jsonl'}")
  assert r.returncode == 0, r.stderr
  from halos_jax.models import get_model_config, param_bytes  # pylint: disable=g-import-not-at-top
  expected = param_bytes(get_model_config("tiny"))
  assert read_jsonl(workdir / "out" / "s.jsonl").settings.message_bytes == expected


def test_the_projects_configs_run(workdir):
  r = _run(f"--config={ROOT}/configs/diloco_dynupd.py", "--config.total_local_steps=3000",
           "--config.message_bytes=281706496",
           f"--summary_json={workdir / 'out' / 'summary.json'}")
  assert r.returncode == 0, r.stderr
  # 3,000 steps at 325 per round -> 10 rounds of 41,660.29 ms (see schedule_reference_test).
  assert json.loads((workdir / "out" / "summary.json").read_text())["server_updates"] == 10


@pytest.mark.parametrize("extra, fragment", [
    (["--config.env=nope"], "unknown environment preset 'nope'"),
    (["--config.env={bad}"], "malformed YAML"),
    (["--config.H=0"], "config.H=0: must be an integer >= 1"),
    (["--config.workers_per_lps=3"], "workers_per_lps=3 does not divide"),
    (["--config.nokey=1"], "unknown config key"),
    (["--gantt_until_ms=-1"], "--gantt_until_ms must be > 0"),
])
def test_bad_input_is_one_error_line_and_no_output(workdir, extra, fragment):
  out = workdir / "out"
  extra = [a.format(bad=workdir / "bad.yaml") for a in extra]
  r = _run(f"--config={workdir / 'cfg.py'}", *extra, f"--out={out / 's.jsonl'}",
           f"--summary_json={out / 'summary.json'}", f"--gantt={out / 'g.png'}")
  assert r.returncode == 2
  lines = r.stderr.strip().splitlines()
  assert len(lines) == 1 and lines[0].startswith("error: ") and fragment in lines[0], r.stderr
  assert list(out.iterdir()) == []


@pytest.mark.parametrize("extra, fragment", [
    (["--config.alpha=1.5"], "config.alpha=1.5: must be a number in [0, 1]"),
    (["--config.lps.beta=1.0"], "config.lps.beta=1.0: must be a number in [0, 1)"),
    (["--config.worker.max_lr=-1.0"], "config.worker.max_lr=-1.0: must be a finite number > 0"),
])
def test_the_scheduler_rejects_what_the_trainer_rejects(workdir, extra, fragment):
  # Fields the schedule does not read are checked too, as experiments.train checks them.
  r = _run("--config=configs/halos.py", *extra, f"--out={workdir / 'out' / 's.jsonl'}")
  assert r.returncode == 2
  lines = r.stderr.strip().splitlines()
  assert len(lines) == 1 and lines[0] == "error: " + fragment, r.stderr
  assert list((workdir / "out").iterdir()) == []
