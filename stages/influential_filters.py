"""Stage influential_filters: per class, the few units that carry it ("Decomposing the Deep").

The units are those the final layer reads (the architecture's pooled layer): class sets from
L1-normalised frequency histograms over the training subset, the final layer rebuilt from them
alone, their essentiality under noise, the classes' overlap by mutual information, and their
place in ROF's roles.

Reads params `influence`, artifacts/train/model.pt (its final layer), artifacts/features/*.pt
and artifacts/rof/{units.json,unit_roles.csv}; writes artifacts/influence/sets.json (every k's
class sets), by_k.csv (one row per k), by_class.csv (one row per k and class), units.csv (the
per-unit role table with the classes each unit is influential for at influence.table_k) and
artifacts/metrics/influence.json.
"""
from netunits.api.influential_filters import (
    load_influential_filters_inputs,
    run_influential_filters,
    write_influential_filters,
)
from netunits.files import remove_stale_temps
from netunits.runtime import run_stage, stage_args, stage_config
from netunits.stage_table import stage_outs, stage_paths


def main(argv=None):
    args = stage_args(__doc__.splitlines()[0], argv)
    params = stage_config(args, "influence")
    paths = stage_paths("influential_filters", args.run_dir)
    remove_stale_temps(*stage_outs("influential_filters", args.run_dir))
    inputs = load_influential_filters_inputs(paths)
    result = run_influential_filters(inputs, params.influence, params.source)
    write_influential_filters(result, paths)
    print(result.summary())


if __name__ == "__main__":
    run_stage(main)
