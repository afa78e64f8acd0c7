"""Sharded activation passes: the probe images split into contiguous shards that run as independent
tasks, each returning a small picklable result, merged into exactly what one pass over every
image gives.

- dissect, pass 1 (netunits.api.dissect.threshold_shard): each unit's largest activations on its
  shard, as many as the quantile over the WHOLE probe set reads. The largest values of a union
  are the largest of each part's largest, so the merge (concatenate, keep the top) holds the
  same values as one pass, and the quantile, computed from those alone, is the same number.
- dissect, pass 2 (count_shard): the IoU intersections and areas and the histograms are whole
  numbers that add; each unit's top images are the best of the shards' bests (a stable sort, so
  among equal peaks the earlier image stays, as in one pass).
- compose (netunits.api.compose.fired_maps_shard): the activation maps that may fire, with their
  probe image index and unit; concatenated in image order, each unit's masks come out sorted.
- clip_dissect (clip_summaries_shard): each unit's value per image, concatenated in image order.

A shard holds whole batches of its method's batch size (shard_ranges), so it runs the very
batches the single pass runs: the same image's fp32 maps can differ in the last bits with the
batch they are computed in (a convolution's kernel and summation order may depend on the batch
size), and whole batches keep the merged results bit-equal to the single pass's, not only close.

The *_in_shards functions run every shard here in turn and merge; netunits.dissect_engine runs
dissect's two rounds of shard tasks on the engine compute.engine names, with the same per-shard
and merge functions. shard_ranges (netunits.shard_ranges) cuts the probe images into shards.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np
import torch

from netunits.api.clip_dissect import ClipDissectInputs, unit_summaries
from netunits.api.compose import ComposeInputs, fired_maps_shard, merge_fired_maps, positions_of_units
from netunits.api.dissect import (
    DissectInputs,
    DissectResult,
    count_shard,
    dissect_result,
    merge_count_shards,
    merge_threshold_shards,
    shards_in_order,
    threshold_shard,
)
from netunits.shard_ranges import shard_ranges


def dissect_in_shards(inputs: DissectInputs, config: Any, runtime: Any, shards: int,
                      source: str = "params.yaml") -> DissectResult:
    """run_dissect over `shards` shards: pass 1 per shard, merged into the thresholds; pass 2 per
    shard with them, merged into the counts."""
    ranges = shard_ranges(len(inputs.probe["images"]), shards, config.batch_size, "dissect.shards", source,
                          "dissect.batch_size")
    thresholds = merge_threshold_shards([threshold_shard(inputs, config, runtime, shard, source)
                                         for shard in ranges], config.quantile)
    counts = merge_count_shards([count_shard(inputs, config, runtime, thresholds, shard, source)
                                 for shard in ranges], config.top_images)
    return dissect_result(inputs, config, thresholds, counts)


def compose_masks(inputs: ComposeInputs, layer: str, config: Any) -> tuple[int, int]:
    """(size, words) of the layer's unit masks as compose's search reads them: the probe's
    mask_size (resolution mask) or the layer's own grid, and the 64-bit words per image."""
    grid = inputs.tallies["per_layer"][layer]["top_maps"].shape[-1]         # the layer's own cells per side
    size = inputs.probe["mask_size"] if config.resolution == "mask" else grid
    return size, -(-size * size // 64)


def compose_positions_in_shards(inputs: ComposeInputs, layer: str, config: Any, runtime: Any, shards: int,
                                source: str = "params.yaml") -> list[np.ndarray]:
    """compose's unit_positions for one layer over `shards` shards: each unit's sorted positions."""
    size, words = compose_masks(inputs, layer, config)
    thresholds = inputs.tallies["per_layer"][layer]["thresholds"]
    inputs.model.to(runtime.device, memory_format=torch.channels_last)
    run = dict(batch_size=config.batch_size, device=runtime.device, precision=runtime.precision,
               input_spec=inputs.input_spec, key="compose.layers")
    ranges = shard_ranges(len(inputs.probe["images"]), shards, config.batch_size, "compose.shards", source,
                          "compose.batch_size")
    fired = merge_fired_maps([fired_maps_shard(inputs.model, inputs.probe, layer, thresholds, run, shard)
                              for shard in ranges])
    return positions_of_units(fired, thresholds, size, words, range(len(thresholds)))


@dataclass
class SummaryShard:
    """clip_dissect's unit values on probe images start..stop - 1 of n_images: {layer: images x units}."""
    start: int
    stop: int
    n_images: int
    summaries: dict[str, torch.Tensor]


def clip_summaries_shard(inputs: ClipDissectInputs, config: Any, runtime: Any, shard: tuple[int, int],
                         source: str = "params.yaml") -> SummaryShard:
    """clip_dissect's unit_summaries over the probe images shard = (start, stop)."""
    start, stop = shard
    images = inputs.probe["images"]
    return SummaryShard(start, stop, len(images),
                        unit_summaries(inputs.model, images[start:stop], list(config.layers), config.pool,
                                       config.batch_size, runtime, inputs.input_spec, source))


def merge_summary_shards(parts: list[SummaryShard]) -> dict[str, torch.Tensor]:
    """{layer: probe images x units}: the shards' rows in image order."""
    parts = shards_in_order(parts, "clip_dissect's unit values")
    if len(parts) == 1:
        return parts[0].summaries
    return {layer: torch.cat([part.summaries[layer] for part in parts]) for layer in parts[0].summaries}


def clip_summaries_in_shards(inputs: ClipDissectInputs, config: Any, runtime: Any, shards: int,
                             source: str = "params.yaml") -> dict[str, torch.Tensor]:
    """clip_dissect's unit_summaries over `shards` shards: {layer: probe images x units}."""
    ranges = shard_ranges(len(inputs.probe["images"]), shards, config.batch_size, "clip_dissect.shards", source,
                          "clip_dissect.batch_size")
    return merge_summary_shards([clip_summaries_shard(inputs, config, runtime, shard, source) for shard in ranges])

