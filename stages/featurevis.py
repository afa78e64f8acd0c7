"""Stage featurevis: feature visualization, an input optimised per selected unit of featurevis.layer
to maximise the unit's mean activation (Fourier and colour-decorrelated, under random transforms).

Reads params `featurevis` and `compute` (device and threads; always fp32), artifacts/train/model.pt
and, for the default selection (featurevis.n_units units covering every ROF role, the best
detectors first), artifacts/rof/unit_roles.csv (the block feeding the final layer) or
artifacts/layer_rof/<layer>_roles.csv, and artifacts/dissect/layers/<layer>.csv; writes
artifacts/featurevis/ (units.csv: layer, unit, role, IoU, the activation reached and the PNG's
path; <layer>/<unit>.png: grey for grey models) and artifacts/metrics/featurevis.json (units,
steps, size; the wall time is printed). An unknown layer or a unit out of range is one line and writes nothing.
"""
from netunits.api.featurevis import load_featurevis_inputs, run_featurevis, write_featurevis
from netunits.files import remove_stale_temps
from netunits.runtime import resolve_compute, run_stage, stage_args, stage_config
from netunits.stage_table import stage_outs, stage_paths


def main(argv=None):
    args = stage_args(__doc__.splitlines()[0], argv)
    params = stage_config(args, "featurevis", "compute")
    paths = stage_paths("featurevis", args.run_dir)
    remove_stale_temps(*stage_outs("featurevis", args.run_dir))
    runtime = resolve_compute(params.compute, analysis=True, source=params.source)
    inputs = load_featurevis_inputs(paths, params.featurevis)
    result = run_featurevis(inputs, params.featurevis, runtime, params.source)
    write_featurevis(result, paths)
    print(result.summary())


if __name__ == "__main__":
    run_stage(main)
