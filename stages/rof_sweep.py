"""Stage rof_sweep: ROF curves, turning points and the role taxonomy of the units the final layer
reads (the architecture's pooled layer: avgpool for the ResNets), on the training and the test
subset separately.

Reads params `rof`, artifacts/train/model.pt (its final layer) and artifacts/features/*.pt;
writes artifacts/rof/curve_{train,test}.csv (accuracy and loss per n_units for every
ranking), artifacts/rof/units.json (ranked units and the U0 sets), artifacts/rof/unit_roles.csv
(per-unit table), artifacts/rof/category_counts.csv and artifacts/metrics/rof.json.
"""
from netunits.api.rof_sweep import load_rof_sweep_inputs, run_rof_sweep, write_rof_sweep
from netunits.files import remove_stale_temps
from netunits.runtime import run_stage, stage_args, stage_config
from netunits.stage_table import stage_outs, stage_paths


def main(argv=None):
    args = stage_args(__doc__.splitlines()[0], argv)
    params = stage_config(args, "rof")
    paths = stage_paths("rof_sweep", args.run_dir)
    remove_stale_temps(*stage_outs("rof_sweep", args.run_dir))
    inputs = load_rof_sweep_inputs(paths)
    result = run_rof_sweep(inputs, params.rof)
    write_rof_sweep(result, paths)
    print(result.summary())


if __name__ == "__main__":
    run_stage(main)
