"""Shared fixtures and helpers: tiny params, a folder holding one tiny real run, and the one
scratch git + DVC repository helper the pipeline, study and benchmark tests use."""
import contextlib
import copy
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

ROOT = Path(__file__).resolve().parent.parent
BIN = Path(sys.executable).parent
ENV = {**os.environ, "PATH": f"{BIN}{os.pathsep}{os.environ['PATH']}", "GIT_AUTHOR_NAME": "t",
       "GIT_AUTHOR_EMAIL": "t@t", "GIT_COMMITTER_NAME": "t", "GIT_COMMITTER_EMAIL": "t@t"}

# A few hundred real digits at 32 px: every stage runs in seconds.
TINY_PARAMS = yaml.safe_load((ROOT / "params.yaml").read_text())
TINY_PARAMS["data"].update(train_size=300, test_size=200, image_size=32)
TINY_PARAMS["train"].update(epochs=2, batch_size=50, eval_batch_size=100)
TINY_PARAMS["extract_features"].update(batch_size=100)
# at 32 px layer4 of the ResNet18 is 1 x 1 (no spatial maps); layer3 is 2 x 2
TINY_PARAMS["layer_rof"].update(layers=["layer3"], k_step=64)
TINY_PARAMS["plot"].update(dpi=50)
TINY_PARAMS["probe"].update(size=60, mask_size=16)
TINY_PARAMS["dissect"].update(batch_size=30)
TINY_PARAMS["compose"].update(batch_size=30)
TINY_PARAMS["clip_dissect"].update(soft_wpmi_top_k=10, wpmi_top_k=5, batch_size=30)  # 60 probe images
TINY_PARAMS["ablate"].update(images_per_class=2)
TINY_PARAMS["compare"].update(train_seeds=[1], batch_size=30)
TINY_PARAMS["featurevis"].update(n_units=6, steps=4)          # 6 units covering the roles, 4 Adam steps


def tiny_params(**sections):
    """TINY_PARAMS with some keys changed: tiny_params(train={"epochs": 1})."""
    params = copy.deepcopy(TINY_PARAMS)
    for section, values in sections.items():
        params[section].update(values)
    return params


def write_params(folder, params, name="params.yaml"):
    (Path(folder) / name).write_text(yaml.safe_dump(params, sort_keys=False))


@contextlib.contextmanager
def working_dir(folder):
    previous = os.getcwd()
    os.chdir(folder)
    try:
        yield Path(folder)
    finally:
        os.chdir(previous)


def run_main(stage_main, *args):
    """Run a stage's main() the way its script does, with these command-line arguments; return
    the exit status (0 on success)."""
    from netunits.runtime import run_stage
    try:
        run_stage(stage_main, list(args))
    except SystemExit as exc:
        return exc.code
    return 0


# --------------------------------------------------------------------------------------------
# a scratch git + DVC repository holding a copy of the project's code
# --------------------------------------------------------------------------------------------
def sh(repo, *args, check=True, env=None):
    result = subprocess.run(list(args), cwd=repo, env=env or ENV, capture_output=True, text=True)
    if check and result.returncode != 0:
        raise AssertionError(f"{' '.join(args)} failed ({result.returncode}):\n{result.stdout}\n{result.stderr}")
    return result


def dvc(repo, *args, check=True):
    return sh(repo, str(BIN / "dvc"), *args, check=check)


def stages_run(output):
    """Names of the stages a DVC run ran ('study/dvc.yaml:train@0.0-1' is reported as 'train@0.0-1')."""
    return re.findall(r"Running stage '(?:[\w/.]+:)?([\w@.-]+)'", output)


def lock_hashes(repo, lock="dvc.lock"):
    """Every output's md5 as a lock file records it."""
    lock = yaml.safe_load((Path(repo) / lock).read_text())
    return {out["path"]: out["md5"] for stage in lock["stages"].values() for out in stage.get("outs", [])}


def scratch_repo(folder, params=None, study_params=None):
    """A git + DVC repository in `folder` with the project's code, dvc.yaml and the given params
    (and the study's dvc.yaml and params when `study_params` is given)."""
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    for code in ("stages", "netunits"):
        shutil.copytree(ROOT / code, folder / code, ignore=shutil.ignore_patterns("__pycache__"))
    for name in ("dvc.yaml", ".dvcignore", ".gitignore"):
        shutil.copy(ROOT / name, folder / name)
    write_params(folder, params or tiny_params())
    if study_params is not None:
        (folder / "study").mkdir()
        shutil.copy(ROOT / "study/dvc.yaml", folder / "study/dvc.yaml")
        write_params(folder / "study", study_params)
    sh(folder, "git", "init", "-q")
    dvc(folder, "init", "-q")
    dvc(folder, "config", "core.analytics", "false")
    return folder


# --------------------------------------------------------------------------------------------
# one tiny real run, shared
# --------------------------------------------------------------------------------------------
def pytest_collection_modifyitems(items):
    """Every test that reads the tiny run (directly or through `project`) is slow: building it runs
    each stage once, minutes on 2 cores."""
    for item in items:
        if "tiny_run" in getattr(item, "fixturenames", ()):
            item.add_marker(pytest.mark.slow)


@pytest.fixture(scope="session")
def tiny_run(tmp_path_factory):
    """A folder holding every stage's outputs from one tiny real run (do not modify it)."""
    from stages import (
        ablate,
        check_params,
        clip_dissect,
        compose,
        dissect,
        dissect_report,
        evaluate,
        extract_features,
        featurevis,
        influential_filters,
        plot,
        prepare_data,
        probe_concepts,
        report,
        rof_sweep,
        train,
        train_log,
    )
    folder = tmp_path_factory.mktemp("tiny_run")
    write_params(folder, TINY_PARAMS)
    with working_dir(folder):
        for stage in (check_params, prepare_data, train, train_log, extract_features, rof_sweep, influential_filters,
                      plot, probe_concepts, dissect, dissect_report, compose, clip_dissect, ablate, evaluate,
                      featurevis, report):
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
