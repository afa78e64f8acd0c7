"""netunits.stage_table and netunits.dvc_files: the one table of stages and files, and the three
dvc.yaml files written from it."""
import shutil
from pathlib import Path

import yaml

from conftest import ROOT
from netunits import dvc_files
from netunits.stage_table import FILES, STAGES, pipeline_sections, stage_paths, study_cell


def test_the_committed_pipelines_are_the_generated_ones():
    # a stale dvc.yaml means DVC misses a code change (stale outputs) or reruns needlessly
    assert dvc_files.main(["--check"]) == 0


def test_check_names_a_stale_file_and_writing_fixes_it(tmp_path, capsys):
    for name in dvc_files.PIPELINES:
        (tmp_path / name).parent.mkdir(parents=True, exist_ok=True)
        shutil.copy(ROOT / name, tmp_path / name)
    (tmp_path / "cifar/dvc.yaml").write_text("stages: {}\n")
    assert dvc_files.main(["--check"], root=tmp_path) == 1
    assert "cifar/dvc.yaml: differ from the stage table" in capsys.readouterr().err
    assert dvc_files.main([], root=tmp_path) == 0
    assert (tmp_path / "cifar/dvc.yaml").read_text() == (ROOT / "cifar/dvc.yaml").read_text()
    assert dvc_files.main(["--check"], root=tmp_path) == 0


def test_code_deps_follow_the_imports_transitively(tmp_path):
    for folder in ("stages", "netunits", "netunits/inner"):
        (tmp_path / folder).mkdir()
    (tmp_path / "netunits/__init__.py").write_text('"""docstring only: no dep"""\n')
    (tmp_path / "netunits/inner/__init__.py").write_text("import os\n")          # code: a dep
    (tmp_path / "netunits/a.py").write_text("from netunits.inner import b\n")
    (tmp_path / "netunits/inner/b.py").write_text("def f():\n    import netunits.c\n")
    (tmp_path / "netunits/c.py").write_text("")
    (tmp_path / "netunits/unused.py").write_text("")
    (tmp_path / "stages/s.py").write_text("import netunits.a\nif __name__ == '__main__':\n    import netunits.unused\n")
    assert dvc_files.code_deps("stages/s.py", False, tmp_path) == [
        "stages/s.py", "netunits/a.py", "netunits/c.py", "netunits/inner/__init__.py", "netunits/inner/b.py"]


def test_model_code_is_a_dep_of_the_stages_that_build_a_model_only():
    main = yaml.safe_load((ROOT / "dvc.yaml").read_text())["stages"]
    for name, stage in main.items():
        builds = any(isinstance(p, str) and p.split(".")[0] == "compute" for p in stage.get("params", []))
        assert ("netunits/models/resnet.py" in stage["deps"]) == builds, name
    # the registry's facts (the pooled layer) without its builders
    assert "netunits/models/registry.py" in main["rof_sweep"]["deps"]


def test_every_dep_is_an_earlier_stages_out_and_every_file_has_one_writer():
    written = {}
    for name in dvc_files.MAIN_STAGES:
        stage = STAGES[name]
        assert all(dep in written for dep in stage.deps), name
        for out in stage.outs:
            assert out not in written, out
            written[out] = name
    assert set(written) | set(STAGES["study_aggregate"].deps + STAGES["study_aggregate"].outs) == set(FILES)


def test_stage_paths_are_the_tables_under_the_run_dir():
    paths = stage_paths("rof_sweep", Path("runs/a"))
    assert paths["model"] == Path("runs/a/artifacts/train/model.pt")
    assert paths["rof_metrics"] == Path("runs/a/artifacts/metrics/rof.json")
    assert set(paths) == set(STAGES["rof_sweep"].deps + STAGES["rof_sweep"].outs)
    assert study_cell(".", 0.2, 1) == Path("artifacts/study/runs/noise0.2_seed1")
    study = yaml.safe_load((ROOT / "study/dvc.yaml").read_text())["stages"]
    assert "--run-dir artifacts/study/runs/noise${item.noise}_seed${item.seed}" in study["train"]["cmd"]


def test_every_stage_of_each_pipeline_waits_for_its_params_check():
    # DVC runs a stage only after the stages writing its deps: with check_params' output a dep of
    # every other stage, a rejected value stops the run before DVC removes any other output
    for folder in ("", "cifar/", "study/"):
        pipeline, checked, params_file = (f"{folder}{name}" for name in ("dvc.yaml", "artifacts/params_checked.txt",
                                                                          "params.yaml"))
        stages = yaml.safe_load((ROOT / pipeline).read_text())["stages"]
        check = stages.pop("check_params")
        assert check["outs"] == [checked] and check["params"] == [{params_file: None}], pipeline
        assert stages and all(checked in stage["deps"] for stage in stages.values()), pipeline


def test_train_writes_only_cached_files_and_train_log_the_committed_ones():
    # so that `dvc checkout` restores every output train loses when a run fails
    assert all(FILES[name].cache for name in STAGES["train"].outs)
    assert {FILES[name].path for name in STAGES["train_log"].outs} == {"artifacts/train/history.csv",
                                                                       "artifacts/metrics/train.json"}


def test_the_check_requires_the_sections_its_pipeline_reads():
    assert set(pipeline_sections("params.yaml")) == set(yaml.safe_load((ROOT / "params.yaml").read_text()))
    assert set(pipeline_sections("study/params.yaml")) == set(yaml.safe_load((ROOT / "study/params.yaml").read_text()))
    cifar = pipeline_sections("./cifar/params.yaml")
    assert set(cifar) == set(yaml.safe_load((ROOT / "cifar/params.yaml").read_text()))
    assert "dissect" in cifar and "evaluate" not in cifar     # the report reads evaluate's outputs only where made
    assert pipeline_sections("mine.yaml") == ()


def test_the_pipeline_page_draws_every_stage_and_edge_of_dvc_yaml():
    page = (ROOT / "docs/pipeline.md").read_text()
    graph = page.split("```mermaid\n")[1].split("```")[0]
    assert "  rof_sweep --> plot" in graph and "  train --> train_log" in graph and "check_params" not in graph
    for name in dvc_files.MAIN_STAGES:
        assert f"| `{name}` |" in page, name
