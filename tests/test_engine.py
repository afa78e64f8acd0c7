"""compute.engine: dissect's shards, compose's forward shards and search chunks, clip_dissect's
shards and the study's cells as tasks on a local Dask cluster (or a running scheduler) give the
bytes the single process gives; the bad inputs are one line, exit status 2, nothing
written. On a randomly initialised ResNet18 at 32 px and 12 synthetic Broden-format images."""

import re
import shutil
import socket
import threading

import pytest
import torch
from test_study import tiny_study

from bench.synthetic_broden import write_synthetic_broden
from conftest import ROOT, run_main, tiny_params, working_dir, write_params
from netunits import study_engine
from netunits.data.broden import load_broden
from netunits.engine import KILL_ENV
from netunits.files import save_torch
from netunits.models.inputs import input_spec
from netunits.models.registry import build_model
from netunits.study_engine import cell_commands
from stages import clip_dissect, compose, dissect

N_IMAGES, BATCH = 12, 3            # 4 batches


def has_dask():
    try:
        import distributed  # noqa: F401
    except ImportError:
        return False
    return True


needs_dask = pytest.mark.skipif(not has_dask(), reason="dask is not installed (`make dask`)")


@pytest.fixture(scope="module")
def inputs_folder(tmp_path_factory):
    """A checkpoint and a probe set at the paths the dissect stage reads."""
    folder = tmp_path_factory.mktemp("engine")
    write_synthetic_broden(folder / "broden", N_IMAGES, 40, seed=1, per_image=6, unannotated=0.3)
    probe = load_broden(folder / "broden", image_size=32, mask_size=8, size=N_IMAGES)
    save_torch(probe, folder / "data/probe/probe.pt")
    torch.manual_seed(0)
    model = build_model("resnet18", 10)
    save_torch({"arch": "resnet18", "n_classes": 10, "in_channels": 3, "input": input_spec(3, "none"),
                "image_size": 32, "dataset": "synthetic", "state_dict": model.state_dict()},
               folder / "artifacts/train/model.pt")
    return folder


def dissect_in(folder, **params):
    """Run the dissect stage in `folder` with these params; (exit status, tallies bytes or None)."""
    settings = {"compute": {"device": "cpu", "precision": "fp32", **params.get("compute", {})},
                "dissect": {"batch_size": BATCH, "top_images": 3, "quantile": 0.9, **params.get("dissect", {})}}
    write_params(folder, tiny_params(**settings))
    tallies = folder / "artifacts/dissect/tallies.pt"
    tallies.unlink(missing_ok=True)
    with working_dir(folder):
        status = run_main(dissect.main)
    return status, tallies.read_bytes() if tallies.exists() else None


@pytest.fixture(scope="module")
def single(inputs_folder):
    status, tallies = dissect_in(inputs_folder)
    assert status == 0
    return tallies


def test_shards_in_one_process_write_the_same_bytes(inputs_folder, single):
    assert dissect_in(inputs_folder, dissect={"shards": 3}) == (0, single)


def test_too_many_shards_is_one_line_and_writes_nothing(inputs_folder, capsys):
    assert dissect_in(inputs_folder, dissect={"shards": 5}, compute={"engine": "dask"}) == (2, None)
    assert capsys.readouterr().err.strip().splitlines() == [
        "error: params.yaml: 'dissect.shards' is 5: the probe has 12 images, 4 batches of 3 ('dissect.batch_size'); "
        "it must be from 1 to 4"]


@needs_dask
def test_shards_on_a_local_cluster_write_the_same_bytes_and_a_dead_worker_writes_nothing(inputs_folder, single,
                                                                                          monkeypatch, capsys):
    monkeypatch.setenv(KILL_ENV, "shard 2 of 2")      # the workers inherit it; the task of shard 2 ends its own
    status, tallies = dissect_in(inputs_folder, dissect={"shards": 2}, compute={"engine": "dask", "workers": 2})
    assert (status, tallies) == (2, None)
    assert capsys.readouterr().err.strip().splitlines()[-1] == (
        "error: dissect shard 2 of 2 (probe images 6 to 11), pass 1 (thresholds): its worker died (a local cluster "
        "of 2 workers); nothing was written; rerun the stage to redo it")
    monkeypatch.delenv(KILL_ENV)                      # the rerun, on a fresh local cluster of two workers
    assert dissect_in(inputs_folder, dissect={"shards": 3}, compute={"engine": "dask", "workers": 2}) == (0, single)


@needs_dask
def test_an_unreachable_scheduler_is_one_line(inputs_folder, monkeypatch, capsys):
    monkeypatch.setattr("netunits.engine.CONNECT_TIMEOUT_S", 2)
    status = dissect_in(inputs_folder, compute={"engine": "dask", "scheduler": "tcp://127.0.0.1:9"})
    assert status == (2, None)
    assert capsys.readouterr().err.strip().splitlines() == [
        "error: params.yaml: 'compute.scheduler' is 'tcp://127.0.0.1:9': no Dask scheduler answered there within "
        "2 s; start one (dask scheduler) or set it to null for a local cluster"]
    # a server of another protocol on the port: what it sends is not a Dask handshake
    server = socket.create_server(("127.0.0.1", 0))
    port = server.getsockname()[1]

    def answer():
        connection, _ = server.accept()
        connection.sendall(b"\xff" * 64)
        connection.close()
    threading.Thread(target=answer, daemon=True).start()
    status = dissect_in(inputs_folder, compute={"engine": "dask", "scheduler": f"tcp://127.0.0.1:{port}"})
    server.close()
    assert status == (2, None)
    assert re.fullmatch(rf"error: params.yaml: 'compute.scheduler' is 'tcp://127.0.0.1:{port}': (what answered "
                        r"there is not a Dask scheduler \(\w+\)|no Dask scheduler answered there within 2 s); start "
                        r"one \(dask scheduler\) or set it to null for a local cluster",
                        capsys.readouterr().err.strip().splitlines()[-1])


def test_dask_missing_is_one_line(inputs_folder, monkeypatch, capsys):
    import builtins
    real_import = builtins.__import__

    def no_dask(name, *args, **kwargs):
        if name.split(".")[0] in ("dask", "distributed"):
            raise ImportError(name)
        return real_import(name, *args, **kwargs)
    monkeypatch.setattr(builtins, "__import__", no_dask)
    assert dissect_in(inputs_folder, compute={"engine": "dask"}) == (2, None)
    assert capsys.readouterr().err.strip().splitlines() == [
        "error: params.yaml: 'compute.engine' is 'dask' but dask is not installed; install the optional extra with "
        "`make dask` (requirements-dask.txt), or set it to none"]


@pytest.mark.parametrize("address", ["localhost:8786", "tcp://host", "tcp://host:0", "tcp://:8786"])
def test_a_bad_scheduler_address_is_one_line(address):
    from netunits.errors import PipelineError
    from netunits.params import validate_params
    with pytest.raises(PipelineError, match=r"'compute.scheduler' is .*; it must be null \(a local cluster\) or a "
                                            r"scheduler address tcp://host:port$"):
        validate_params(tiny_params(compute={"scheduler": address}))




# ------------------------------------------------------------------------------ compose and clip_dissect
STAGE_FILES = {compose: ("artifacts/compose/formulas.csv", "artifacts/compose/top_masks.pt",
                         "artifacts/metrics/compose.json"),
               clip_dissect: ("artifacts/clip_dissect/descriptions.csv", "artifacts/metrics/clip_dissect.json")}


def stage_in(folder, stage, **compute):
    """Run compose or clip_dissect in `folder` (after dissect) under these compute params;
    (exit status, {file: bytes} of what it wrote)."""
    write_params(folder, tiny_params(compute={"device": "cpu", "precision": "fp32", **compute},
                                     dissect={"batch_size": BATCH, "top_images": 3, "quantile": 0.9},
                                     compose={"batch_size": BATCH}, clip_dissect={"batch_size": BATCH}))
    for name in STAGE_FILES[stage]:
        (folder / name).unlink(missing_ok=True)
    with working_dir(folder):
        status = run_main(stage.main)
    return status, {name: (folder / name).read_bytes() for name in STAGE_FILES[stage] if (folder / name).exists()}


@pytest.fixture(scope="module")
def analysed(inputs_folder, single):
    """compose's and clip_dissect's files from one process (no engine)."""
    (inputs_folder / "artifacts/dissect/tallies.pt").write_bytes(single)
    found = {stage: stage_in(inputs_folder, stage) for stage in STAGE_FILES}
    assert all(status == 0 and len(files) == len(STAGE_FILES[stage]) for stage, (status, files) in found.items())
    return {stage: files for stage, (_, files) in found.items()}


@needs_dask
def test_compose_and_clip_dissect_on_a_local_cluster_write_the_same_bytes(inputs_folder, analysed):
    for stage in STAGE_FILES:
        assert stage_in(inputs_folder, stage, engine="dask", workers=2) == (0, analysed[stage]), stage.__name__


@needs_dask
def test_a_running_scheduler_gets_the_tasks_and_a_dead_search_task_writes_nothing(inputs_folder, analysed,
                                                                                  monkeypatch, capsys):
    import distributed
    monkeypatch.setenv(KILL_ENV, "units 128 to 255, search")     # the workers start with it
    with distributed.LocalCluster(n_workers=2, threads_per_worker=1, processes=True, dashboard_address=None,
                                  silence_logs=50) as cluster:
        address = cluster.scheduler_address
        assert address.startswith("tcp://")
        status, files = stage_in(inputs_folder, compose, engine="dask", scheduler=address)
        assert (status, files) == (2, {})
        assert capsys.readouterr().err.strip().splitlines()[-1] == (
            f"error: compose layer4, units 128 to 255, search: its worker died (scheduler {address}); nothing was "
            f"written; rerun the stage to redo it")
    monkeypatch.delenv(KILL_ENV)
    with distributed.LocalCluster(n_workers=2, threads_per_worker=1, processes=True, dashboard_address=None,
                                  silence_logs=50) as cluster:
        assert stage_in(inputs_folder, compose, engine="dask", scheduler=cluster.scheduler_address) == \
            (0, analysed[compose])


# ------------------------------------------------------------------------------ the study's grid
def test_the_runner_runs_the_commands_study_dvc_yaml_runs():
    import yaml
    stages = yaml.safe_load((ROOT / "study/dvc.yaml").read_text())["stages"]
    expected = [stages[name]["cmd"].replace("${item.noise}", "0.6").replace("${item.seed}", "1")
                for name in ("prepare_data", "train", "extract_features", "rof_sweep")]
    assert cell_commands(0.6, 1) == expected


def study_folder(repo, study, **compute):
    """A folder with the project's code and study/params.yaml (the grid's runner needs no DVC)."""
    for code in ("stages", "netunits"):
        shutil.copytree(ROOT / code, repo / code, ignore=shutil.ignore_patterns("__pycache__"))
    study["compute"].update(compute)
    (repo / "study").mkdir()
    write_params(repo / "study", study)
    return repo


def test_a_cell_whose_stage_fails_is_one_line_and_no_aggregate(tmp_path, monkeypatch, capsys):
    study = tiny_study([0, 1])
    study["data"].update(source="idx", dir="no/such/folder")
    monkeypatch.chdir(study_folder(tmp_path, study))
    assert run_main(study_engine.main) == 2
    assert re.fullmatch(r"error: study cell artifacts/study/runs/noise0\.0_seed0: `python -m stages.prepare_data "
                        r"--params study/params.yaml --run-dir artifacts/study/runs/noise0\.0_seed0 --set "
                        r"data.label_noise=0\.0 --set data.seed=0` failed \(exit status 2\): .*no/such/folder.*",
                        capsys.readouterr().err.strip().splitlines()[-1])
    assert not (tmp_path / "artifacts/study/summary.csv").exists()


@pytest.mark.slow
@needs_dask
def test_a_two_by_two_grid_on_a_local_cluster_gives_the_summary_of_one_process(tmp_path, monkeypatch, capsys):
    study = tiny_study([0, 1])
    study["data"].update(train_size=100, test_size=50)
    study["train"].update(epochs=1)
    # the same thread count both ways: training's bits depend on it, and `auto` is 1 on a Dask worker
    study["compute"].update(threads=1)
    summaries = {}
    for engine in ("none", "dask"):
        repo = study_folder(tmp_path / engine, study, engine=engine, workers=2)
        monkeypatch.chdir(repo)
        assert run_main(study_engine.main) == 0
        summaries[engine] = {name: (repo / "artifacts" / name).read_bytes()
                             for name in ("study/summary.csv", "study/summary.md", "metrics/study.json")}
        assert len(list((repo / "artifacts/study/runs").iterdir())) == 4
    assert summaries["dask"] == summaries["none"]
