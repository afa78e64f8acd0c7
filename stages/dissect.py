"""Stage dissect: the activation passes of network dissection over the probe set, for every layer
of dissect.layers: each unit's threshold (the dissect.quantile of its activations) in a first
pass, the IoU counts against every concept, each unit's activation histogram and its
top-activating images in a second.

Reads params `dissect` (but iou_threshold, which only dissect_report reads) and `compute`,
artifacts/train/model.pt and data/probe/probe.pt; writes artifacts/dissect/tallies.pt: per
layer the thresholds, intersections, areas and each unit's top images with their raw maps.
The work is netunits.api.dissect.run_dissect; with dissect.shards above 1 or compute.engine
dask, netunits.dissect_engine runs each pass as one task per shard on the engine and
merges them into the same bytes (docs/scale.md). The file is written only once both passes
have merged.
"""
from netunits.api.dissect import load_dissect_inputs, run_dissect, write_dissect
from netunits.dissect_engine import dissect_on_engine, dissect_shard_ranges
from netunits.engine import open_engine
from netunits.runtime import resolve_compute, run_stage, stage_args, stage_config
from netunits.stage_table import stage_paths


def main(argv=None):
    args = stage_args(__doc__.splitlines()[0], argv)
    params = stage_config(args, "dissect", "compute")
    paths = stage_paths("dissect", args.run_dir)
    runtime = resolve_compute(params.compute, analysis=True, source=params.source)
    inputs = load_dissect_inputs(paths)
    if params.dissect.shards == 1 and params.compute.engine == "none":
        result = run_dissect(inputs, params.dissect, runtime, source=params.source)
    else:
        dissect_shard_ranges(inputs, params.dissect, params.source)     # before any cluster starts
        with open_engine(params.compute, params.source) as engine:
            result = dissect_on_engine(engine, inputs, paths, params.dissect, params.compute, runtime, params.source)
    write_dissect(result, paths)
    print(result.summary())


if __name__ == "__main__":
    run_stage(main)
