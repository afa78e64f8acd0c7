"""Stage clip_dissect: CLIP-Dissect's open-vocabulary unit descriptions (soft-WPMI by default) for
every layer of clip_dissect.layers, with the concept-image matrix from the probe set's own
annotations or from an open_clip model with local weights.

Reads params clip_dissect and compute, artifacts/train/model.pt, data/probe/probe.pt, the concept
file and weights file the params name, and artifacts/dissect/layers/<layer>.csv (network
dissection's labels, for the agreement); writes artifacts/clip_dissect/layers/<layer>.csv per
layer (layer, unit, description, similarity and the two runner-up concepts),
artifacts/clip_dissect/descriptions.csv (the reference's four columns over every layer),
artifacts/metrics/clip_dissect.json and artifacts/plots/clip_dissect_top.png. The work is
netunits.api.clip_dissect.run_clip_dissect; with compute.engine dask, netunits.analysis_engine
computes the units' values per image in shards of the probe images as tasks on the engine (the
same values), and the scoring runs here.
"""
from netunits.analysis_engine import clip_summaries_on_engine
from netunits.api.clip_dissect import load_clip_dissect_inputs, run_clip_dissect, write_clip_dissect
from netunits.engine import open_engine
from netunits.runtime import resolve_compute, run_stage, stage_args, stage_config
from netunits.stage_table import stage_paths


def main(argv=None):
    args = stage_args(__doc__.splitlines()[0], argv)
    params = stage_config(args, "clip_dissect", "compute")
    paths = stage_paths("clip_dissect", args.run_dir)
    runtime = resolve_compute(params.compute, analysis=True, source=params.source)
    inputs = load_clip_dissect_inputs(paths, params.clip_dissect, source=params.source)
    summaries = None
    if params.compute.engine != "none":
        with open_engine(params.compute, params.source) as engine:
            summaries = clip_summaries_on_engine(engine, inputs, paths, params.clip_dissect, params.compute, runtime,
                                                 params.source)
    result = run_clip_dissect(inputs, params.clip_dissect, runtime, source=params.source, summaries=summaries)
    write_clip_dissect(result, paths)
    print(result.summary())


if __name__ == "__main__":
    run_stage(main)
