"""Shared fixtures: tiny params, a project folder to run stages in, and one tiny real run."""
import contextlib
import copy
import os
import shutil
from pathlib import Path

import pytest
import yaml

ROOT = Path(__file__).resolve().parent.parent

# A few hundred real digits at 32 px: every stage runs in seconds.
TINY_PARAMS = yaml.safe_load((ROOT / "params.yaml").read_text())
TINY_PARAMS["data"].update(train_size=300, test_size=200, image_size=32)
TINY_PARAMS["train"].update(epochs=2, batch_size=50, eval_batch_size=100)
TINY_PARAMS["extract_features"].update(batch_size=100)
TINY_PARAMS["plot"].update(dpi=50)


def tiny_params(**sections):
    """TINY_PARAMS with some keys changed: tiny_params(train={"epochs": 1})."""
    params = copy.deepcopy(TINY_PARAMS)
    for section, values in sections.items():
        params[section].update(values)
    return params


def write_params(folder, params):
    (Path(folder) / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))


@contextlib.contextmanager
def working_dir(folder):
    previous = os.getcwd()
    os.chdir(folder)
    try:
        yield Path(folder)
    finally:
        os.chdir(previous)


def run_main(stage_main):
    """Run a stage's main() the way its script does; return the exit status (0 on success)."""
    from stages.common import run_stage
    try:
        run_stage(stage_main)
    except SystemExit as exc:
        return exc.code
    return 0


@pytest.fixture(scope="session")
def tiny_run(tmp_path_factory):
    """A folder holding every stage's outputs from one tiny real run (do not modify it)."""
    from stages import extract_features, plot, prepare_data, rof_sweep, train
    folder = tmp_path_factory.mktemp("tiny_run")
    write_params(folder, TINY_PARAMS)
    with working_dir(folder):
        for stage in (prepare_data, train, extract_features, rof_sweep, plot):
            assert run_main(stage.main) == 0, stage.__name__
    return folder


@pytest.fixture
def project(tmp_path, monkeypatch, tiny_run):
    """A fresh working folder holding a copy of the tiny run, as the current directory."""
    for name in ("params.yaml", "data", "artifacts"):
        source = tiny_run / name
        (shutil.copytree if source.is_dir() else shutil.copy)(source, tmp_path / name)
    monkeypatch.chdir(tmp_path)
    return tmp_path
