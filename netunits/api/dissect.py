"""Network dissection's activation passes (stage dissect) as one call.

`run_dissect` takes a model, the probe set and the dissect config and returns, per layer, each
unit's threshold (the config's quantile of its activations over the probe set, from a first
pass), its IoU counts against every concept, its activation histogram and its top-activating
images with their raw maps (from a second pass): the tallies that dissect_report, compose and
the unit explorer read.
"""
from __future__ import annotations

import functools
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Mapping

import torch

from netunits.activations import iterate_activations
from netunits.data.probe import load_probe
from netunits.errors import PipelineError
from netunits.files import remove_stale_temps, save_torch
from netunits.methods.dissection import (
    IoUTally,
    TopValues,
    add_histogram,
    dissect_batch_chunks,
    firing_unit_masks,
    iou_from_counts,
    merge_kept_top_images,
    merge_top_images,
    merge_top_values,
    quantile_from_top,
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


def top_values_pass(run: dict, images: torch.Tensor, layers: list[str], quantile: float, n_images: int,
                    source: str) -> tuple[dict[str, TopValues], dict[str, int]]:
    """Pass 1 over `images`, all or a run of a probe set of n_images: each unit's largest
    activations, as many as the quantile over all n_images needs; returns ({layer: TopValues},
    {layer: positions per image}). run: iterate_activations' model, batch_size, device,
    precision, input_spec, key and source."""
    top, positions = {}, {}
    for _, outputs, _ in iterate_activations(images_u8=images, layers=layers, desc="thresholds", **run):
        for name, maps in outputs.items():
            if maps.dim() != 4:
                raise PipelineError(f"{source}: 'dissect.layers' has {name!r}, whose output has no spatial "
                                    f"maps (shape {tuple(maps.shape)})")
            if name not in top:
                positions[name] = maps.shape[2] * maps.shape[3]
                top[name] = TopValues(maps.shape[1], values_needed(n_images * positions[name], quantile))
            top[name].update(maps.float().transpose(0, 1).flatten(1))
    return top, positions


def unit_thresholds(run: dict, images: torch.Tensor, layers: list[str], quantile: float, source: str):
    """Pass 1: every unit's largest activations, enough for the exact quantile; returns ({layer:
    TopValues}, {layer: thresholds}). run: iterate_activations' model, batch_size, device,
    precision, input_spec, key and source."""
    top, positions = top_values_pass(run, images, layers, quantile, len(images), source)
    return top, {name: quantile_from_top(t.values, len(images) * positions[name], quantile) for name, t in top.items()}


# --------------------------------------------------------------------------------------------
# the two passes over shards of the probe images (contiguous runs start..stop - 1), each shard an
# independent task with a small picklable result, and their exact merges; run_dissect is one shard
# --------------------------------------------------------------------------------------------
@dataclass
class ThresholdShard:
    """Pass 1 over probe images start..stop - 1 of n_images: per layer, each unit's largest
    activations there (units x at most as many as the quantile over all n_images needs,
    descending), and the layer's positions per image."""
    start: int
    stop: int
    n_images: int
    top: dict[str, torch.Tensor]
    positions: dict[str, int]


@dataclass
class DissectThresholds:
    """Pass 1 merged over the whole probe set: per layer each unit's threshold and its largest
    activations (units x values, descending; the first is the histogram's top)."""
    thresholds: dict[str, torch.Tensor]
    top: dict[str, torch.Tensor]


@dataclass
class CountShard:
    """Pass 2 over probe images start..stop - 1 of n_images, per layer: the IoU counts
    (intersection, unit_area, concept_area) and the histogram, which add over shards, and each
    unit's top images (peaks, probe indices, maps: merge_top_images' triple), best of the bests."""
    start: int
    stop: int
    n_images: int
    counts: dict[str, dict[str, torch.Tensor]]
    top_images: dict[str, tuple[torch.Tensor, torch.Tensor, torch.Tensor]]


def shards_in_order(parts: list, what: str) -> list:
    """Shard results sorted by their first image, checked to tile the probe set's images once."""
    parts = sorted(parts, key=lambda part: part.start)
    bounds = [(part.start, part.stop) for part in parts]
    if not parts or bounds[0][0] != 0 or bounds[-1][1] != parts[0].n_images or \
            any(a[1] != b[0] for a, b in zip(bounds, bounds[1:])):
        raise PipelineError(f"{what}: the shards cover probe images {bounds}; they must cover 0 to "
                            f"{parts[0].n_images if parts else '?'} once, each shard starting where one ends")
    return parts


def _run(inputs: DissectInputs, config: Any, runtime: Any, source: str) -> dict:
    model = inputs.model.to(runtime.device, memory_format=torch.channels_last)
    return dict(model=model, batch_size=config.batch_size, device=runtime.device, precision=runtime.precision,
                input_spec=inputs.input_spec, key="dissect.layers", source=source)


def threshold_shard(inputs: DissectInputs, config: Any, runtime: Any, shard: tuple[int, int],
                    source: str = "params.yaml") -> ThresholdShard:
    """Pass 1 over the probe images shard = (start, stop): each unit's largest activations there."""
    start, stop = shard
    n_images = len(inputs.probe["images"])
    top, positions = top_values_pass(_run(inputs, config, runtime, source), inputs.probe["images"][start:stop],
                                     list(config.layers), config.quantile, n_images, source)
    return ThresholdShard(start, stop, n_images, {name: t.values for name, t in top.items()}, positions)


def merge_threshold_shards(parts: list[ThresholdShard], quantile: float) -> DissectThresholds:
    """The thresholds over the whole probe set from pass 1's shards: the largest activations of
    the union are the largest of the shards' largest, and the quantile reads only those (exact)."""
    parts = shards_in_order(parts, "dissect's first pass")
    n_images, top, thresholds = parts[0].n_images, {}, {}
    for name, positions in parts[0].positions.items():
        n_values = n_images * positions
        top[name] = merge_top_values([part.top[name] for part in parts], values_needed(n_values, quantile))
        thresholds[name] = quantile_from_top(top[name], n_values, quantile)
    return DissectThresholds(thresholds, top)


def count_shard(inputs: DissectInputs, config: Any, runtime: Any, thresholds: DissectThresholds,
                shard: tuple[int, int], source: str = "params.yaml") -> CountShard:
    """Pass 2 over the probe images shard = (start, stop): IoU counts, histograms and top images."""
    probe, (start, stop) = inputs.probe, shard
    concepts, categories = probe["concepts"], probe["categories"]
    n_pixel = sum(c["level"] == "pixel" for c in concepts)
    category = [categories.index(c["category"]) for c in concepts]
    mask_size = probe["mask_size"]
    tallies = {name: IoUTally(len(t), n_pixel, len(concepts) - n_pixel, category, len(categories))
               for name, t in thresholds.thresholds.items()}
    best = dict.fromkeys(tallies)
    histograms = {name: torch.zeros(len(t), HISTOGRAM_BINS, dtype=torch.int64)
                  for name, t in thresholds.thresholds.items()}
    for first, outputs, _ in iterate_activations(images_u8=probe["images"][start:stop], layers=list(config.layers),
                                                 desc="IoU", **_run(inputs, config, runtime, source)):
        n = next(iter(outputs.values())).shape[0]
        at = start + first
        packed = probe["pixel_masks"][at:at + n]
        image_labels, annotated = probe["image_labels"][at:at + n], probe["annotated"][at:at + n]
        for name, maps in outputs.items():
            maps = maps.float()
            add_histogram(histograms[name], maps.transpose(0, 1).flatten(1), thresholds.top[name][:, 0])
            for lo, hi in dissect_batch_chunks(n, maps.shape[1], mask_size * mask_size):
                image, unit, masks = firing_unit_masks(maps[lo:hi], thresholds.thresholds[name], mask_size)
                tallies[name].update_rows(image, unit, masks, packed[lo:hi], image_labels[lo:hi], annotated[lo:hi])
            best[name] = merge_top_images(best[name], maps, at, config.top_images)
    counts = {name: {"intersection": t.intersection, "unit_area": t.unit_area, "concept_area": t.concept_area,
                     "histogram": histograms[name]} for name, t in tallies.items()}
    return CountShard(start, stop, len(probe["images"]), counts, best)


def merge_count_shards(parts: list[CountShard], top_images: int) -> CountShard:
    """Pass 2's shards as one over the whole probe set: counts and histograms add (exactly: whole
    numbers), each unit's top_images best images are the best of the shards' bests."""
    parts = shards_in_order(parts, "dissect's second pass")
    if len(parts) == 1:
        return parts[0]
    counts = {name: {key: functools.reduce(torch.add, [part.counts[name][key] for part in parts]) for key in kept}
              for name, kept in parts[0].counts.items()}
    best = {name: merge_kept_top_images([part.top_images[name] for part in parts], top_images)
            for name in parts[0].top_images}
    return CountShard(0, parts[-1].stop, parts[0].n_images, counts, best)


def dissect_result(inputs: DissectInputs, config: Any, thresholds: DissectThresholds,
                   counts: CountShard) -> DissectResult:
    """The stage's result from both passes merged over the whole probe set."""
    probe = inputs.probe
    category = [probe["categories"].index(c["category"]) for c in probe["concepts"]]
    per_layer = {}
    # keyed by config.layers' own strings: the file's pickle then refers back to the `layers` list's
    # names whether the shards' results were made here or came back pickled from elsewhere
    for name in config.layers:
        c = counts.counts[name]
        _, images, maps = counts.top_images[name]
        # each layer its own category tensor, as the tallies file has always held
        per_layer[name] = LayerTallies(thresholds.thresholds[name], c["intersection"], c["unit_area"],
                                       c["concept_area"], torch.as_tensor(category, dtype=torch.int64), images,
                                       maps.contiguous(), c["histogram"], thresholds.top[name][:, 0])
    return DissectResult(list(config.layers), config.quantile, probe["mask_size"], probe["concepts"],
                         probe["categories"], inputs.checkpoint_sha256, per_layer)


def run_dissect(inputs: DissectInputs, config: Any, runtime: Any, source: str = "params.yaml") -> DissectResult:
    """config: the dissect section (layers, quantile, top_images, batch_size); runtime: device and
    precision; source: the params file that messages name. Both passes as one shard over the
    whole probe set (netunits.shards runs them over several)."""
    shard = (0, len(inputs.probe["images"]))
    thresholds = merge_threshold_shards([threshold_shard(inputs, config, runtime, shard, source)], config.quantile)
    counts = merge_count_shards([count_shard(inputs, config, runtime, thresholds, shard, source)], config.top_images)
    return dissect_result(inputs, config, thresholds, counts)


def write_dissect(result: DissectResult, paths: Mapping[str, Path]) -> None:
    remove_stale_temps(paths["tallies"])
    save_torch(result.to_dict(), paths["tallies"])
