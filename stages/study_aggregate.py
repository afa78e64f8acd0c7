"""Stage aggregate (study/dvc.yaml): do the unit roles track generalization?

Every cell of the study's grid (a label-noise fraction and a seed) is the pipeline's own
stages run under artifacts/study/runs/noise<f>_seed<s>/ with study/params.yaml and that cell's
data.label_noise, data.seed and train.seed. This stage reads their artifacts/metrics/rof.json
and params `grid` and `aggregate`; writes artifacts/study/summary.csv (one row per run),
artifacts/study/summary.md (mean and spread per noise level), artifacts/study/ratios_vs_gap.png
and artifacts/metrics/study.json (Pearson and Spearman correlation of each role's ratio with
the generalization gap, over all runs).
"""
from netunits.api.study_aggregate import load_study_aggregate_inputs, run_study_aggregate, write_study_aggregate
from netunits.files import remove_stale_temps
from netunits.runtime import run_stage, stage_args, stage_config
from netunits.stage_table import stage_outs, stage_paths


def main(argv=None):
    args = stage_args(__doc__.splitlines()[0], argv)
    params = stage_config(args, "grid", "aggregate")
    paths = stage_paths("study_aggregate", args.run_dir)
    remove_stale_temps(*stage_outs("study_aggregate", args.run_dir))
    inputs = load_study_aggregate_inputs(args.run_dir, params.grid)
    result = run_study_aggregate(inputs, params.grid, params.aggregate)
    write_study_aggregate(result, paths, params.aggregate)
    print(result.summary())


if __name__ == "__main__":
    run_stage(main)
