"""One value per unit and image (the spatial mean) at named layers of a trained model, for the
training and the test subsets, by forward hooks in eval mode.

From a notebook: `run_extract_features(ExtractFeaturesInputs(model, checkpoint, {"train": t,
"test": s}), ExtractFeaturesParams(layers=["avgpool"], batch_size=64), Runtime(device, "fp32"))`.
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import torch

from netunits.activations import pooled_features
from netunits.data.prepared import load_prepared
from netunits.errors import PipelineError
from netunits.files import save_torch
from netunits.models.registry import get_architecture, load_checkpoint
from netunits.params import ExtractFeaturesParams
from netunits.runtime import Runtime, check_fits

SPLITS = ("train", "test")


@dataclass
class ExtractFeaturesInputs:
    model: torch.nn.Module             # on the cpu; run_extract_features moves it to the runtime's device
    checkpoint: dict                   # the checkpoint file's dict (arch, input, n_classes, sha256, ...)
    subsets: dict[str, dict]           # "train", "test" -> prepared subsets


@dataclass
class ExtractFeaturesResult:
    features: dict[str, dict]          # per split: features ({layer: N x units}), logits, labels, indices, ...
    accuracy: dict[str, float]         # the model's own accuracy per split

    def summary(self) -> str:
        return "\n".join(
            f"{split}: features " + ", ".join(f"{name} {tuple(f.shape)}" for name, f in data["features"].items())
            + f" ({data['precision']}), model accuracy {self.accuracy[split]:.4f}"
            for split, data in self.features.items())


def load_extract_features_inputs(paths: dict[str, Path]) -> ExtractFeaturesInputs:
    model, checkpoint = load_checkpoint(paths["model"])
    subsets = {split: load_prepared(paths[f"{split}_set"]) for split in SPLITS}
    for split, subset in subsets.items():
        if subset["image_size"] != checkpoint["image_size"]:
            raise PipelineError(f"{paths[f'{split}_set']}: images are {subset['image_size']} px but {paths['model']} "
                                f"was trained on {checkpoint['image_size']} px; rerun `dvc repro`")
    return ExtractFeaturesInputs(model, checkpoint, subsets)


def run_extract_features(inputs: ExtractFeaturesInputs, config: ExtractFeaturesParams, runtime: Runtime,
                         source: str = "params.yaml", out_dir: Path | None = None) -> ExtractFeaturesResult:
    """`out_dir`: where the features will be written, for the up-front disk check (memory is
    always checked)."""
    model, checkpoint, layers, spec = inputs.model, inputs.checkpoint, config.layers, inputs.checkpoint["input"]
    device, precision = runtime.device, runtime.precision
    # channels_last weights, as training evaluates with: the checkpoint stores contiguous ones,
    # which the matrix-product convolutions would copy into their layout for every batch. In
    # bf16 the features keep every bit (tested); in fp32 oneDNN picks other kernels.
    model.to(device, memory_format=torch.channels_last)
    # one image through the hooks: the units per layer, for the size check, and a bad layer name
    # fails here, before anything is written
    probe, _ = pooled_features(model, inputs.subsets["test"]["images"][:1], layers, 1, device, precision, spec,
                               source=source)
    pooled = get_architecture(checkpoint["arch"]).pooled_layer
    if pooled not in layers:
        raise PipelineError(f"{source}: 'extract_features.layers' is {layers!r}; it must include {pooled}, the layer "
                            f"whose units ROF and the influential filters read (the final layer's input)")
    n_samples = sum(len(s["labels"]) for s in inputs.subsets.values())
    n_values = sum(f.shape[1] for f in probe.values()) + checkpoint["n_classes"]
    check_fits(n_samples * n_values * 4, out_dir, "the features")
    features, accuracy = {}, {}
    for split, subset in inputs.subsets.items():
        values, logits = pooled_features(model, subset["images"], layers, config.batch_size, device, precision,
                                         spec, split)
        accuracy[split] = float((logits.argmax(1) == subset["labels"]).double().mean())
        extra = {"clean_labels": subset["clean_labels"]} if "clean_labels" in subset else {}
        features[split] = {"features": values, "logits": logits, "labels": subset["labels"],
                           "indices": subset["indices"], **extra, "checkpoint_sha256": checkpoint["sha256"],
                           "precision": precision}
    return ExtractFeaturesResult(features, accuracy)


def write_extract_features(result: ExtractFeaturesResult, paths: dict[str, Path]) -> None:
    for split, data in result.features.items():
        save_torch(data, paths[f"{split}_features"])
