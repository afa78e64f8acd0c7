"""netunits.runtime: one-line errors, devices, precision, memory guards."""
from pathlib import Path

import pytest
import torch
import yaml

from conftest import tiny_params
from netunits import runtime
from netunits.errors import PipelineError
from netunits.params import Compute


def test_run_stage_prints_one_line_and_exits_2(capsys):
    def failing(argv):
        raise PipelineError("x.pt: broken; allowed: y")
    with pytest.raises(SystemExit) as info:
        runtime.run_stage(failing, [])
    assert info.value.code == 2
    assert capsys.readouterr().err == "error: x.pt: broken; allowed: y\n"


def test_stage_args_defaults_and_options():
    args = runtime.stage_args("x", [])
    assert (args.params, args.overrides, args.run_dir) == ("params.yaml", [], Path("."))
    args = runtime.stage_args("x", ["--params", "study/params.yaml", "--set", "data.seed=1", "--set", "train.seed=1",
                                    "--run-dir", "runs/a"])
    assert (args.params, args.overrides, args.run_dir) == ("study/params.yaml", ["data.seed=1", "train.seed=1"],
                                                           Path("runs/a"))


@pytest.mark.skipif(torch.cuda.is_available(), reason="needs a machine without CUDA")
def test_missing_cuda_is_an_error_and_auto_falls_back():
    with pytest.raises(PipelineError, match="'train.device' is 'cuda' but no CUDA device is available"):
        runtime.choose_device("cuda", "train.device")
    assert runtime.choose_device("auto", "train.device").type in ("cpu", "mps")


@pytest.mark.skipif(torch.backends.mps.is_available(), reason="needs a machine without MPS")
def test_missing_mps_is_an_error():
    with pytest.raises(PipelineError, match="'extract_features.device' is 'mps' but no MPS device is available"):
        runtime.choose_device("mps", "extract_features.device")


def cpu_flags():
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("flags"):
                return set(line.split(":", 1)[1].split())
    except OSError:
        pass
    return None


@pytest.mark.skipif(cpu_flags() is None, reason="needs /proc/cpuinfo to know the CPU's bf16 support")
def test_auto_precision_picks_bf16_only_where_the_cpu_has_native_bf16():
    # the expectation comes from the CPU's own flags, not from the function under test
    native = bool(cpu_flags() & {"avx512_bf16", "amx_bf16"})
    cpu = torch.device("cpu")
    assert runtime.choose_precision("auto", cpu, "k") == ("bf16" if native else "fp32")
    assert runtime.choose_precision("fp32", cpu, "k") == "fp32"
    assert runtime.choose_precision("bf16", cpu, "k") == "bf16"


def test_resource_guard_refuses_what_does_not_fit(tmp_path):
    with pytest.raises(PipelineError, match=r"the images would need about .* GiB of memory"):
        runtime.check_fits(10 * 1024**5, tmp_path, "the images")
    runtime.check_fits(1024, tmp_path, "the images")


def test_progress_is_silent_off_a_terminal(capsys):
    assert list(runtime.progress(range(3), "x")) == [0, 1, 2]
    assert capsys.readouterr().err == ""


def test_errors_name_the_params_file_the_stage_reads(tmp_path, capsys):
    params = tmp_path / "study.yaml"
    params.write_text(yaml.safe_dump(tiny_params(train={"epochs": -1}, compute={"device": "cpu"})))

    def stage(argv):
        args = runtime.stage_args("x", argv)
        config = runtime.stage_config(args, "compute")
        runtime.resolve_compute(config.compute, analysis=True, source=config.source)
        runtime.stage_config(args, "train")
    with pytest.raises(SystemExit):
        runtime.run_stage(stage, ["--params", str(params)])
    assert capsys.readouterr().err == f"error: {params}: 'train.epochs' is -1; it must be an integer from 0 to 1000\n"


def compute(**keys):
    """A compute section with these keys and the engine's defaults."""
    return Compute(engine="none", scheduler=None, workers=2, **keys)


def test_resolve_compute_keeps_the_analysis_stages_in_fp32_under_auto():
    cpu = runtime.resolve_compute(compute(device="cpu", precision="auto", threads="auto"), analysis=True)
    assert cpu == runtime.Runtime(torch.device("cpu"), "fp32")
    training = runtime.resolve_compute(compute(device="cpu", precision="auto", threads="auto"), analysis=False)
    assert training.precision == runtime.choose_precision("auto", torch.device("cpu"))
    assert runtime.resolve_compute(compute(device="cpu", precision="bf16", threads="auto"), analysis=True).precision \
        == "bf16"
    threads = torch.get_num_threads()
    try:
        runtime.resolve_compute(compute(device="cpu", precision="fp32", threads=1), analysis=False)
        assert torch.get_num_threads() == 1
    finally:
        torch.set_num_threads(threads)


@pytest.mark.skipif(torch.cuda.is_available(), reason="needs a machine without CUDA")
def test_a_missing_device_names_compute_and_the_file():
    with pytest.raises(PipelineError, match=r"^cifar/params.yaml: 'compute.device' is 'cuda' but no CUDA device"):
        runtime.resolve_compute(compute(device="cuda", precision="auto", threads="auto"), False, "cifar/params.yaml")
