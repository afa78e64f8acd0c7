"""Stage layer_rof: ROF at layers with spatial maps: each layer's channels ranked by L1 norm,
the top K kept and the rest of the network run; curves, turning points and the four roles.

Reads params `layer_rof`, rof.turning_point, rof.acc_tolerance, rof.loss_tolerance and
`compute`, artifacts/train/model.pt and data/prepared/{train,test}.pt; writes, per layer of
layer_rof.layers, artifacts/layer_rof/<layer>_curves.csv (per subset and evaluated K: accuracy,
loss, whether K is on the grid or a refinement) and <layer>_roles.csv (per channel: L1 norms,
ranks, roles), and artifacts/metrics/layer_rof.json (turning points, role counts per layer).
"""
from netunits.api.layer_rof import load_layer_rof_inputs, run_layer_rof, write_layer_rof
from netunits.files import remove_stale_temps
from netunits.runtime import resolve_compute, run_stage, stage_args, stage_config
from netunits.stage_table import stage_outs, stage_paths


def main(argv=None):
    args = stage_args(__doc__.splitlines()[0], argv)
    params = stage_config(args, "layer_rof", "rof", "compute")
    paths = stage_paths("layer_rof", args.run_dir)
    remove_stale_temps(*stage_outs("layer_rof", args.run_dir))
    # extract_features' precision (analysis=False): ROF of the pooled layer reads features made in it
    runtime = resolve_compute(params.compute, analysis=False, source=params.source)
    inputs = load_layer_rof_inputs(paths)
    result = run_layer_rof(inputs, params.layer_rof, params.rof, runtime, params.source)
    write_layer_rof(result, paths)
    print(result.summary())


if __name__ == "__main__":
    run_stage(main)
