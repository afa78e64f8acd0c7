"""dissect's two rounds of shard tasks on an engine (netunits.engine): pass 1 per shard, merged
into the thresholds here; pass 2 per shard with them, merged into the counts here; the result is
what run_dissect returns, bit for bit (netunits.shards says why the merges are exact).

Under compute.engine none the tasks read the inputs the stage loaded. On Dask a task gets the
checkpoint's and the probe's paths, not their contents: each worker process loads them once, at
its first task (the paths must name the same files there: a shared file system), and checks the
checkpoint's sha256 against the one the stage loaded.
"""
from __future__ import annotations

import functools
from pathlib import Path
from typing import Any

from netunits.api.dissect import (
    CountShard,
    DissectInputs,
    DissectResult,
    ThresholdShard,
    count_shard,
    dissect_result,
    load_dissect_inputs,
    merge_count_shards,
    merge_threshold_shards,
    threshold_shard,
)
from netunits.errors import PipelineError
from netunits.runtime import set_threads
from netunits.shard_ranges import shard_ranges

# one worker process's inputs, loaded by its first shard task and read by the rest
_LOADED: dict[tuple, DissectInputs] = {}


def worker_inputs(paths: dict[str, Path], checkpoint_sha256: str, threads: Any) -> DissectInputs:
    """dissect's inputs in a worker process: loaded from `paths` once, checked to be the
    checkpoint the stage loaded; sets the thread count as the stage does."""
    set_threads(threads)
    key = tuple(sorted((name, str(path)) for name, path in paths.items()))
    if key not in _LOADED:
        _LOADED.clear()
        _LOADED[key] = load_dissect_inputs(paths)
    inputs = _LOADED[key]
    if inputs.checkpoint_sha256 != checkpoint_sha256:
        raise PipelineError(f"{paths['model']}: a worker read a checkpoint of sha256 {inputs.checkpoint_sha256[:12]}, "
                            f"not the stage's {checkpoint_sha256[:12]}; the workers must see the same files")
    return inputs


def _threshold_task(paths, sha256, threads, config, runtime, shard, source) -> ThresholdShard:
    return threshold_shard(worker_inputs(paths, sha256, threads), config, runtime, shard, source)


def _count_task(paths, sha256, threads, config, runtime, thresholds, shard, source) -> CountShard:
    return count_shard(worker_inputs(paths, sha256, threads), config, runtime, thresholds, shard, source)


def dissect_shard_ranges(inputs: DissectInputs, config: Any, source: str = "params.yaml") -> list[tuple[int, int]]:
    """dissect.shards' runs of probe images: a one-line error past the probe's batches."""
    return shard_ranges(len(inputs.probe["images"]), config.shards, config.batch_size, "dissect.shards", source,
                        "dissect.batch_size")


def dissect_on_engine(engine: Any, inputs: DissectInputs, paths: dict[str, Path], config: Any, compute: Any,
                      runtime: Any, source: str = "params.yaml") -> DissectResult:
    """run_dissect over config.shards shards on `engine` (netunits.engine.open_engine): pass 1's
    tasks, merged into the thresholds here; pass 2's tasks with them, merged into the counts.
    Under engine none the tasks read `inputs`; on Dask each worker loads `paths` (model, probe)."""
    ranges = dissect_shard_ranges(inputs, config, source)
    names = [f"dissect shard {i + 1} of {len(ranges)} (probe images {a} to {b - 1})" for i, (a, b) in enumerate(ranges)]
    if engine.remote:
        where = ({name: Path(path).resolve() for name, path in paths.items() if name in ("model", "probe")},
                 inputs.checkpoint_sha256, compute.threads)
        first, second = functools.partial(_threshold_task, *where), functools.partial(_count_task, *where)
    else:
        first, second = functools.partial(threshold_shard, inputs), functools.partial(count_shard, inputs)
    parts = engine.map(first, [(config, runtime, shard, source) for shard in ranges],
                       [f"{name}, pass 1 (thresholds)" for name in names])
    thresholds = merge_threshold_shards(parts, config.quantile)
    parts = engine.map(second, [(config, runtime, thresholds, shard, source) for shard in ranges],
                       [f"{name}, pass 2 (IoU counts)" for name in names])
    return dissect_result(inputs, config, thresholds, merge_count_shards(parts, config.top_images))
