"""The params schema: one pydantic model per section, and loading a params file.

A params file (params.yaml, cifar/params.yaml, study/params.yaml) holds some of the sections of
`Params`; every section present is checked whole, so a typo anywhere stops the first stage that
runs instead of surfacing after minutes of training. Any problem is one line naming the file,
the key, the value and what is allowed (`PipelineError`). Names that only a registry knows (data
set, architecture, layer) are checked where they are used, with the allowed names in the message.

Facts that hold across stages are stated once: the layer ROF and the influential filters read
(the final layer's input) and the block that feeds it come from the architecture registry
(`Architecture.pooled_layer`, `.last_block`), and the device, precision and threads of every
stage that runs a model from the one `compute` section.
"""
from __future__ import annotations

import copy
import math
from pathlib import Path
from typing import Annotated, Any, Callable, Literal, Optional, Union

import yaml
from pydantic import BaseModel, BeforeValidator, ConfigDict, PrivateAttr, ValidationError, model_validator
from pydantic_core import PydanticCustomError

from netunits.errors import PipelineError

PARAMS_FILE = "params.yaml"
# ResNets halve the resolution five times; below 32 px their last block sees padding, not the image.
MIN_IMAGE_SIZE, MAX_IMAGE_SIZE = 32, 448


# --------------------------------------------------------------------------------------------
# field types: a check and the words that say what it allows
# --------------------------------------------------------------------------------------------
class Allowed(str):
    """Marks a field's 'what is allowed' text in its metadata (for the missing-key message)."""


def checked(kind: Any, ok: Callable[[Any], bool], allowed: str) -> Any:
    """The type `kind` whose values must pass `ok`, else the one-line '... it must be <allowed>'."""
    def validate(value):
        if not ok(value):
            raise PydanticCustomError("param", "it must be {allowed}", {"allowed": allowed})
        return value
    return Annotated[kind, BeforeValidator(validate), Allowed(allowed)]


def _is_int(v) -> bool:
    return isinstance(v, int) and not isinstance(v, bool)


def _is_number(v) -> bool:
    return not isinstance(v, bool) and isinstance(v, (int, float)) and math.isfinite(v)


def int_range(lo: int, hi: int | None = None) -> Any:
    allowed = f"an integer from {lo} to {hi}" if hi is not None else f"an integer >= {lo}"
    return checked(int, lambda v: _is_int(v) and v >= lo and (hi is None or v <= hi), allowed)


def float_range(lo: float, hi: float, lo_open: bool = False, hi_open: bool = False) -> Any:
    # int or float as written: a value keeps the type the file gave it (10 stays 10 in the outputs)
    def ok(v):
        return _is_number(v) and (v > lo if lo_open else v >= lo) and (v < hi if hi_open else v <= hi)
    return checked(Union[int, float], ok, f"a number in {'(' if lo_open else '['}{lo}, {hi}{')' if hi_open else ']'}")


def choice(*options: str) -> Any:
    return checked(Literal[options], lambda v: isinstance(v, str) and v in options,
                   "one of " + ", ".join(options))


def _name(v) -> bool:
    return isinstance(v, str) and v.strip() != "" and v == v.strip()


def list_of(item_ok: Callable[[Any], bool], item_allowed: str, kind: Any = str) -> Any:
    def ok(v):
        return isinstance(v, list) and len(v) > 0 and all(item_ok(x) for x in v) and len(set(v)) == len(v)
    return checked(list[kind], ok, f"a non-empty list of distinct values, each {item_allowed}")


def _scheduler_address(v) -> bool:
    host, sep, port = v.removeprefix("tcp://").rpartition(":") if isinstance(v, str) else ("", "", "")
    return v.startswith("tcp://") and sep == ":" and _name(host) and " " not in host and port.isdigit() \
        and 0 < int(port) < 65536


def _device(v) -> bool:
    return isinstance(v, str) and (v in ("auto", "cpu", "cuda", "mps") or
                                   (v.startswith("cuda:") and v[5:].isdigit()))


Name = checked(str, _name, "a non-empty name")
OptionalPath = checked(Optional[str], lambda v: v is None or _name(v), "null or a file path")
Folder = checked(str, _name, "a folder path")
Seed = int_range(0, 2**31 - 1)
LabelNoise = float_range(0, 0.9)   # prepare_data also keeps it at most (classes - 1) / classes
Layers = list_of(_name, "a module name of the model")
BatchSize = int_range(1, 65536)
Dpi = int_range(30, 600)


def _key_error(key: str, value: Any, allowed: str) -> PydanticCustomError:
    """A cross-check's failure, reported against one key of the section."""
    return PydanticCustomError("param_key", "it must be {allowed}", {"key": key, "value": value, "allowed": allowed})


def _line_error(line: str) -> PydanticCustomError:
    """A cross-check's failure that names several keys: the whole line after the file name."""
    return PydanticCustomError("param_line", "{line}", {"line": line})


class Section(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


# --------------------------------------------------------------------------------------------
# the sections
# --------------------------------------------------------------------------------------------
class Compute(Section):
    """Where and how every stage that runs a model runs it."""
    device: checked(str, _device, "auto, cpu, cuda, cuda:N or mps")
    # auto: bf16 for train and extract_features where the hardware runs it natively, fp32 for the
    # analysis stages (dissect, compose, clip_dissect, report); fp32 | bf16: every stage
    precision: choice("auto", "fp32", "bf16")
    threads: checked(Union[int, str], lambda v: v == "auto" or (_is_int(v) and 1 <= v <= 256),
                     "auto or an integer from 1 to 256")
    # where sharded passes and the study's cells run (netunits.engine): none, in this process in
    # turn; dask, as tasks on a cluster: the scheduler at an address, or (null) a local one of
    # `workers` processes of one thread each
    engine: choice("none", "dask")
    scheduler: checked(Optional[str], lambda v: v is None or _scheduler_address(v),
                       "null (a local cluster) or a scheduler address tcp://host:port")
    workers: int_range(1, 256)


class DataParams(Section):
    dataset: Name                                   # a name in netunits.data.DATASETS
    source: choice("packaged", "torchvision", "idx", "jpeg", "batches")
    dir: checked(str, _name, "a folder path (read by the sources idx, jpeg and batches)")
    train_size: int_range(1)                        # the data set's split size is checked by prepare_data
    test_size: int_range(1)
    selection: choice("first", "stratified")
    image_size: int_range(MIN_IMAGE_SIZE, MAX_IMAGE_SIZE)
    label_noise: LabelNoise
    seed: Seed


class TrainParams(Section):
    arch: Name                                      # a name in netunits.models.ARCHITECTURES
    weights: OptionalPath
    input_norm: choice("none", "imagenet")
    epochs: int_range(0, 1000)
    batch_size: int_range(2, 65536)
    lr: float_range(0, 10, lo_open=True)
    lr_schedule: choice("constant", "cosine")
    seed: Seed
    eval_batch_size: BatchSize

    @model_validator(mode="after")
    def _weights_without_training(self):
        if self.epochs == 0 and self.weights is None:
            raise _line_error("'train.epochs' is 0 but 'train.weights' is null; with no training the model must "
                              "come from a weights file")
        return self


class ExtractFeaturesParams(Section):
    layers: Layers                                  # must include the architecture's pooled layer
    batch_size: BatchSize


class RofParams(Section):
    ranking: choice("l1", "random", "ascending")
    turning_point: choice("exact", "tolerance")
    acc_tolerance: float_range(0, 1)
    loss_tolerance: float_range(0, 10)
    seed: Seed


class LayerRofParams(Section):
    """ROF at layers with spatial maps (stage layer_rof); turning points and roles as in `rof`."""
    layers: Layers                                  # each checked against the model by the stage
    k_step: int_range(1)                            # grid step; below every listed layer's channel count
    images: checked(Union[int, Literal["all"]], lambda v: v == "all" or (_is_int(v) and v >= 1),
                    "all or an integer >= 1")       # per subset: all, or a seeded random sample
    seed: Seed
    batch_size: BatchSize


class InfluenceParams(Section):
    k: list_of(lambda v: _is_int(v) and v >= 1, "an integer >= 1", int)
    k_image: checked(Union[int, Literal["same"]], lambda v: v == "same" or (_is_int(v) and v >= 1),
                     "same or an integer >= 1")
    table_k: int_range(1)
    noise_seed: Seed

    @model_validator(mode="after")
    def _table_k_is_swept(self):
        if self.table_k not in self.k:
            raise _key_error("table_k", self.table_k, f"one of influence.k ({', '.join(map(str, self.k))})")
        return self


class FinetuneParams(Section):
    """Fine-tuning the decomposed network (stage finetune_decomposed)."""
    k: int_range(1)                                 # one of influence.k: checked against sets.json by the stage
    epochs: int_range(0, 100)
    lr: float_range(0, 1, lo_open=True)
    batch_size: int_range(2, 65536)                 # train mode: batch norm needs two images per batch
    train_size: checked(Union[int, Literal["all"]], lambda v: v == "all" or (_is_int(v) and v >= 2),
                        "all or an integer >= 2")
    seed: Seed


class ProbeParams(Section):
    source: choice("mnist", "cifar10", "broden")
    dir: checked(str, _name, "a folder path (read when source is broden)")
    size: int_range(1)
    mask_size: int_range(8, 448)
    # source cifar10: how pixels get one of the eleven basic colour terms (netunits.concepts_colour.COLOUR_RULES)
    colour_rule: choice("xkcd_names", "xkcd_basic")


class DissectParams(Section):
    layers: Layers
    quantile: float_range(0, 1, lo_open=True, hi_open=True)
    iou_threshold: float_range(0, 1)
    top_images: int_range(1, 50)
    batch_size: BatchSize
    shards: int_range(1)                            # at most the probe's batches: checked by the stage


CONNECTORS = ("OR", "AND", "AND NOT", "WITH", "CLOSE TO", "CLOSE")


class ComposeParams(Section):
    layers: list_of(_name, "a layer that dissect.layers names")
    resolution: choice("mask", "layer")
    downsample_min: float_range(0, 1, lo_open=True)
    connectors: list_of(lambda v: v in CONNECTORS, "one of " + ", ".join(CONNECTORS))
    expand: checked(bool, lambda v: isinstance(v, bool), "true or false")
    score: choice("iou", "imrou")
    imrou_r: float_range(0, 1)
    length_penalty: float_range(0, 0.1)
    beam: int_range(1)
    max_length: int_range(1, 10)
    candidates: int_range(1)
    min_gain: float_range(0, 1)
    batch_size: BatchSize


class ClipDissectParams(Section):
    """CLIP-Dissect (stage clip_dissect); the constants as in the reference's similarity.py."""
    source: choice("annotations", "clip")
    layers: Layers
    pool: choice("mean", "max")
    similarity: choice("soft_wpmi", "wpmi", "cos_similarity")
    concepts: OptionalPath
    annotation_quantile: float_range(0, 1, lo_open=True)
    soft_wpmi_top_k: int_range(1)
    soft_wpmi_a: float_range(0, 1000)
    soft_wpmi_lambda: float_range(0, 10)
    soft_wpmi_p_start: float_range(0, 1, lo_open=True)
    soft_wpmi_p_end: float_range(0, 1, lo_open=True)
    wpmi_top_k: int_range(1)
    wpmi_a: float_range(0, 1000)
    wpmi_lambda: float_range(0, 10)
    min_prob: float_range(0, 1, lo_open=True)
    model: Name                                     # an open_clip architecture or a JSON config file
    weights: OptionalPath
    batch_size: BatchSize


NULL_KINDS = ("random_init", "permuted_labels")


class EvaluateParams(Section):
    """Held-out fidelity, null networks and causal agreement (stage evaluate)."""
    heldout_fraction: float_range(0, 1, lo_open=True, hi_open=True)
    seed: Seed
    nulls: list_of(lambda v: v in NULL_KINDS, "one of " + ", ".join(NULL_KINDS))
    null_seeds: list_of(lambda v: _is_int(v) and 0 <= v <= 2**31 - 1, "an integer from 0 to 2147483647", int)
    min_coverage: float_range(0, 1, lo_open=True)
    fdr: float_range(0, 1, lo_open=True, hi_open=True)
    invert_beam: int_range(1, 100)
    invert_max_length: int_range(1, 10)
    invert_max_fraction: float_range(0, 1, lo_open=True)
    # planted units on the first compose layer: formulas over the probe's concepts, or noise; [] for none
    planted: checked(list[str], lambda v: isinstance(v, list) and all(_name(x) for x in v) and len(set(v)) == len(v),
                     "a list of distinct formulas over the probe's concepts or noise ([] for none)")
    batch_size: BatchSize


class AblateParams(Section):
    """Zeroing each unit of the dissected layers (stage ablate): the held-out probe images of
    evaluate's split; the block feeding the final layer exactly on all of them, earlier layers by
    a forward pass of the rest of the network on a class-balanced sample."""
    images_per_class: checked(Union[int, Literal["all"]], lambda v: v == "all" or (_is_int(v) and v >= 1),
                              "all or an integer >= 1")
    seed: Seed
    batch_size: BatchSize


class CompareParams(Section):
    """Networks compared on one probe (stage compare_models): the pipeline's own training with other
    seeds, with label noise, and the architecture at random initialisation."""
    train_seeds: list_of(lambda v: _is_int(v) and 0 <= v <= 2**31 - 1, "an integer from 0 to 2147483647", int)
    label_noise: list_of(lambda v: _is_number(v) and 0 < v <= 0.9, "a number in (0, 0.9]", Union[int, float])
    random_init_seed: Seed
    batch_size: BatchSize
    dpi: Dpi


class FeaturevisParams(Section):
    """Feature visualization (stage featurevis): an input optimised per selected unit of `layer`."""
    layer: Name                                     # a module of the model: checked by the stage
    # default: n_units units covering every ROF role of the layer, the best detectors first
    units: checked(Union[Literal["default", "all"], list[int]],
                   lambda v: v in ("default", "all") or (isinstance(v, list) and len(v) > 0 and
                                                         all(_is_int(x) and x >= 0 for x in v) and
                                                         len(set(v)) == len(v)),
                   "default, all or a non-empty list of distinct unit indices >= 0")
    n_units: int_range(1)
    steps: int_range(1, 100000)
    size: checked(Union[int, Literal["auto"]],
                  lambda v: v == "auto" or (_is_int(v) and MIN_IMAGE_SIZE <= v <= MAX_IMAGE_SIZE),
                  f"auto or an integer from {MIN_IMAGE_SIZE} to {MAX_IMAGE_SIZE}")
    lr: float_range(0, 1, lo_open=True)
    transforms: choice("standard", "none")
    decorrelate: checked(bool, lambda v: isinstance(v, bool), "true or false")
    seed: Seed
    batch_size: BatchSize


class ReportParams(Section):
    thumbnail: int_range(16, 224)


class PlotParams(Section):
    dpi: Dpi


class GridParams(Section):
    """The generalization study's grid (study/params.yaml)."""
    label_noise: list_of(lambda v: _is_number(v) and 0 <= v <= 0.9, "a number in [0, 0.9]", Union[int, float])
    seeds: list_of(lambda v: _is_int(v) and 0 <= v <= 2**31 - 1, "an integer from 0 to 2147483647", int)


class AggregateParams(Section):
    turning_point: choice("exact", "tolerance")
    dpi: Dpi


class Params(BaseModel):
    """A whole params file: every section optional here; a stage requires the ones it reads."""
    model_config = ConfigDict(extra="forbid", frozen=True)
    compute: Optional[Compute] = None
    data: Optional[DataParams] = None
    train: Optional[TrainParams] = None
    extract_features: Optional[ExtractFeaturesParams] = None
    rof: Optional[RofParams] = None
    layer_rof: Optional[LayerRofParams] = None
    influence: Optional[InfluenceParams] = None
    finetune: Optional[FinetuneParams] = None
    probe: Optional[ProbeParams] = None
    dissect: Optional[DissectParams] = None
    compose: Optional[ComposeParams] = None
    clip_dissect: Optional[ClipDissectParams] = None
    evaluate: Optional[EvaluateParams] = None
    ablate: Optional[AblateParams] = None
    compare: Optional[CompareParams] = None
    featurevis: Optional[FeaturevisParams] = None
    report: Optional[ReportParams] = None
    plot: Optional[PlotParams] = None
    grid: Optional[GridParams] = None
    aggregate: Optional[AggregateParams] = None
    # the file these came from, for messages about a param ("<file>: 'x.y' is ...")
    _source: str = PrivateAttr(default=PARAMS_FILE)

    @property
    def source(self) -> str:
        return self._source


SECTIONS: dict[str, type[Section]] = {name: field.annotation.__args__[0] for name, field in Params.model_fields.items()}


def section_keys(section: str) -> list[str]:
    return list(SECTIONS[section].model_fields)


def _allowed(section: str, key: str) -> str:
    for item in SECTIONS[section].model_fields[key].metadata:
        if isinstance(item, Allowed):
            return str(item)
    return "set"


def _message(error: dict, raw: dict, source: str) -> str:
    """One line for pydantic's error: the file, the key, the value, what is allowed."""
    loc, kind = error["loc"], error["type"]
    section = str(loc[0])
    if kind == "extra_forbidden" and len(loc) == 1:
        return f"{source}: unknown section '{section}'; allowed: {', '.join(SECTIONS)}"
    keys = ", ".join(section_keys(section))
    if len(loc) == 1 and kind == "param_line":
        return f"{source}: {error['ctx']['line']}"
    if len(loc) == 1 and kind == "param_key":
        key, value = error["ctx"]["key"], error["ctx"]["value"]
        return f"{source}: '{section}.{key}' is {value!r}; it must be {error['ctx']['allowed']}"
    if len(loc) == 1:
        return f"{source}: section '{section}' is not a mapping; it needs the keys {keys}"
    key = str(loc[1])
    if kind == "extra_forbidden":
        return f"{source}: unknown key '{section}.{key}'; allowed keys: {keys}"
    if kind == "missing":
        return f"{source}: missing key '{section}.{key}'; it must be {_allowed(section, key)}"
    allowed = error["ctx"]["allowed"] if kind == "param" else _allowed(section, key)
    return f"{source}: '{section}.{key}' is {raw[section][key]!r}; it must be {allowed}"


def validate_params(raw: Any, required: tuple[str, ...] = (), source: str = PARAMS_FILE) -> Params:
    """`raw` (a params file's mapping) checked: every section present, and the `required` ones
    there; a PipelineError on the first problem."""
    if not isinstance(raw, dict):
        raise PipelineError(f"{source}: expected a mapping of sections ({', '.join(SECTIONS)})")
    for section in raw:
        if section not in SECTIONS:
            raise PipelineError(f"{source}: unknown section '{section}'; allowed: {', '.join(SECTIONS)}")
    for section, values in raw.items():
        if not isinstance(values, dict):
            raise PipelineError(f"{source}: section '{section}' is not a mapping; it needs the keys "
                                f"{', '.join(section_keys(section))}")
    for section in required:
        if section not in raw:
            raise PipelineError(f"{source}: section '{section}' is missing; it needs the keys "
                                f"{', '.join(section_keys(section))}")
    try:
        params = Params.model_validate(raw)
    except ValidationError as exc:
        errors = exc.errors()
        # the file's order of sections; within one, an unknown key first (likely a typo of a missing one)
        order = {name: i for i, name in enumerate(raw)}
        first = min(errors, key=lambda e: (order.get(e["loc"][0], len(order)), e["type"] != "extra_forbidden"))
        raise PipelineError(_message(first, raw, source)) from None
    params._source = source
    return params


def apply_overrides(raw: dict, overrides: tuple[str, ...] | list[str], source: str | Path) -> dict:
    """A copy of the mapping `raw` with `section.key=value` strings applied (values parsed as YAML)."""
    raw = copy.deepcopy(raw)
    for override in overrides:
        name, sep, text = override.partition("=")
        section, dot, key = name.partition(".")
        if not sep or not dot or not key:
            raise PipelineError(f"--set {override!r}: expected section.key=value")
        if not isinstance(raw.get(section), dict) or key not in raw[section]:
            raise PipelineError(f"--set {override!r}: {source} has no key '{name}' to override")
        raw[section][key] = yaml.safe_load(text)
    return raw


def load_params(path: str | Path = PARAMS_FILE, overrides: tuple[str, ...] | list[str] = (),
                required: tuple[str, ...] = ()) -> Params:
    """The params file at `path`, after `overrides` (see apply_overrides), validated; the
    `required` sections must be there."""
    path = Path(path)
    try:
        raw = yaml.safe_load(path.read_text())
    except FileNotFoundError:
        raise PipelineError(f"{path}: file not found; run the stage from the project root") from None
    except yaml.YAMLError as exc:
        raise PipelineError(f"{path}: not valid YAML ({str(exc).splitlines()[0]})") from None
    if overrides:
        if not isinstance(raw, dict):
            raise PipelineError(f"{path}: expected a mapping of sections ({', '.join(SECTIONS)})")
        raw = apply_overrides(raw, overrides, path)
    return validate_params(raw, tuple(required), str(path))
