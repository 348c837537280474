"""Executes the Colab notebooks headless (nbclient) on the tiny setting; any failing cell fails.

Each notebook runs in a fresh `python3` kernel started from this interpreter (jupyter_client
replaces a kernelspec's `python` by sys.executable, so the kernel is the .venv's Python; the
notebooks print `sys.executable` and the test checks it), in a temporary working directory, with
HALOS_NOTEBOOK_TINY=1 (2 x 2 workers, 48 local steps per run). Besides "no cell raised", the test
checks that the final assertion cell printed its marker, that the figures were displayed, and
that the committed notebooks carry no outputs and hold the same cells as their jupytext sources
(colab/*.py).
"""
import json
import os
import sys

import nbclient
import nbformat
import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
COLAB = os.path.join(ROOT, "colab")


def _execute(name, tmp_path, monkeypatch):
  """Runs colab/<name> in tmp_path; returns the executed notebook (raises on a failing cell)."""
  monkeypatch.setenv("HALOS_NOTEBOOK_TINY", "1")
  monkeypatch.setenv("JAX_PLATFORMS", "cpu")
  monkeypatch.delenv("XLA_FLAGS", raising=False)  # single device, like the other non-mesh tests
  nb = nbformat.read(os.path.join(COLAB, name), as_version=4)
  client = nbclient.NotebookClient(nb, kernel_name="python3", timeout=600,
                                   resources={"metadata": {"path": str(tmp_path)}})
  client.execute()
  return nb


def _stdout(nb) -> str:
  return "".join(out.get("text", "") for cell in nb.cells if cell.cell_type == "code"
                 for out in cell.get("outputs", []) if out.get("output_type") == "stream")


def _images(nb) -> int:
  return sum("image/png" in out.get("data", {}) for cell in nb.cells if cell.cell_type == "code"
             for out in cell.get("outputs", []))


def _check_common(nb):
  text = _stdout(nb)
  assert f"kernel python: {sys.executable}" in text, text[:2000]
  assert "not on Colab: nothing installed" in text
  tagged = [c for c in nb.cells if "parameters" in c.metadata.get("tags", [])]
  assert len(tagged) == 1 and "HALOS_NOTEBOOK_TINY" in tagged[0].source
  return text


@pytest.mark.slow  # 37-58 s with a warm compilation cache here, ~105 s cold
def test_halos_explore_runs_on_the_tiny_setting(tmp_path, monkeypatch):
  nb = _execute("halos_explore.ipynb", tmp_path, monkeypatch)
  text = _check_common(nb)
  assert "setting: TINY" in text
  assert "section 2 checks passed" in text
  assert "halos_explore: all checks passed" in text
  # Gantt, two staleness histograms, the harness's two comparison plots, the sweep plot.
  assert _images(nb) == 6
  # The harness's table (markdown output) compares the two algorithms with the paper's claim.
  tables = [out["data"]["text/markdown"] for cell in nb.cells if cell.cell_type == "code"
            for out in cell.get("outputs", []) if "text/markdown" in out.get("data", {})]
  assert len(tables) == 1 and "| async_local_sgd |" in tables[0] and "up to 2.1x" in tables[0]
  # Every run was written where the notebook says, in the temporary working directory.
  runs = tmp_path / "halos_runs"
  result = json.loads((runs / "compare" / "comparison.json").read_text())
  assert list(result["entries"]) == ["async_local_sgd", "halos"]
  for name in ("compare/async_local_sgd", "compare/halos", "halos_K1", "halos_K4",
               "halos_alpha0.0", "halos_alpha0.5"):
    summary = json.loads((runs / name / "summary.json").read_text())
    assert summary["local_steps"] >= 48, name
  assert json.loads((runs / "halos_K4" / "config.json").read_text())["K"] == 4
  assert json.loads((runs / "halos_alpha0.5" / "config.json").read_text())["alpha"] == 0.5
  assert (runs / "halos_gantt.png").stat().st_size > 0


def test_optimizers_equivalences_hold(tmp_path, monkeypatch):
  nb = _execute("optimizers.ipynb", tmp_path, monkeypatch)
  text = _check_common(nb)
  assert "optimizers: all 16 checks passed" in text
  # Bit-identical equivalences print a difference of exactly 0.
  for name in ("DN(N=1, c=0) vs optax Nesterov SGD", "diloco_outer vs optax Nesterov SGD",
               "one LPS, alpha=0 vs Async Local-SGD DN", "gps_apply vs DN on the Deltas"):
    assert f"{name}: max |difference| = 0 (tolerance 0)" in text, name
  assert _images(nb) == 2  # DN vs block means, the LR schedule


@pytest.mark.parametrize("name", ["halos_explore.ipynb", "optimizers.ipynb"])
def test_committed_notebooks_have_no_outputs(name):
  nb = nbformat.read(os.path.join(COLAB, name), as_version=4)
  nbformat.validate(nb)
  for cell in nb.cells:
    if cell.cell_type == "code":
      assert cell.outputs == [] and cell.execution_count is None, cell.id


@pytest.mark.parametrize("name", ["halos_explore", "optimizers"])
def test_notebooks_match_their_jupytext_source(name):
  # The .py is the source of truth; the .ipynb must hold exactly its cells (type and text).
  import jupytext  # pylint: disable=g-import-not-at-top
  source = jupytext.read(os.path.join(COLAB, name + ".py"))
  notebook = nbformat.read(os.path.join(COLAB, name + ".ipynb"), as_version=4)
  assert notebook.metadata["jupytext"]["formats"] == "ipynb,py:percent"

  def cells(nb):
    return [(c.cell_type, c.source) for c in nb.cells]
  assert cells(source) == cells(notebook), (
      f"colab/{name}.ipynb differs from colab/{name}.py: run "
      f"`.venv/bin/jupytext --sync colab/{name}.py`")

