"""compose's and clip_dissect's shard tasks on an engine (netunits.engine), as
netunits.dissect_engine runs dissect's; the results are the single process's, bit for bit
(netunits.shards says why the merges are exact; compose's search is per unit).

- compose, per layer: round 1, the forward pass over shards of the probe images
  (fired_maps_shard), merged in image order; round 2, the beam search over chunks of UNIT_CHUNK
  units, each task given only its units' fired maps; the results in unit order.
- clip_dissect: the units' values per image over shards of the probe images
  (clip_summaries_shard), merged in image order; the scoring then runs here.

The probe images are cut into as many shards as the engine has workers (whole batches each, at
most one per batch). Under compute.engine none the tasks read the inputs the stage loaded. On
Dask a task gets the checkpoint's and probe's paths, not their contents: each worker process
loads them once, at its first task (a shared file system), and checks the checkpoint's sha256
against the one the stage loaded; a compose search task builds the concept masks once per
layer and worker.
"""
from __future__ import annotations

import functools
from pathlib import Path
from typing import Any

import numpy as np
import torch

from netunits.api.clip_dissect import ClipDissectInputs
from netunits.api.compose import (
    ComposeInputs,
    ComposeResult,
    FiredMaps,
    check_layers,
    fired_maps_shard,
    layer_formulas,
    layer_setup,
    merge_fired_maps,
    search_chunk,
    search_primitives,
    unit_chunks,
)
from netunits.dissect_engine import worker_inputs
from netunits.files import file_sha256
from netunits.shard_ranges import shard_ranges
from netunits.shards import clip_summaries_shard, merge_summary_shards

# one worker process's concept masks for compose's search, built by its first search task of a layer
_PRIMITIVES: dict[tuple, Any] = {}


def engine_shards(engine: Any, n_images: int, batch_size: int) -> int:
    """One shard per worker, at most one per batch of the probe images."""
    return max(1, min(engine.workers, -(-n_images // batch_size)))


def _where(paths: dict[str, Path], sha256: str, threads: Any) -> tuple:
    return ({name: Path(path).resolve() for name, path in paths.items() if name in ("model", "probe")}, sha256, threads)


def _fired_task(paths, sha256, threads, runtime, layer, thresholds, run, shard) -> FiredMaps:
    inputs = worker_inputs(paths, sha256, threads)
    model = inputs.model.to(runtime.device, memory_format=torch.channels_last)
    return fired_maps_shard(model, inputs.probe, layer, thresholds, run, shard)


def _search_task(paths, sha256, threads, config, size, grid, fired, thresholds, units) -> list[dict]:
    inputs = worker_inputs(paths, sha256, threads)
    key = (str(paths["probe"]), sha256, size, grid, repr(config))
    if key not in _PRIMITIVES:
        _PRIMITIVES.clear()
        _PRIMITIVES[key] = search_primitives(inputs.probe, config, size, grid)
    return search_chunk(_PRIMITIVES[key], fired, thresholds, size, units, config)


def _summary_task(paths, sha256, threads, config, runtime, shard, source):
    inputs = worker_inputs(paths, sha256, threads)
    return clip_summaries_shard(inputs, config, runtime, shard, source)


def _local_search(primitives, size, config, fired, thresholds, units) -> list[dict]:
    return search_chunk(primitives, fired, thresholds, size, units, config)


def units_of(fired: FiredMaps, units: range) -> FiredMaps:
    """The fired maps of `units` only (what one search task needs), in image order."""
    rows = np.flatnonzero((fired.unit >= units.start) & (fired.unit < units.stop))
    return FiredMaps(fired.start, fired.stop, fired.n_images, fired.image[rows], fired.unit[rows],
                     np.ascontiguousarray(fired.maps[rows]))


def compose_on_engine(engine: Any, inputs: ComposeInputs, paths: dict[str, Path], config: Any, compute: Any,
                      runtime: Any, source: str = "params.yaml") -> ComposeResult:
    """run_compose with its forward pass and its search as tasks on `engine`."""
    check_layers(config, inputs.tallies, source)
    inputs.model.to(runtime.device, memory_format=torch.channels_last)
    probe = inputs.probe
    n_images = len(probe["images"])
    ranges = shard_ranges(n_images, engine_shards(engine, n_images, config.batch_size), config.batch_size,
                          "compute.workers", source, "compose.batch_size")
    sha256 = inputs.tallies.get("checkpoint_sha256") or file_sha256(paths["model"])
    where = _where(paths, sha256, compute.threads)
    layers = {}
    for layer in config.layers:
        setup = layer_setup(inputs, layer, config, runtime)
        thresholds, size, grid = setup["thresholds"], setup["size"], setup["grid"]
        names = [f"compose {layer}, shard {i + 1} of {len(ranges)} (probe images {a} to {b - 1}), forward pass"
                 for i, (a, b) in enumerate(ranges)]
        if engine.remote:
            forward = functools.partial(_fired_task, *where, runtime)
        else:
            forward = functools.partial(fired_maps_shard, inputs.model, probe)
        fired = merge_fired_maps(engine.map(forward, [(layer, thresholds, setup["run"], shard) for shard in ranges],
                                            names))
        chunks = unit_chunks(len(thresholds))
        if engine.remote:
            search = functools.partial(_search_task, *where, config, size, grid)
        else:
            search = functools.partial(_local_search, search_primitives(probe, config, size, grid), size, config)
        parts = engine.map(search, [(units_of(fired, units), thresholds, units) for units in chunks],
                           [f"compose {layer}, units {units.start} to {units.stop - 1}, search" for units in chunks])
        found = [result for part in parts for result in part]
        layers[layer] = layer_formulas(probe, inputs.tallies["per_layer"][layer], found, config, size, grid)
    return ComposeResult(config, layers, inputs.tallies.get("checkpoint_sha256"))


def clip_summaries_on_engine(engine: Any, inputs: ClipDissectInputs, paths: dict[str, Path], config: Any,
                             compute: Any, runtime: Any, source: str = "params.yaml") -> dict[str, torch.Tensor]:
    """clip_dissect's unit values per probe image ({layer: images x units}) as tasks on `engine`."""
    n_images = len(inputs.probe["images"])
    ranges = shard_ranges(n_images, engine_shards(engine, n_images, config.batch_size), config.batch_size,
                          "compute.workers", source, "clip_dissect.batch_size")
    if engine.remote:
        task = functools.partial(_summary_task, *_where(paths, file_sha256(paths["model"]), compute.threads))
    else:
        task = functools.partial(clip_summaries_shard, inputs)
    names = [f"clip_dissect shard {i + 1} of {len(ranges)} (probe images {a} to {b - 1})"
             for i, (a, b) in enumerate(ranges)]
    return merge_summary_shards(engine.map(task, [(config, runtime, shard, source) for shard in ranges], names))
