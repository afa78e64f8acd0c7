"""The whole pipeline through DVC, in a temporary git + DVC repository with tiny params."""
import json
import os
import re
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import yaml

from conftest import ROOT, tiny_params, write_params

STAGES = ["prepare_data", "train", "extract_features", "rof_sweep", "plot"]
BIN = Path(sys.executable).parent
ENV = {**os.environ, "PATH": f"{BIN}{os.pathsep}{os.environ['PATH']}", "GIT_AUTHOR_NAME": "t",
       "GIT_AUTHOR_EMAIL": "t@t", "GIT_COMMITTER_NAME": "t", "GIT_COMMITTER_EMAIL": "t@t"}


def sh(repo, *args, check=True):
    result = subprocess.run(list(args), cwd=repo, env=ENV, capture_output=True, text=True)
    if check and result.returncode != 0:
        raise AssertionError(f"{' '.join(args)} failed ({result.returncode}):\n{result.stdout}\n{result.stderr}")
    return result


def dvc(repo, *args, check=True):
    return sh(repo, str(BIN / "dvc"), *args, check=check)


def stages_run(output):
    """Names of the stages a DVC run ran ('study/dvc.yaml:run@0.0-1' is reported as 'run@0.0-1')."""
    return re.findall(r"Running stage '(?:[\w/.]+:)?([\w@.-]+)'", output)


def lock_hashes(repo):
    """Every output's md5 as dvc.lock records it."""
    lock = yaml.safe_load((repo / "dvc.lock").read_text())
    return {out["path"]: out["md5"] for stage in lock["stages"].values() for out in stage.get("outs", [])}


@pytest.fixture(scope="module")
def repo(tmp_path_factory):
    repo = tmp_path_factory.mktemp("repo")
    shutil.copytree(ROOT / "stages", repo / "stages", ignore=shutil.ignore_patterns("__pycache__"))
    for name in ("dvc.yaml", ".dvcignore", ".gitignore"):
        shutil.copy(ROOT / name, repo / name)
    write_params(repo, tiny_params())
    sh(repo, "git", "init", "-q")
    dvc(repo, "init", "-q")
    dvc(repo, "config", "core.analytics", "false")
    first = dvc(repo, "repro")
    assert stages_run(first.stdout) == STAGES, first.stdout
    sh(repo, "git", "add", "-A")
    sh(repo, "git", "commit", "-qm", "tiny run")
    return repo


def test_repro_writes_every_output_and_the_metrics(repo):
    for path in ["data/prepared/train.pt", "artifacts/train/model.pt", "artifacts/features/test.pt",
                 "artifacts/rof/curve_train.csv", "artifacts/rof/unit_roles.csv",
                 "artifacts/plots/rof_curve_turning_points.pdf", "artifacts/plots/unit_categories.png"]:
        assert (repo / path).stat().st_size > 0, path
    shown = json.loads(dvc(repo, "metrics", "show", "--json").stdout)
    metrics = {}
    for files in shown.values():
        for path, content in files["data"].items():
            metrics[path] = content["data"]
    assert 0 <= metrics["artifacts/metrics/train.json"]["baseline_accuracy"] <= 1
    rof = metrics["artifacts/metrics/rof.json"]
    for subset in ("train", "test"):
        assert 0 <= rof[subset]["n0_acc"] <= 512 and 0 <= rof[subset]["n0_loss"] <= 512
    assert sum(rof["taxonomy"]["tolerance"]["acc"][c] for c in ("both", "train_only", "test_only", "neither")) == 512
    assert dvc(repo, "status").stdout.strip() == "Data and pipelines are up to date."
    # cache: false outputs are tracked by git, cached ones are ignored by it
    tracked = sh(repo, "git", "ls-files").stdout.split()
    assert "artifacts/metrics/rof.json" in tracked and "artifacts/train/model.pt" not in tracked


def test_a_rof_param_reruns_only_rof_sweep_and_plot(repo):
    # ranking changes every curve; a tolerance change may leave every output byte-identical, and
    # then DVC rightly skips plot
    write_params(repo, tiny_params(rof={"ranking": "ascending"}))
    try:
        assert stages_run(dvc(repo, "repro").stdout) == ["rof_sweep", "plot"]
        write_params(repo, tiny_params(rof={"ranking": "ascending"}, train={"lr": 0.002}))
        # A dry run names the first stage to rerun (what follows depends on train's new outputs):
        # train, never prepare_data.
        assert stages_run(dvc(repo, "repro", "--dry").stdout) == ["train"]
    finally:
        write_params(repo, tiny_params())
        dvc(repo, "repro")


def test_rerun_with_same_params_is_byte_identical(repo):
    before = lock_hashes(repo)
    assert stages_run(dvc(repo, "repro", "-f").stdout) == STAGES
    assert lock_hashes(repo) == before
    assert dvc(repo, "status").stdout.strip() == "Data and pipelines are up to date."


def test_a_rejected_train_param_leaves_outputs_restorable(repo):
    before = lock_hashes(repo)
    write_params(repo, tiny_params(train={"epochs": 0}))
    try:
        result = dvc(repo, "repro", check=False)
        assert result.returncode != 0
        assert "error: params.yaml: 'train.epochs' is 0; it must be an integer from 1 to 1000" in result.stderr
        # DVC removed train's outputs before running it; the stage wrote nothing new
        for path in ("artifacts/train/model.pt", "artifacts/metrics/train.json", "artifacts/train/history.csv"):
            assert not (repo / path).exists(), path
        dvc(repo, "checkout")                  # the cached checkpoint comes back from DVC's cache ...
        assert (repo / "artifacts/train/model.pt").exists()
        sh(repo, "git", "checkout", "--", "artifacts")  # ... the cache: false files from git
    finally:
        write_params(repo, tiny_params())
    assert dvc(repo, "status").stdout.strip() == "Data and pipelines are up to date."
    assert lock_hashes(repo) == before


def test_a_bad_param_fails_and_writes_nothing(repo):
    write_params(repo, {**tiny_params(), "rof": {**tiny_params()["rof"], "rankng": "l1"}})
    try:
        result = dvc(repo, "repro", check=False)
        assert result.returncode != 0
        assert "error: params.yaml: unknown key 'rof.rankng'; allowed keys: ranking, turning_point" in result.stderr
        assert not (repo / "artifacts/metrics/rof.json").exists()  # DVC removed it; the stage wrote nothing
    finally:
        write_params(repo, tiny_params())
        # rof_sweep reruns and writes what it wrote before, so DVC skips plot
        assert stages_run(dvc(repo, "repro").stdout) == ["rof_sweep"]
        assert dvc(repo, "status").stdout.strip() == "Data and pipelines are up to date."


def test_a_stage_killed_while_saving_leaves_no_truncated_file(repo):
    before = lock_hashes(repo)
    checkpoint = repo / "artifacts/train/model.pt"
    checkpoint.unlink()  # as DVC does before it runs the stage
    process = subprocess.Popen([sys.executable, "-m", "stages.train"], cwd=repo,
                               env={**ENV, "ROFPIPE_HOLD_BEFORE_RENAME": "60"},
                               stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        deadline = time.time() + 240
        while not list(checkpoint.parent.glob(".model.pt.tmp-*")):
            assert process.poll() is None and time.time() < deadline, "train ended before saving"
            time.sleep(0.05)
        os.kill(process.pid, signal.SIGKILL)
    finally:
        process.wait()
    assert not checkpoint.exists()  # the killed save never produced model.pt
    assert list(checkpoint.parent.glob(".model.pt.tmp-*"))
    # DVC recovers: its run-cache restores the output of the unchanged stage ...
    dvc(repo, "repro")
    assert lock_hashes(repo) == before and checkpoint.exists()
    # ... and a real rerun of the stage removes the killed run's temporary file.
    assert stages_run(dvc(repo, "repro", "-f", "-s", "train").stdout) == ["train"]
    assert not list(checkpoint.parent.glob(".model.pt.tmp-*"))
    assert lock_hashes(repo) == before


def project_imports(module):
    """stages.* modules that stages/<module>.py imports anywhere in the file, transitively."""
    import ast
    seen, todo = set(), [module]
    while todo:
        name = todo.pop()
        if name in seen:
            continue
        seen.add(name)
        for node in ast.walk(ast.parse((ROOT / "stages" / f"{name}.py").read_text())):
            names = [a.name for a in node.names] if isinstance(node, ast.Import) else \
                [node.module or ""] if isinstance(node, ast.ImportFrom) else []
            todo += [n.split(".")[1] for n in names if n.startswith("stages.")]
    return seen


@pytest.mark.parametrize("dvc_file", ["dvc.yaml", "study/dvc.yaml"])
def test_every_stage_depends_on_exactly_the_code_it_imports(dvc_file):
    # A module missing from deps means a code change DVC does not see (stale outputs); one too
    # many means needless reruns.
    for name, stage in yaml.safe_load((ROOT / dvc_file).read_text())["stages"].items():
        module = stage["cmd"].split()[2].split(".")[1]          # python -m stages.<module> ...
        listed = {d for d in stage["deps"] if d.startswith("stages/")}
        assert listed == {f"stages/{m}.py" for m in project_imports(module)}, name
