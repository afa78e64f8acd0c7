"""Stage compose: compositional explanations: for every unit of compose.layers, the logical formula
over the probe set's concepts whose mask best matches the unit's, by beam search, with its score,
length and the best single concept beside it.

A unit's mask is network dissection's: its activation map above the threshold dissect found
(the dissect.quantile of its activations), recomputed here at compose.batch_size on the
`compute` device (fp32 under precision auto). Reads params `compose` and `compute`, the
checkpoint, the probe set and dissect's tallies; writes the formulas table, each formula's mask
on its unit's top images (for the report), the metrics and the formula-length figure (paths:
netunits.stage_table). The work is netunits.api.compose.run_compose; with compute.engine dask,
netunits.analysis_engine runs the forward pass in shards of the probe images and the search in
chunks of units as tasks on the engine, with the same results (docs/scale.md).
"""
from netunits.analysis_engine import compose_on_engine
from netunits.api.compose import load_compose_inputs, run_compose, write_compose
from netunits.engine import open_engine
from netunits.runtime import resolve_compute, run_stage, stage_args, stage_config
from netunits.stage_table import stage_paths


def main(argv=None):
    args = stage_args(__doc__.splitlines()[0], argv)
    params = stage_config(args, "compose", "compute")
    paths = stage_paths("compose", args.run_dir)
    inputs = load_compose_inputs(paths)
    runtime = resolve_compute(params.compute, analysis=True, source=params.source)
    if params.compute.engine == "none":
        result = run_compose(inputs, params.compose, runtime, source=params.source)
    else:
        with open_engine(params.compute, params.source) as engine:
            result = compose_on_engine(engine, inputs, paths, params.compose, params.compute, runtime, params.source)
    write_compose(result, paths)
    print(result.summary())


if __name__ == "__main__":
    run_stage(main)
