"""The whole pipeline through DVC, in a scratch git + DVC repository with tiny params."""
import ast
import json
import os
import re
import shutil
import signal
import subprocess
import sys
import time

import pytest
import yaml

from conftest import ENV, ROOT, dvc, lock_hashes, scratch_repo, sh, stages_run, tiny_params, write_params

STAGES = ["check_params", "prepare_data", "train", "train_log", "extract_features", "rof_sweep", "layer_rof",
          "influential_filters", "finetune_decomposed", "plot", "probe_concepts", "dissect", "dissect_report",
          "compose", "clip_dissect", "ablate", "evaluate", "compare_models", "featurevis", "report"]
UP_TO_DATE = "Data and pipelines are up to date."


@pytest.fixture(scope="module")
def repo(tmp_path_factory):
    repo = scratch_repo(tmp_path_factory.mktemp("repo"))
    first = dvc(repo, "repro")
    assert sorted(stages_run(first.stdout)) == sorted(STAGES), first.stdout
    (repo.parent / "first_repro.txt").write_text(first.stdout)      # for the console test
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
    assert dvc(repo, "status").stdout.strip() == UP_TO_DATE
    # cache: false outputs are tracked by git, cached ones are ignored by it
    tracked = sh(repo, "git", "ls-files").stdout.split()
    assert "artifacts/metrics/rof.json" in tracked and "artifacts/train/model.pt" not in tracked


def stage_output(log, stage):
    """The lines a stage printed in a `dvc repro` log (between its command line and DVC's next)."""
    block = log.split(f"Running stage '{stage}':\n> python -m stages.{stage}\n")[1]
    return re.split(r"(?:Generating|Updating) lock file", block)[0].strip().splitlines()


@pytest.mark.slow
def test_every_stages_console_lines_are_readable(repo):
    log = (repo.parent / "first_repro.txt").read_text()
    for stage in STAGES:
        lines = stage_output(log, stage)
        assert lines, stage
        for line in lines:
            # no raw Python dict or set, no clause left dangling
            assert "{" not in line and "}" not in line and not line.rstrip().endswith((";", ",", ":")), (stage, line)
    assert stage_output(log, "check_params") == ["params.yaml: 18 sections valid (compute, data, train, "
                                                 "extract_features, rof, layer_rof, influence, finetune, probe, "
                                                 "dissect, compose, clip_dissect, evaluate, ablate, compare, "
                                                 "featurevis, report, plot)"]
    assert re.fullmatch(r"k=5: decomposed test accuracy [\d.]+ before, [\d.]+ after \d+ epochs? on \d+ images; "
                        r"full network [\d.]+; \d+ s fine-tuning and evaluating",
                        stage_output(log, "finetune_decomposed")[0])
    # the turning points printed are the ones the roles come from (tolerance, as tiny params say)
    layer_rof = json.loads((repo / "artifacts/metrics/layer_rof.json").read_text())
    for line, (layer, m) in zip(stage_output(log, "layer_rof"), layer_rof["layers"].items(), strict=True):
        assert line.startswith(f"{layer}: "), line
        assert (f"train n0_acc {m['train']['n0_acc_tol']} / n0_loss {m['train']['n0_loss_tol']}, "
                f"test n0_acc {m['test']['n0_acc_tol']} / n0_loss {m['test']['n0_loss_tol']} (tolerance)") in line, line
    assert re.fullmatch(r"training log: 2 epochs, test accuracy [\d.]+", stage_output(log, "train_log")[0])
    assert re.fullmatch(r"avgpool: accuracy [\d.]+ with the full final layer; decomposed: k=5 [\d.]+(, k=\d+ [\d.]+)*",
                        stage_output(log, "influential_filters")[0])
    assert [line.split(":")[0] for line in stage_output(log, "dissect_report")] == ["layer2", "layer3", "layer4"]
    assert re.fullmatch(r"layer4: \d+ of 512 units are detectors, \d+ unique concepts, mean best IoU [\d.]+",
                        stage_output(log, "dissect_report")[2])
    assert re.fullmatch(r"layer4: \d+ of 512 units explained; mean iou by formula length 1: [\d.]+.*; "
                        r"\d+ distinct formulas", stage_output(log, "compose")[0])
    assert re.fullmatch(r"layer4: 512 units, \d+ unique descriptions, agreement with network dissection [\d.]+ "
                        r"\(chance [\d.]+\)", stage_output(log, "clip_dissect")[2])
    assert re.fullmatch(r"report: 512 units of layer4, [\d.]+ MiB of pages and images", stage_output(log, "report")[0])


@pytest.mark.slow
def test_a_rof_param_reruns_only_rof_sweep_and_the_stages_that_read_it(repo):
    # ranking changes every curve; a tolerance change may leave every output byte-identical, and
    # then DVC rightly skips plot
    write_params(repo, tiny_params(rof={"ranking": "ascending"}))
    try:
        ran = stages_run(dvc(repo, "repro").stdout)
        # check_params reads the whole file, and writes what it wrote before
        assert ran[:2] == ["check_params", "rof_sweep"]
        assert sorted(ran[2:]) == ["dissect_report", "evaluate", "featurevis", "influential_filters", "plot",
                                   "report"]
        write_params(repo, tiny_params(rof={"ranking": "ascending"}, train={"lr": 0.002}))
        # A dry run names the stages whose own deps changed (what follows depends on train's new
        # outputs): the check, train, compare_models (which trains again with other seeds) and
        # report, which reads every section for the params hash on its index; never prepare_data.
        assert sorted(stages_run(dvc(repo, "repro", "--dry").stdout)) == ["check_params", "compare_models", "report",
                                                                          "train"]
    finally:
        write_params(repo, tiny_params())
        dvc(repo, "repro")


@pytest.mark.slow
def test_the_iou_threshold_reruns_only_the_dissection_report(repo):
    write_params(repo, tiny_params(dissect={"iou_threshold": 0.2}))
    try:
        # the report, clip_dissect and featurevis read the dissection tables, so they follow when
        # those change; evaluate and compare_models count the units at the threshold
        ran = stages_run(dvc(repo, "repro").stdout)
        assert ran[0] == "check_params", ran
        followers = {"dissect_report", "evaluate", "compare_models", "clip_dissect", "featurevis", "report"}
        assert {"dissect_report", "evaluate", "compare_models"} <= set(ran[1:]) <= followers, ran
    finally:
        write_params(repo, tiny_params())
        dvc(repo, "repro")


@pytest.mark.slow
def test_rerun_with_same_params_is_byte_identical(repo):
    before = lock_hashes(repo)
    assert sorted(stages_run(dvc(repo, "repro", "-f").stdout)) == sorted(STAGES)
    assert lock_hashes(repo) == before
    assert dvc(repo, "status").stdout.strip() == UP_TO_DATE


@pytest.mark.slow
def test_a_rejected_train_param_costs_no_output_and_no_retraining(repo):
    kept = ("artifacts/train/model.pt", "artifacts/train/log.json", "artifacts/train/history.csv",
            "artifacts/metrics/train.json")
    before, contents = lock_hashes(repo), {path: (repo / path).read_bytes() for path in kept}
    write_params(repo, tiny_params(train={"epochs": -1}))
    try:
        result = dvc(repo, "repro", check=False)
        assert result.returncode != 0
        assert "error: params.yaml: 'train.epochs' is -1; it must be an integer from 0 to 1000\n" in result.stderr
        # the check ran first and stopped the run: DVC removed no other stage's outputs
        assert stages_run(result.stdout) == ["check_params"]
        assert {path: (repo / path).read_bytes() for path in kept} == contents
    finally:
        write_params(repo, tiny_params())
    # the check's own output comes back (from DVC's run-cache, or a rerun writing the same bytes);
    # nothing is retrained
    assert set(stages_run(dvc(repo, "repro").stdout)) <= {"check_params"}
    assert dvc(repo, "status", "dvc.yaml").stdout.strip() == UP_TO_DATE
    assert lock_hashes(repo) == before


@pytest.mark.slow
def test_a_bad_param_fails_and_writes_nothing(repo):
    rof = (repo / "artifacts/metrics/rof.json").read_bytes()
    write_params(repo, {**tiny_params(), "rof": {**tiny_params()["rof"], "rankng": "l1"}})
    try:
        result = dvc(repo, "repro", check=False)
        assert result.returncode != 0
        assert "error: params.yaml: unknown key 'rof.rankng'; allowed keys: ranking, turning_point" in result.stderr
        assert (repo / "artifacts/metrics/rof.json").read_bytes() == rof   # rof_sweep never ran
    finally:
        write_params(repo, tiny_params())
        assert set(stages_run(dvc(repo, "repro").stdout)) <= {"check_params"}
        assert dvc(repo, "status").stdout.strip() == UP_TO_DATE


@pytest.mark.slow
def test_a_train_failure_after_the_check_leaves_the_log_restorable(repo):
    # a weights file that is missing passes the check (a path is a valid value) and fails train
    # after DVC removed train's outputs: all cached, they come back with `dvc checkout dvc.yaml`;
    # the committed log belongs to train_log, which never ran
    before = lock_hashes(repo)
    history = (repo / "artifacts/train/history.csv").read_bytes()
    write_params(repo, tiny_params(train={"weights": "absent.pt"}))
    try:
        result = dvc(repo, "repro", check=False)
        assert result.returncode != 0 and "error: params.yaml: 'train.weights' is 'absent.pt': file not found" in \
            result.stderr
        assert not (repo / "artifacts/train/model.pt").exists()
        assert (repo / "artifacts/train/history.csv").read_bytes() == history
    finally:
        write_params(repo, tiny_params())
    dvc(repo, "checkout", "dvc.yaml")
    assert (repo / "artifacts/train/model.pt").exists()
    # the check passed the missing file, so dvc.lock holds its params: it reruns (or DVC restores its
    # output from the run-cache), and nothing else
    assert set(stages_run(dvc(repo, "repro").stdout)) <= {"check_params"}
    assert dvc(repo, "status", "dvc.yaml").stdout.strip() == UP_TO_DATE
    assert lock_hashes(repo) == before


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


@pytest.mark.slow
def test_the_readmes_recovery_and_experiment_commands_work_as_written(repo, tmp_path):
    # A copy of the tiny run beside the CIFAR-10 and study pipelines, never built, as in a fresh
    # clone: unscoped, `dvc status`, `dvc checkout` and `dvc exp apply` report or fail on their
    # outputs; every command below names dvc.yaml.
    work = tmp_path / "clone"
    shutil.copytree(repo, work, symlinks=True)
    for name in ("cifar/dvc.yaml", "cifar/params.yaml", "study/dvc.yaml", "study/params.yaml"):
        (work / name).parent.mkdir(exist_ok=True)
        shutil.copy(ROOT / name, work / name)
    sh(work, "git", "add", "-A")
    sh(work, "git", "commit", "-qm", "the other pipelines")
    before = lock_hashes(work)
    assert dvc(work, "status").stdout.strip() != UP_TO_DATE
    assert dvc(work, "status", "dvc.yaml").stdout.strip() == UP_TO_DATE

    # a cached output deleted, then one overwritten: `dvc checkout` needs --force over a changed file
    checkpoint = work / "artifacts/train/model.pt"
    checkpoint.unlink()
    assert "deleted:            artifacts/train/model.pt" in dvc(work, "status", "dvc.yaml").stdout
    dvc(work, "checkout", "dvc.yaml")
    assert dvc(work, "status", "dvc.yaml").stdout.strip() == UP_TO_DATE
    checkpoint.write_bytes(b"edited")
    refused = dvc(work, "checkout", "dvc.yaml", check=False)
    assert refused.returncode != 0 and "Use `--force` to force." in refused.stderr
    dvc(work, "checkout", "--force", "dvc.yaml")
    assert dvc(work, "status", "dvc.yaml").stdout.strip() == UP_TO_DATE and lock_hashes(work) == before

    # the DAG as a mermaid chart
    assert "flowchart TD" in dvc(work, "dag", "--md", "dvc.yaml").stdout

    # the first experiment: this machine's baseline recorded, one setting changed, compared
    baseline = dvc(work, "exp", "run", "dvc.yaml", "-n", "my-baseline")
    assert stages_run(baseline.stdout) == [] and "WARNING" not in baseline.stderr
    changed = dvc(work, "exp", "run", "dvc.yaml", "-S", "rof.ranking=random")
    ran = stages_run(changed.stdout)
    assert "rof_sweep" in ran and "train" not in ran and "WARNING" not in changed.stderr
    diff = dvc(work, "exp", "diff", "my-baseline").stdout
    assert re.search(r"params\.yaml +rof\.ranking +l1 +random", diff) and "artifacts/metrics/rof.json" in diff
    shown = dvc(work, "exp", "show", "--md", "--drop", ".*", "--keep",
                "Experiment|params.yaml:rof.ranking|baseline_accuracy|test.n0_acc").stdout
    assert "[my-baseline]" in shown and "random" in shown and shown.count("\n") < 12

    # back to the defaults: params.yaml from git, the stages it changed rerun (nothing retrained)
    sh(work, "git", "checkout", "params.yaml")
    back = stages_run(dvc(work, "repro").stdout)
    assert "rof_sweep" in back and "train" not in back
    assert dvc(work, "status", "dvc.yaml").stdout.strip() == UP_TO_DATE
    assert lock_hashes(work) == before


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
