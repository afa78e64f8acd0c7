"""Network dissection's activation passes (stage dissect) as one call.

`run_dissect` takes a model, the probe set and the dissect config and returns, per layer, each
unit's threshold (the config's quantile of its activations over the probe set, from a first
pass), its IoU counts against every concept, its activation histogram and its top-activating
images with their raw maps (from a second pass): the tallies that dissect_report, compose and
the unit explorer read.
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any, Mapping

import torch

from netunits.activations import iterate_activations
from netunits.data.probe import load_probe, unpack_masks
from netunits.errors import PipelineError
from netunits.files import remove_stale_temps, save_torch
from netunits.methods.dissection import (
    IoUTally,
    TopValues,
    add_histogram,
    dissect_batch_chunks,
    iou_from_counts,
    merge_top_images,
    quantile_from_top,
    unit_masks,
    values_needed,
)
from netunits.models.registry import load_checkpoint

HISTOGRAM_BINS = 40    # each unit's activations over the probe set, from 0 to its largest, for the report


@dataclass
class DissectInputs:
    model: torch.nn.Module
    probe: Mapping[str, Any]           # load_probe's dict
    input_spec: Mapping[str, Any]      # the checkpoint's "input": how images become the model's input
    checkpoint_sha256: str


@dataclass
class LayerTallies:
    """One layer's counts: thresholds (units), intersection (units x concepts), unit_area (units x
    categories), concept_area (concepts), category (concepts: category index), top_images (units x
    k probe indices, best first), top_maps (units x k x h x w), histogram (units x bins over
    [0, histogram_top]), histogram_top (units: each unit's largest activation)."""
    thresholds: torch.Tensor
    intersection: torch.Tensor
    unit_area: torch.Tensor
    concept_area: torch.Tensor
    category: torch.Tensor
    top_images: torch.Tensor
    top_maps: torch.Tensor
    histogram: torch.Tensor
    histogram_top: torch.Tensor

    def iou(self) -> torch.Tensor:
        """units x concepts."""
        return iou_from_counts(self.intersection, self.unit_area, self.concept_area, self.category)


@dataclass
class DissectResult:
    layers: list[str]
    quantile: float
    mask_size: int
    concepts: list[dict]
    categories: list[str]
    checkpoint_sha256: str
    per_layer: dict[str, LayerTallies]

    def to_dict(self) -> dict:
        """The tallies file's layout (artifacts/dissect/tallies.pt)."""
        return {"layers": self.layers, "quantile": self.quantile, "mask_size": self.mask_size,
                "concepts": self.concepts, "categories": self.categories,
                "checkpoint_sha256": self.checkpoint_sha256,
                "per_layer": {name: dict(vars(t)) for name, t in self.per_layer.items()}}

    def summary(self) -> str:
        lines = []
        for name, t in self.per_layer.items():
            iou = t.iou().max(dim=1).values
            lines.append(f"{name}: {len(iou)} units, mean best IoU {float(iou.mean()):.4f}")
        return "\n".join(lines)


def load_dissect_inputs(paths: Mapping[str, Path]) -> DissectInputs:
    """The checkpoint (paths["model"]) and the probe set (paths["probe"]), checked against each other."""
    model, checkpoint = load_checkpoint(paths["model"])
    probe = load_probe(paths["probe"])
    if probe["images"].shape[-1] != checkpoint["image_size"]:
        raise PipelineError(f"{paths['probe']}: images are {probe['images'].shape[-1]} px but the model was "
                            f"trained on {checkpoint['image_size']} px; rerun `dvc repro probe_concepts`")
    return DissectInputs(model, probe, checkpoint["input"], checkpoint["sha256"])


def unit_thresholds(run: dict, images: torch.Tensor, layers: list[str], quantile: float, source: str):
    """Pass 1: every unit's largest activations, enough for the exact quantile; returns ({layer:
    TopValues}, {layer: thresholds}). run: iterate_activations' model, batch_size, device,
    precision, input_spec, key and source."""
    top, n_values = {}, {}
    for _, outputs, _ in iterate_activations(images_u8=images, layers=layers, desc="thresholds", **run):
        for name, maps in outputs.items():
            if maps.dim() != 4:
                raise PipelineError(f"{source}: 'dissect.layers' has {name!r}, whose output has no spatial "
                                    f"maps (shape {tuple(maps.shape)})")
            if name not in top:
                n_values[name] = len(images) * maps.shape[2] * maps.shape[3]
                top[name] = TopValues(maps.shape[1], values_needed(n_values[name], quantile))
            top[name].update(maps.float().transpose(0, 1).flatten(1))
    return top, {name: quantile_from_top(t.values, n_values[name], quantile) for name, t in top.items()}


def run_dissect(inputs: DissectInputs, config: Any, runtime: Any, source: str = "params.yaml") -> DissectResult:
    """config: the dissect section (layers, quantile, top_images, batch_size); runtime: device and
    precision; source: the params file that messages name."""
    probe, layers = inputs.probe, list(config.layers)
    model = inputs.model.to(runtime.device, memory_format=torch.channels_last)
    run = dict(model=model, batch_size=config.batch_size, device=runtime.device, precision=runtime.precision,
               input_spec=inputs.input_spec, key="dissect.layers", source=source)
    top, thresholds = unit_thresholds(run, probe["images"], layers, config.quantile, source)

    # pass 2: IoU counts, histograms and top-activating images
    concepts, categories = probe["concepts"], probe["categories"]
    n_pixel = sum(c["level"] == "pixel" for c in concepts)
    category = [categories.index(c["category"]) for c in concepts]
    mask_size = probe["mask_size"]
    tallies = {name: IoUTally(len(t), n_pixel, len(concepts) - n_pixel, category, len(categories))
               for name, t in thresholds.items()}
    best = dict.fromkeys(thresholds)
    histograms = {name: torch.zeros(len(t), HISTOGRAM_BINS, dtype=torch.int64) for name, t in thresholds.items()}
    for start, outputs, _ in iterate_activations(images_u8=probe["images"], layers=layers, desc="IoU", **run):
        n = next(iter(outputs.values())).shape[0]
        pixel_masks = unpack_masks(probe["pixel_masks"][start:start + n], mask_size)
        image_labels, annotated = probe["image_labels"][start:start + n], probe["annotated"][start:start + n]
        for name, maps in outputs.items():
            maps = maps.float()
            add_histogram(histograms[name], maps.transpose(0, 1).flatten(1), top[name].values[:, 0])
            for first, last in dissect_batch_chunks(n, maps.shape[1], mask_size * mask_size):
                masks = unit_masks(maps[first:last], thresholds[name], mask_size)
                tallies[name].update(masks, pixel_masks[first:last], image_labels[first:last], annotated[first:last])
            best[name] = merge_top_images(best[name], maps, start, config.top_images)
    per_layer = {name: LayerTallies(thresholds[name], t.intersection, t.unit_area, t.concept_area, t.category,
                                    best[name][1], best[name][2].contiguous(), histograms[name],
                                    top[name].values[:, 0])
                 for name, t in tallies.items()}
    return DissectResult(layers, config.quantile, mask_size, concepts, categories, inputs.checkpoint_sha256,
                         per_layer)


def write_dissect(result: DissectResult, paths: Mapping[str, Path]) -> None:
    remove_stale_temps(paths["tallies"])
    save_torch(result.to_dict(), paths["tallies"])
