"""The whole pipeline through DVC, in a scratch git + DVC repository with tiny params."""
import ast
import json
import os
import signal
import subprocess
import sys
import time

import pytest
import yaml

from conftest import ENV, ROOT, dvc, lock_hashes, scratch_repo, sh, stages_run, tiny_params, write_params

STAGES = ["prepare_data", "train", "extract_features", "rof_sweep", "layer_rof", "influential_filters",
          "finetune_decomposed", "plot", "probe_concepts",
          "dissect", "dissect_report", "compose", "clip_dissect", "report"]


@pytest.fixture(scope="module")
def repo(tmp_path_factory):
    repo = scratch_repo(tmp_path_factory.mktemp("repo"))
    first = dvc(repo, "repro")
    assert sorted(stages_run(first.stdout)) == sorted(STAGES), first.stdout
    sh(repo, "git", "add", "-A")
    sh(repo, "git", "commit", "-qm", "tiny run")
    return repo


@pytest.mark.slow
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


@pytest.mark.slow
def test_a_rof_param_reruns_only_rof_sweep_and_the_stages_that_read_it(repo):
    # ranking changes every curve; a tolerance change may leave every output byte-identical, and
    # then DVC rightly skips plot
    write_params(repo, tiny_params(rof={"ranking": "ascending"}))
    try:
        ran = stages_run(dvc(repo, "repro").stdout)
        assert ran[0] == "rof_sweep" and sorted(ran[1:]) == ["dissect_report", "influential_filters", "plot", "report"]
        write_params(repo, tiny_params(rof={"ranking": "ascending"}, train={"lr": 0.002}))
        # A dry run names the stages whose own deps changed (what follows depends on train's new
        # outputs): train, and report, which reads every section for the params hash on its index;
        # never prepare_data.
        assert stages_run(dvc(repo, "repro", "--dry").stdout) == ["train", "report"]
    finally:
        write_params(repo, tiny_params())
        dvc(repo, "repro")


@pytest.mark.slow
def test_the_iou_threshold_reruns_only_the_dissection_report(repo):
    write_params(repo, tiny_params(dissect={"iou_threshold": 0.2}))
    try:
        # the report and clip_dissect read the dissection tables, so they follow when those change
        ran = stages_run(dvc(repo, "repro").stdout)
        assert ran[0] == "dissect_report" and set(ran[1:]) <= {"clip_dissect", "report"}, ran
    finally:
        write_params(repo, tiny_params())
        dvc(repo, "repro")


@pytest.mark.slow
def test_rerun_with_same_params_is_byte_identical(repo):
    before = lock_hashes(repo)
    assert sorted(stages_run(dvc(repo, "repro", "-f").stdout)) == sorted(STAGES)
    assert lock_hashes(repo) == before
    assert dvc(repo, "status").stdout.strip() == "Data and pipelines are up to date."


@pytest.mark.slow
def test_a_rejected_train_param_leaves_outputs_restorable(repo):
    before = lock_hashes(repo)
    write_params(repo, tiny_params(train={"epochs": -1}))
    try:
        result = dvc(repo, "repro", check=False)
        assert result.returncode != 0
        assert "error: params.yaml: 'train.epochs' is -1; it must be an integer from 0 to 1000" in result.stderr
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


@pytest.mark.slow
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


@pytest.mark.slow
def test_a_stage_killed_while_saving_leaves_no_truncated_file(repo):
    before = lock_hashes(repo)
    checkpoint = repo / "artifacts/train/model.pt"
    checkpoint.unlink()  # as DVC does before it runs the stage
    process = subprocess.Popen([sys.executable, "-m", "stages.train"], cwd=repo,
                               env={**ENV, "NETUNITS_HOLD_BEFORE_RENAME": "60"},
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


def project_imports(script):
    """Every project module (stages/, netunits/) that `script` imports anywhere in its file,
    transitively, package __init__ files included only where they import something."""
    def module_file(name):
        path = ROOT.joinpath(*name.split("."))
        return path / "__init__.py" if (path / "__init__.py").exists() else \
            path.with_suffix(".py") if path.with_suffix(".py").exists() else None
    seen, todo = set(), [ROOT / script]
    while todo:
        path = todo.pop()
        if path in seen:
            continue
        seen.add(path)
        for node in ast.walk(ast.parse(path.read_text())):
            names = [a.name for a in node.names] if isinstance(node, ast.Import) else \
                [node.module] + [f"{node.module}.{a.name}" for a in node.names] \
                if isinstance(node, ast.ImportFrom) and node.module else []
            for name in names:
                parts = name.split(".")
                if parts[0] in ("stages", "netunits"):
                    todo += [f for f in (module_file(".".join(parts[:n])) for n in range(1, len(parts) + 1)) if f]
    return {str(p.relative_to(ROOT)) for p in seen
            if p.name != "__init__.py" or any(isinstance(n, (ast.Import, ast.ImportFrom))
                                              for n in ast.walk(ast.parse(p.read_text())))}


def test_package_init_files_import_no_project_module():
    # so that importing one module loads no other: netunits.api finds a stage's module when asked
    for path in ROOT.glob("netunits/**/__init__.py"):
        tree = ast.parse(path.read_text())
        names = [n.module or "" for n in ast.walk(tree) if isinstance(n, ast.ImportFrom)]
        names += [a.name for n in ast.walk(tree) if isinstance(n, ast.Import) for a in n.names]
        assert not [name for name in names if name.startswith(("netunits", "stages", "."))], path


def test_no_stage_imports_another_and_the_library_imports_no_stage():
    for path in list(ROOT.glob("stages/*.py")) + list(ROOT.glob("netunits/**/*.py")):
        imported = project_imports(str(path.relative_to(ROOT))) - {str(path.relative_to(ROOT))}
        assert not [m for m in imported if m.startswith("stages/")], path


def test_a_model_code_change_does_not_rerun_rof_sweep_or_plot():
    dvc_file = yaml.safe_load((ROOT / "dvc.yaml").read_text())["stages"]
    for name in ("rof_sweep", "plot", "prepare_data"):
        # the checkpoint file's reader and the registry's facts (the pooled layer), no model code
        assert not [d for d in dvc_file[name]["deps"] if d.startswith("netunits/models/") and
                    d not in ("netunits/models/checkpoint.py", "netunits/models/registry.py")], name
