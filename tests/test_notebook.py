"""examples/explore.ipynb, executed on the tiny run: it runs without error, shows the unit with
the highest dissection IoU as units.csv has it, recomputes the same dissection answer through
netunits.api on the whole (tiny) probe set, and shows two figures; without the checkpoint and
the probe set (DVC outputs) it shows the committed answers and says what it skipped. Both run
the tiny run, so both are slow (conftest)."""
import os
import re
import shutil

import nbformat
from nbclient import NotebookClient

from conftest import ROOT
from netunits.files import read_csv

NOTEBOOK = ROOT / "examples/explore.ipynb"


def stream_text(notebook):
    return "".join(output.get("text", "") for cell in notebook.cells if cell.cell_type == "code"
                   for output in cell.outputs if output.output_type == "stream")


def pictures(notebook):
    return [output for cell in notebook.cells if cell.cell_type == "code" for output in cell.outputs
            if "image/png" in output.get("data", {})]


def test_committed_without_outputs():
    notebook = nbformat.read(NOTEBOOK, as_version=4)
    assert all(not cell.outputs and cell.execution_count is None
               for cell in notebook.cells if cell.cell_type == "code")


def execute(run_dir, monkeypatch):
    """The notebook, run as Jupyter runs it (from examples/) on the run in `run_dir`."""
    monkeypatch.setenv("NETUNITS_RUN_DIR", str(run_dir))
    monkeypatch.delenv("NETUNITS_UNIT", raising=False)
    monkeypatch.delenv("NETUNITS_PROBE_IMAGES", raising=False)
    # the kernel imports this checkout's netunits, whatever the environment has installed
    monkeypatch.setenv("PYTHONPATH", os.pathsep.join(filter(None, (str(ROOT), os.environ.get("PYTHONPATH")))))
    notebook = nbformat.read(NOTEBOOK, as_version=4)
    NotebookClient(notebook, timeout=120, kernel_name="python3",
                   resources={"metadata": {"path": str(ROOT / "examples")}}).execute()
    return notebook


def test_the_notebook_runs_on_a_tiny_run(tiny_run, monkeypatch):
    notebook = execute(tiny_run, monkeypatch)
    text = stream_text(notebook)

    units = read_csv(tiny_run / "artifacts/units.csv", numeric=False)
    ious = [float(v) for v in units["iou"]]
    unit = max(range(len(ious)), key=lambda u: (ious[u], -u))
    listed = re.search(rf"^unit {unit}:\n((?:  .*\n)+)", text, re.M)
    assert listed, text
    shown = dict((line.split(None, 1) + [""])[:2] for line in listed.group(1).splitlines())
    assert shown == {key: values[unit] for key, values in units.items()}

    roles = read_csv(tiny_run / "artifacts/rof/unit_roles.csv", numeric=False)
    assert f"unit {unit}: rank {roles['rank_train'][unit]} (train), {roles['rank_test'][unit]} (test)" in text

    n_probe = re.search(r"dissected layer4 on (\d+) of (\d+) probe images", text)
    assert n_probe and n_probe.group(1) == n_probe.group(2) == "60", text
    committed = read_csv(tiny_run / "artifacts/dissect/layers/layer4.csv", numeric=False)
    assert f"recomputed: {committed['concept'][unit]} IoU {committed['iou'][unit]};" in text
    assert "same answer as the committed table: True" in text
    assert len(pictures(notebook)) == 2            # the ROF curves and the unit's strip


def test_without_the_checkpoint_it_shows_the_committed_answers_and_says_what_it_skipped(tiny_run, tmp_path,
                                                                                          monkeypatch):
    shutil.copy(tiny_run / "params.yaml", tmp_path / "params.yaml")
    shutil.copytree(tiny_run / "artifacts", tmp_path / "artifacts",
                    ignore=lambda folder, names: ["model.pt"] if folder.endswith("train") else [])
    notebook = execute(tmp_path, monkeypatch)
    text = stream_text(notebook)
    assert f"skipped: {tmp_path / 'artifacts/train/model.pt'}, {tmp_path / 'data/probe/probe.pt'} missing" in text
    assert "recomputed" not in text
    assert len(pictures(notebook)) == 1            # the ROF curves
