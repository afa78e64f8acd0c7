"""netunits.params: the pydantic sections, their one-line messages, and --set overrides."""
import pydantic
import pytest
import yaml

from conftest import ROOT, TINY_PARAMS, tiny_params
from netunits.errors import PipelineError
from netunits.params import apply_overrides, load_params, validate_params

PIPELINE_SECTIONS = ("compute", "data", "train", "extract_features", "rof", "plot")


def test_default_tiny_and_study_params_are_valid():
    params = load_params(ROOT / "params.yaml", required=PIPELINE_SECTIONS)
    assert params.rof.ranking == "l1" and params.compute.precision == "auto" and params.source.endswith("params.yaml")
    validate_params(TINY_PARAMS, PIPELINE_SECTIONS)
    load_params(ROOT / "cifar/params.yaml", required=PIPELINE_SECTIONS)
    for study in ("study/params.yaml", "study/profiles/gpu.yaml"):
        load_params(ROOT / study, required=("grid", "compute", "data", "train", "aggregate"))


@pytest.mark.parametrize("section,key,value,message", [
    ("train", "epochs", -1, "'train.epochs' is -1; it must be an integer from 0 to 1000"),
    ("train", "epochs", 2.5, "'train.epochs' is 2.5; it must be an integer"),
    ("train", "epochs", True, "'train.epochs' is True"),
    ("train", "batch_size", -1, "'train.batch_size' is -1"),
    ("train", "lr", 0, "'train.lr' is 0; it must be a number in (0, 10]"),
    ("train", "lr", "1e-3", "'train.lr' is '1e-3'"),
    ("train", "lr", float("nan"), "'train.lr' is nan"),
    ("train", "arch", "", "'train.arch' is ''; it must be a non-empty name"),
    ("train", "weights", 3, "'train.weights' is 3; it must be null or a file path"),
    ("train", "input_norm", "cifar", "'train.input_norm' is 'cifar'; it must be one of none, imagenet"),
    ("data", "train_size", 0, "'data.train_size' is 0; it must be an integer >= 1"),
    ("data", "image_size", 16, "'data.image_size' is 16; it must be an integer from 32 to 448"),
    ("data", "image_size", 4096, "'data.image_size' is 4096"),
    ("data", "label_noise", 0.95, "'data.label_noise' is 0.95; it must be a number in [0, 0.9]"),
    ("data", "source", "kaggle",
     "'data.source' is 'kaggle'; it must be one of packaged, torchvision, idx, jpeg, batches"),
    ("data", "selection", "random", "'data.selection' is 'random'; it must be one of first, stratified"),
    ("compute", "device", "tpu", "'compute.device' is 'tpu'; it must be auto, cpu, cuda, cuda:N or mps"),
    ("compute", "device", "cuda:x", "'compute.device' is 'cuda:x'"),
    ("compute", "precision", "fp16", "'compute.precision' is 'fp16'; it must be one of auto, fp32, bf16"),
    ("compute", "threads", 0, "'compute.threads' is 0; it must be auto or an integer from 1 to 256"),
    ("compose", "connectors", ["OR", "XOR"], "'compose.connectors' is ['OR', 'XOR']; it must be a non-empty list"),
    ("compose", "batch_size", 0, "'compose.batch_size' is 0; it must be an integer from 1 to 65536"),
    ("influence", "table_k", 7, "'influence.table_k' is 7; it must be one of influence.k (5, 10, 15, 20, 25, 30, 35)"),
    ("grid", "label_noise", [0.0, 1.5], "'grid.label_noise' is [0.0, 1.5]; it must be a non-empty list"),
    ("extract_features", "layers", [], "'extract_features.layers' is []; it must be a non-empty list"),
    ("extract_features", "layers", ["avgpool", "avgpool"], "'extract_features.layers' is ['avgpool', 'avgpool']"),
    ("rof", "ranking", "l2", "'rof.ranking' is 'l2'; it must be one of l1, random, ascending"),
    ("rof", "acc_tolerance", -0.1, "'rof.acc_tolerance' is -0.1"),
    ("dissect", "quantile", 1.0, "'dissect.quantile' is 1.0; it must be a number in (0, 1)"),
    ("dissect", "quantile", 0, "'dissect.quantile' is 0; it must be a number in (0, 1)"),
    ("probe", "source", "coco", "'probe.source' is 'coco'; it must be one of mnist, cifar10, broden"),
    ("influence", "k_image", 0, "'influence.k_image' is 0; it must be same or an integer >= 1"),
    ("evaluate", "heldout_fraction", 1.0, "'evaluate.heldout_fraction' is 1.0; it must be a number in (0, 1)"),
    ("evaluate", "heldout_fraction", 0, "'evaluate.heldout_fraction' is 0; it must be a number in (0, 1)"),
    ("evaluate", "nulls", ["random_init", "shuffled"], "'evaluate.nulls' is ['random_init', 'shuffled']; it must be a "
     "non-empty list of distinct values, each one of random_init, permuted_labels"),
    ("evaluate", "null_seeds", [], "'evaluate.null_seeds' is []; it must be a non-empty list"),
    ("evaluate", "fdr", 1, "'evaluate.fdr' is 1; it must be a number in (0, 1)"),
    ("evaluate", "min_coverage", 0, "'evaluate.min_coverage' is 0; it must be a number in (0, 1]"),
    ("finetune", "lr", 0, "'finetune.lr' is 0; it must be a number in (0, 1]"),
    ("finetune", "epochs", -1, "'finetune.epochs' is -1; it must be an integer from 0 to 100"),
    ("finetune", "batch_size", 1, "'finetune.batch_size' is 1; it must be an integer from 2 to 65536"),
    ("finetune", "train_size", "half", "'finetune.train_size' is 'half'; it must be all or an integer >= 2"),
    ("layer_rof", "layers", [], "'layer_rof.layers' is []; it must be a non-empty list"),
    ("layer_rof", "k_step", 0, "'layer_rof.k_step' is 0; it must be an integer >= 1"),
    ("layer_rof", "images", 0, "'layer_rof.images' is 0; it must be all or an integer >= 1"),
])
def test_bad_values_are_named_with_what_is_allowed(section, key, value, message):
    with pytest.raises(PipelineError) as info:
        params = {**tiny_params(), "grid": {"label_noise": [0.0], "seeds": [0]}}
        params[section] = {**params[section], key: value}
        validate_params(params, source="some/params.yaml")
    assert str(info.value).startswith("some/params.yaml: " + message)
    assert "\n" not in str(info.value)


def test_unknown_and_missing_keys_and_sections():
    params = tiny_params()
    params["train"]["epoch"] = 3
    with pytest.raises(PipelineError, match="unknown key 'train.epoch'; allowed keys: arch, weights"):
        validate_params(params)
    params = tiny_params()
    params["train"]["device"] = "cpu"           # the device is compute's, for every stage
    with pytest.raises(PipelineError, match="unknown key 'train.device'"):
        validate_params(params)
    params = tiny_params()
    params["rof"]["layer"] = "avgpool"          # the registry's, from the checkpoint's architecture
    with pytest.raises(PipelineError, match="unknown key 'rof.layer'; allowed keys: ranking, turning_point"):
        validate_params(params)
    params = tiny_params()
    params["rof"] = None
    with pytest.raises(PipelineError, match="section 'rof' is not a mapping; it needs the keys ranking"):
        validate_params(params)
    params = tiny_params()
    del params["rof"]["seed"]
    with pytest.raises(PipelineError, match="missing key 'rof.seed'"):
        validate_params(params)
    params = tiny_params()
    params["trian"] = {}
    with pytest.raises(PipelineError, match="unknown section 'trian'"):
        validate_params(params)
    params = tiny_params()
    del params["plot"]
    validate_params(params, ("rof",))               # a stage needs only its own section ...
    with pytest.raises(PipelineError, match="section 'plot' is missing; it needs the keys dpi"):
        validate_params(params, ("plot",))         # ... which must be there


def test_load_params_reports_bad_yaml(tmp_path):
    (tmp_path / "params.yaml").write_text("data: [unclosed\n")
    with pytest.raises(PipelineError, match="params.yaml: not valid YAML"):
        load_params(tmp_path / "params.yaml")
    with pytest.raises(PipelineError, match="file not found"):
        load_params(tmp_path / "absent.yaml")


def test_overrides_are_parsed_as_yaml_and_validated(tmp_path):
    path = tmp_path / "params.yaml"
    path.write_text(yaml.safe_dump(TINY_PARAMS))
    data = load_params(path, ["data.label_noise=0.2", "data.seed=3"], ("data",)).data
    assert data.label_noise == 0.2 and data.seed == 3
    assert TINY_PARAMS["data"]["seed"] == 0                      # the loaded file, not the dict, changed
    with pytest.raises(PipelineError, match=r"'data.label_noise' is 2; it must be a number in \[0, 0.9\]"):
        load_params(path, ["data.label_noise=2"])
    with pytest.raises(PipelineError, match="has no key 'data.nosie' to override"):
        load_params(path, ["data.nosie=0.2"])
    with pytest.raises(PipelineError, match="expected section.key=value"):
        apply_overrides(TINY_PARAMS, ["seed=3"], path)


def test_the_file_name_is_the_loaded_one_and_values_keep_their_type(tmp_path):
    path = tmp_path / "other.yaml"
    path.write_text(yaml.safe_dump(tiny_params(train={"epochs": -1})))
    with pytest.raises(PipelineError) as info:
        load_params(path, required=("train",))
    assert str(info.value) == f"{path}: 'train.epochs' is -1; it must be an integer from 0 to 1000"
    params = validate_params(tiny_params(clip_dissect={"soft_wpmi_a": 10}), source="x.yaml")
    assert params.source == "x.yaml"
    assert type(params.clip_dissect.soft_wpmi_a) is int and params.model_dump()["clip_dissect"]["soft_wpmi_a"] == 10
    with pytest.raises(pydantic.ValidationError):
        params.rof.seed = 1                          # frozen: one set of params per run
