"""The params schema, one section per stage, and its validation.

A params file (params.yaml, or the study's study/params.yaml) holds some of the sections below;
every section present is checked whole, so a typo anywhere stops the first stage that runs
instead of surfacing after minutes of training. Names that only a registry knows (data set,
architecture, layer) are checked where they are used, with the allowed names in the message.
"""
from __future__ import annotations

import copy
import math
from pathlib import Path

import yaml

from netunits.errors import PipelineError

PARAMS_FILE = "params.yaml"
# ResNets halve the resolution five times; below 32 px their last block sees padding, not the image.
MIN_IMAGE_SIZE, MAX_IMAGE_SIZE = 32, 448


def int_range(lo, hi=None):
    def check(v):
        return isinstance(v, int) and not isinstance(v, bool) and v >= lo and (hi is None or v <= hi)
    return check, f"an integer from {lo} to {hi}" if hi is not None else f"an integer >= {lo}"


def float_range(lo, hi, lo_open=False):
    def check(v):
        if isinstance(v, bool) or not isinstance(v, (int, float)) or not math.isfinite(v):
            return False
        return (v > lo if lo_open else v >= lo) and v <= hi
    return check, f"a number in {'(' if lo_open else '['}{lo}, {hi}]"


def choice(*options):
    return (lambda v: v in options), "one of " + ", ".join(map(str, options))


def list_of(check, allowed, unique=True):
    def check_list(v):
        return isinstance(v, list) and len(v) > 0 and all(check(x) for x in v) and \
            (not unique or len(set(v)) == len(v))
    return check_list, f"a non-empty list of distinct values, each {allowed}"


def _device(v):
    return isinstance(v, str) and (v in ("auto", "cpu", "cuda", "mps") or
                                   (v.startswith("cuda:") and v[5:].isdigit()))


def _threads(v):
    return v == "auto" or (isinstance(v, int) and not isinstance(v, bool) and 1 <= v <= 256)


def _name(v):
    return isinstance(v, str) and v.strip() != "" and v == v.strip()


NAME = (_name, "a non-empty name")
OPTIONAL_PATH = (lambda v: v is None or _name(v), "null or a file path")
DEVICE = (_device, "auto, cpu, cuda, cuda:N or mps")
PRECISION = choice("auto", "fp32", "bf16")
THREADS = (_threads, "auto or an integer from 1 to 256")
SEED = int_range(0, 2**31 - 1)
LABEL_NOISE = float_range(0, 0.9)  # prepare_data also keeps it at most (classes - 1) / classes

SCHEMA = {
    "data": {
        "dataset": NAME,                        # a name in netunits.data.DATASETS
        "source": choice("packaged", "torchvision", "idx", "jpeg", "batches"),
        "dir": (_name, "a folder path (read by the sources idx, jpeg and batches)"),
        "train_size": int_range(1),             # the data set's split size is checked by prepare_data
        "test_size": int_range(1),
        "selection": choice("first", "stratified"),
        "image_size": int_range(MIN_IMAGE_SIZE, MAX_IMAGE_SIZE),
        "label_noise": LABEL_NOISE,
        "seed": SEED,
    },
    "train": {
        "arch": NAME,                           # a name in netunits.models.ARCHITECTURES
        "weights": OPTIONAL_PATH,
        "input_norm": choice("none", "imagenet"),
        "epochs": int_range(0, 1000),
        "batch_size": int_range(2, 65536),
        "lr": float_range(0, 10, lo_open=True),
        "lr_schedule": choice("constant", "cosine"),
        "seed": SEED,
        "device": DEVICE,
        "precision": PRECISION,
        "threads": THREADS,
        "eval_batch_size": int_range(1, 65536),
    },
    "extract_features": {
        "layers": list_of(_name, "a module name of the model"),
        "batch_size": int_range(1, 65536),
        "device": DEVICE,
        "precision": PRECISION,
        "threads": THREADS,
    },
    "rof": {
        "layer": NAME,
        "ranking": choice("l1", "random", "ascending"),
        "turning_point": choice("exact", "tolerance"),
        "acc_tolerance": float_range(0, 1),
        "loss_tolerance": float_range(0, 10),
        "seed": SEED,
    },
    "influence": {
        "layer": NAME,
        "k": list_of(*int_range(1)),
        "k_image": ((lambda v: v == "same" or int_range(1)[0](v)), "same or an integer >= 1"),
        "table_k": int_range(1),
        "noise_seed": SEED,
    },
    "probe": {
        "source": choice("mnist", "broden"),
        "dir": (_name, "a folder path (read when source is broden)"),
        "size": int_range(1),
        "mask_size": int_range(8, 448),
    },
    "dissect": {
        "layers": list_of(_name, "a module name of the model"),
        "quantile": ((lambda v: float_range(0, 1)[0](v) and 0 < v < 1), "a number in (0, 1)"),
        "iou_threshold": float_range(0, 1),
        "rof_layer": NAME,
        "top_images": int_range(1, 50),
        "batch_size": int_range(1, 65536),
        "device": DEVICE,
        "precision": PRECISION,
        "threads": THREADS,
    },
    "compose": {
        "layers": list_of(_name, "a layer that dissect.layers names"),
        "resolution": choice("mask", "layer"),
        "downsample_min": float_range(0, 1, lo_open=True),
        "connectors": list_of(*choice("OR", "AND", "AND NOT", "WITH", "CLOSE TO", "CLOSE")),
        "expand": (lambda v: isinstance(v, bool), "true or false"),
        "score": choice("iou", "imrou"),
        "imrou_r": float_range(0, 1),
        "length_penalty": float_range(0, 0.1),
        "beam": int_range(1),
        "max_length": int_range(1, 10),
        "candidates": int_range(1),
        "min_gain": float_range(0, 1),
    },
    # CLIP-Dissect (stage clip_dissect); the constants as in the reference's similarity.py
    "clip_dissect": {
        "source": choice("annotations", "clip"),
        "layers": list_of(_name, "a module name of the model"),
        "pool": choice("mean", "max"),
        "similarity": choice("soft_wpmi", "wpmi", "cos_similarity"),
        "concepts": OPTIONAL_PATH,
        "annotation_quantile": float_range(0, 1, lo_open=True),
        "soft_wpmi_top_k": int_range(1),
        "soft_wpmi_a": float_range(0, 1000),
        "soft_wpmi_lambda": float_range(0, 10),
        "soft_wpmi_p_start": float_range(0, 1, lo_open=True),
        "soft_wpmi_p_end": float_range(0, 1, lo_open=True),
        "wpmi_top_k": int_range(1),
        "wpmi_a": float_range(0, 1000),
        "wpmi_lambda": float_range(0, 10),
        "min_prob": float_range(0, 1, lo_open=True),
        "model": NAME,                          # an open_clip architecture or a JSON config file
        "weights": OPTIONAL_PATH,
        "batch_size": int_range(1, 65536),
        "device": DEVICE,
        "precision": PRECISION,
        "threads": THREADS,
    },
    "report": {
        "layer": NAME,
        "thumbnail": int_range(16, 224),
    },
    "plot": {
        "dpi": int_range(30, 600),
    },
    # the generalization study's grid (study/params.yaml)
    "grid": {
        "label_noise": list_of(*LABEL_NOISE),
        "seeds": list_of(*SEED),
    },
    "aggregate": {
        "turning_point": choice("exact", "tolerance"),
        "dpi": int_range(30, 600),
    },
}


def validate_params(params, required=(), schema=SCHEMA, source=PARAMS_FILE):
    """Check every section present, and that the `required` sections are; raise PipelineError on
    the first problem."""
    if not isinstance(params, dict):
        raise PipelineError(f"{source}: expected a mapping of sections ({', '.join(schema)})")
    for section in params:
        if section not in schema:
            raise PipelineError(f"{source}: unknown section '{section}'; allowed: {', '.join(schema)}")
    for section in required:
        if section not in params:
            keys = schema[section]
            raise PipelineError(f"{source}: section '{section}' is missing; it needs the keys {', '.join(keys)}")
    for section, values in params.items():
        keys = schema[section]
        if not isinstance(values, dict):
            raise PipelineError(f"{source}: section '{section}' is not a mapping; "
                                f"it needs the keys {', '.join(keys)}")
        for key in values:
            if key not in keys:
                raise PipelineError(f"{source}: unknown key '{section}.{key}'; allowed keys: "
                                    f"{', '.join(keys)}")
        for key, (check, allowed) in keys.items():
            if key not in values:
                raise PipelineError(f"{source}: missing key '{section}.{key}'; it must be {allowed}")
            if not check(values[key]):
                raise PipelineError(f"{source}: '{section}.{key}' is {values[key]!r}; it must be {allowed}")
    return params


def apply_overrides(params, overrides, source):
    """A copy of `params` with `section.key=value` strings applied (values parsed as YAML)."""
    params = copy.deepcopy(params)
    for override in overrides:
        name, sep, text = override.partition("=")
        section, dot, key = name.partition(".")
        if not sep or not dot or not key:
            raise PipelineError(f"--set {override!r}: expected section.key=value")
        if not isinstance(params.get(section), dict) or key not in params[section]:
            raise PipelineError(f"--set {override!r}: {source} has no key '{name}' to override")
        params[section][key] = yaml.safe_load(text)
    return params


def load_params(section, path=None, overrides=(), schema=SCHEMA):
    """The validated `section` of a params file, after `overrides` (see apply_overrides)."""
    path = Path(path or PARAMS_FILE)
    try:
        params = yaml.safe_load(path.read_text())
    except FileNotFoundError:
        raise PipelineError(f"{path}: file not found; run the stage from the project root") from None
    except yaml.YAMLError as exc:
        raise PipelineError(f"{path}: not valid YAML ({str(exc).splitlines()[0]})") from None
    if overrides:
        if not isinstance(params, dict):
            raise PipelineError(f"{path}: expected a mapping of sections ({', '.join(schema)})")
        params = apply_overrides(params, overrides, path)
    return validate_params(params, (section,), schema, source=str(path))[section]
