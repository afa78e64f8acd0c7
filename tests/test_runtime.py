"""netunits.runtime: one-line errors, devices, precision, memory guards."""
from pathlib import Path

import pytest
import torch

from netunits import runtime
from netunits.errors import PipelineError


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


def test_errors_name_the_params_file_the_stage_reads(capsys):
    def failing(argv):
        runtime.stage_args("x", argv)
        raise PipelineError("params.yaml: 'train.epochs' is -1; it must be an integer from 0 to 1000")
    with pytest.raises(SystemExit):
        runtime.run_stage(failing, ["--params", "study/params.yaml"])
    assert capsys.readouterr().err.startswith("error: study/params.yaml: 'train.epochs' is -1")
    with pytest.raises(SystemExit):
        runtime.run_stage(failing, [])
    assert capsys.readouterr().err.startswith("error: params.yaml: 'train.epochs'")
