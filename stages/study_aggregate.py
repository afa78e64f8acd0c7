"""Stage aggregate (study/dvc.yaml): do the unit roles track generalization?

Every cell of the study's grid (a label-noise fraction and a seed) is the pipeline's own
stages run under artifacts/study/runs/noise<f>_seed<s>/ with study/params.yaml and that cell's
data.label_noise, data.seed and train.seed. This stage reads their artifacts/metrics/rof.json
and params `grid` and `aggregate`; writes artifacts/study/summary.csv (one row per run),
artifacts/study/summary.md (mean and spread per noise level), artifacts/study/ratios_vs_gap.png
and artifacts/metrics/study.json (Pearson and Spearman correlation of each role's ratio with
the generalization gap, over all runs).
"""
import math

from netunits.errors import PipelineError
from netunits.files import read_json, remove_stale_temps, write_csv, write_json, write_text
from netunits.methods.rof import CATEGORIES, METRIC_NAMES
from netunits.plots import close, ratios_figure, save_figure
from netunits.runtime import run_stage, stage_args, stage_config
from netunits.stage_table import stage_paths, study_cell
from netunits.study import correlations, markdown_table, summary_row

def main(argv=None):
    args = stage_args(__doc__.splitlines()[0], argv)
    config = stage_config(args, "grid", "aggregate")
    grid, params = config.grid, config.aggregate
    paths = stage_paths("study_aggregate", args.run_dir)
    metrics_path = paths["study_metrics"]
    remove_stale_temps(paths["study_summary"], paths["study_table"], paths["study_figure"], metrics_path)
    rows = []
    for noise in grid.label_noise:
        for seed in grid.seeds:
            path = stage_paths("rof_sweep", study_cell(args.run_dir, noise, seed))["rof_metrics"]
            if not path.exists():
                raise PipelineError(f"{path}: missing; run `make study` (dvc repro study/dvc.yaml)")
            rows.append(summary_row(noise, seed, read_json(path), params.turning_point))
    corr = correlations(rows)
    write_csv(rows, paths["study_summary"])
    write_text(markdown_table(rows, grid.label_noise), paths["study_table"])
    figure = ratios_figure(rows, grid.label_noise, params.turning_point, corr)
    save_figure(figure, paths["study_figure"], params.dpi)
    close(figure)
    # NaN is not JSON: an undefined correlation is written as null
    write_json({"n_runs": len(rows),
                **{m: {c: {k: (None if math.isnan(v) else v) for k, v in corr[m][c].items()} for c in CATEGORIES}
                   for m in METRIC_NAMES}}, metrics_path)
    for metric in METRIC_NAMES:
        print(f"by {metric}: " + ", ".join(f"{c} ratio vs gap r={corr[metric][c]['pearson']:+.2f}"
                                             for c in CATEGORIES))


if __name__ == "__main__":
    run_stage(main)
