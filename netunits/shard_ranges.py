"""Contiguous shards of the probe images, each of whole batches of a method's batch size (see
netunits.shards for why whole batches keep the merged results bit-equal to one pass)."""
from __future__ import annotations

from netunits.errors import PipelineError


def shard_ranges(n_images: int, shards: int, batch_size: int = 1, key: str = "shards", source: str = "params.yaml",
                 batch_key: str | None = None) -> list[tuple[int, int]]:
    """`shards` contiguous (start, stop) runs of images 0 .. n_images - 1, each of whole batches of
    batch_size (the last batch may be short), as even as can be: the first shards hold one batch
    more. key and batch_key name the params in the one-line error."""
    batches = -(-n_images // batch_size)
    if isinstance(shards, bool) or not isinstance(shards, int) or not 1 <= shards <= batches:
        batched = "" if batch_size == 1 else \
            f", {batches} batches of {batch_size}" + (f" ('{batch_key}')" if batch_key else "")
        raise PipelineError(f"{source}: '{key}' is {shards!r}: the probe has {n_images} images{batched}; "
                            f"it must be from 1 to {batches}")
    per_shard, extra = divmod(batches, shards)
    ranges, first = [], 0
    for shard in range(shards):
        last = first + per_shard + (shard < extra)
        ranges.append((first * batch_size, min(n_images, last * batch_size)))
        first = last
    return ranges
