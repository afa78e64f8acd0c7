"""The shared module: params validation, atomic writes, safe loading, devices, torchvision."""
import os
import subprocess
import sys

import pytest
import torch

from conftest import ROOT, TINY_PARAMS, tiny_params
from stages import common
from stages.common import PipelineError, validate_params


def test_default_and_tiny_params_are_valid():
    import yaml
    validate_params(yaml.safe_load((ROOT / "params.yaml").read_text()))
    validate_params(TINY_PARAMS)


@pytest.mark.parametrize("section,key,value,message", [
    ("train", "epochs", 0, "'train.epochs' is 0; it must be an integer from 1 to 1000"),
    ("train", "epochs", 2.5, "'train.epochs' is 2.5; it must be an integer"),
    ("train", "epochs", True, "'train.epochs' is True"),
    ("train", "batch_size", -1, "'train.batch_size' is -1"),
    ("train", "lr", 0, "'train.lr' is 0; it must be a number in (0, 10]"),
    ("train", "lr", "1e-3", "'train.lr' is '1e-3'"),
    ("train", "lr", float("nan"), "'train.lr' is nan"),
    ("data", "train_size", 60001, "'data.train_size' is 60001; it must be an integer from 1 to 60000"),
    ("data", "test_size", 10001, "'data.test_size' is 10001; it must be an integer from 1 to 10000"),
    ("data", "train_size", 0, "'data.train_size' is 0"),
    ("data", "image_size", 16, "'data.image_size' is 16; it must be an integer from 32 to 448"),
    ("data", "image_size", 4096, "'data.image_size' is 4096"),
    ("data", "source", "kaggle", "'data.source' is 'kaggle'; it must be one of packaged, torchvision, idx"),
    ("data", "selection", "random", "'data.selection' is 'random'; it must be one of first, stratified"),
    ("train", "device", "tpu", "'train.device' is 'tpu'; it must be auto, cpu, cuda, cuda:N or mps"),
    ("train", "precision", "fp16", "'train.precision' is 'fp16'; it must be one of auto, fp32, bf16"),
    ("rof", "ranking", "l2", "'rof.ranking' is 'l2'; it must be one of l1, random, ascending"),
    ("rof", "acc_tolerance", -0.1, "'rof.acc_tolerance' is -0.1"),
])
def test_bad_values_are_named_with_what_is_allowed(section, key, value, message):
    with pytest.raises(PipelineError, match=None) as info:
        validate_params(tiny_params(**{section: {key: value}}))
    assert message in str(info.value)
    assert "\n" not in str(info.value)


def test_unknown_and_missing_keys_and_sections():
    params = tiny_params()
    params["train"]["epoch"] = 3
    with pytest.raises(PipelineError, match="unknown key 'train.epoch'; allowed keys: epochs, batch_size"):
        validate_params(params)
    params = tiny_params()
    del params["rof"]["seed"]
    with pytest.raises(PipelineError, match="missing key 'rof.seed'"):
        validate_params(params)
    params = tiny_params()
    params["trian"] = {}
    with pytest.raises(PipelineError, match="unknown section 'trian'"):
        validate_params(params)


def test_load_params_reports_bad_yaml(tmp_path):
    (tmp_path / "params.yaml").write_text("data: [unclosed\n")
    with pytest.raises(PipelineError, match="params.yaml: not valid YAML"):
        common.load_params("data", tmp_path / "params.yaml")
    with pytest.raises(PipelineError, match="file not found"):
        common.load_params("data", tmp_path / "absent.yaml")


def test_run_stage_prints_one_line_and_exits_2(capsys):
    def failing():
        raise PipelineError("x.pt: broken; allowed: y")
    with pytest.raises(SystemExit) as info:
        common.run_stage(failing)
    assert info.value.code == 2
    assert capsys.readouterr().err == "error: x.pt: broken; allowed: y\n"


def test_atomic_write_keeps_the_previous_file_on_failure(tmp_path):
    target = tmp_path / "out.json"
    common.write_json({"v": 1}, target)
    with pytest.raises(RuntimeError):
        with common.atomic_path(target) as tmp:
            tmp.write_text('{"v": 2, "trunc')
            raise RuntimeError("killed half-way")
    assert target.read_text() == '{\n  "v": 1\n}\n'
    assert sorted(p.name for p in tmp_path.iterdir()) == ["out.json"]


def test_stale_temporaries_are_removed(tmp_path):
    (tmp_path / ".model.pt.tmp-123").write_bytes(b"half")
    (tmp_path / "other.pt").write_bytes(b"keep")
    common.remove_stale_temps(tmp_path / "model.pt")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["other.pt"]


def test_load_checked_refuses_corrupt_truncated_and_pickled_code(tmp_path):
    good = tmp_path / "good.pt"
    torch.save({"a": torch.ones(3)}, good)
    assert common.load_checked(good, {"a": lambda v: v.shape == (3,)}, "thing")["a"].sum() == 3
    truncated = tmp_path / "truncated.pt"
    truncated.write_bytes(good.read_bytes()[:100])
    with pytest.raises(PipelineError, match="truncated.pt: corrupt or not a thing"):
        common.load_checked(truncated, {}, "thing")
    code = tmp_path / "code.pt"
    torch.save({"a": os.getcwd, "b": torch.ones(1)}, code)  # a pickled function is refused by weights_only
    with pytest.raises(PipelineError, match="code.pt: corrupt or not a thing"):
        common.load_checked(code, {}, "thing")
    with pytest.raises(PipelineError, match="entry 'b' is missing or malformed"):
        common.load_checked(good, {"b": lambda v: True}, "thing")
    with pytest.raises(PipelineError, match="absent.pt: thing not found"):
        common.load_checked(tmp_path / "absent.pt", {}, "thing")


@pytest.mark.skipif(torch.cuda.is_available(), reason="needs a machine without CUDA")
def test_missing_cuda_is_an_error_and_auto_falls_back():
    with pytest.raises(PipelineError, match="'train.device' is 'cuda' but no CUDA device is available"):
        common.choose_device("cuda", "train.device")
    assert common.choose_device("auto", "train.device").type in ("cpu", "mps")


@pytest.mark.skipif(torch.backends.mps.is_available(), reason="needs a machine without MPS")
def test_missing_mps_is_an_error():
    with pytest.raises(PipelineError, match="'extract_features.device' is 'mps' but no MPS device is available"):
        common.choose_device("mps", "extract_features.device")


def test_auto_precision_picks_bf16_only_where_native():
    cpu = torch.device("cpu")
    expected = "bf16" if common.bf16_supported(cpu) else "fp32"
    assert common.choose_precision("auto", cpu, "k") == expected
    assert common.choose_precision("fp32", cpu, "k") == "fp32"


def test_torchvision_imports_on_this_torch():
    # A fresh interpreter: the shim must be what makes `torchvision.models` importable, and it
    # must define the nms schema only when torchvision's own extension is missing.
    code = ("from stages import common; m = common.torchvision_models(); "
            "net = m.resnet18(weights=None); import torch; "
            "print(len(common._TORCHVISION_SHIM), common._op_defined('torchvision::nms'), "
            "sum(p.numel() for p in net.parameters()))")
    out = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, check=True)
    shims, nms_defined, n_params = out.stdout.split()
    assert nms_defined == "True" and n_params == "11689512"
    extension_ok = subprocess.run([sys.executable, "-c", "from stages import common; "
                                   "print(common._torchvision_extension_loads())"],
                                  cwd=ROOT, capture_output=True, text=True, check=True).stdout.strip()
    assert shims == ("0" if extension_ok == "True" else "1")


def test_model_head_stays_fp32_under_autocast():
    torch.manual_seed(0)
    model = common.build_model().eval()
    x = torch.rand(2, 3, 32, 32)
    with torch.no_grad(), torch.autocast("cpu", dtype=torch.bfloat16):
        out = model(x)
    assert out.dtype == torch.float32
    assert list(model.state_dict())[-2:] == ["fc.weight", "fc.bias"]


def test_resource_guard_refuses_what_does_not_fit(tmp_path):
    with pytest.raises(PipelineError, match=r"the images would need about .* GiB of memory"):
        common.check_fits(10 * 1024**5, tmp_path, "the images")
    common.check_fits(1024, tmp_path, "the images")


def test_release_free_memory_returns_freed_heap_pages():
    # A fresh interpreter: 4000 heap blocks of 64 KiB are filled, all but the last freed (the last
    # pins the heap's top, so glibc cannot shrink it by itself); releasing must drop the RSS.
    code = ("import torch; from stages import common\n"
            "rss = lambda: int(open('/proc/self/statm').read().split()[1]) * 4096 / 2**20\n"
            "blocks = [torch.ones(16384) for _ in range(4000)]; pinned = blocks[-1]; del blocks\n"
            "before = rss(); common.release_free_memory(); print(before - rss())")
    out = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, check=True)
    assert float(out.stdout) > 150, f"only {out.stdout.strip()} MiB released"
