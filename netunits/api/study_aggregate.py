"""The generalization study's answer: do the unit roles track generalization? One row per run
of the grid, the mean and spread per noise level, and the correlation of each role's ratio with
the generalization gap over all runs.

From a notebook: `run_study_aggregate(StudyInputs({(noise, seed): rof_metrics, ...}),
GridParams(...), AggregateParams(...))` with each run's rof_sweep metrics (metrics/rof.json).
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path

from netunits.errors import PipelineError
from netunits.files import read_json, write_csv, write_json, write_text
from netunits.methods.rof import CATEGORIES, METRIC_NAMES
from netunits.params import AggregateParams, GridParams
from netunits.plots import close, ratios_figure, save_figure
from netunits.stage_table import stage_paths, study_cell
from netunits.study import correlations, markdown_table, summary_row


@dataclass
class StudyInputs:
    runs: dict[tuple[float, int], dict]    # (label noise, seed) -> the run's rof_sweep metrics


@dataclass
class StudyResult:
    rows: list[dict]                       # one per run (summary.csv)
    table: str                             # mean and spread per noise level (summary.md)
    figure: object                         # role ratios against the gap
    correlations: dict                     # metric -> role -> pearson, spearman

    def metrics(self) -> dict:
        # NaN is not JSON: an undefined correlation is written as null
        return {"n_runs": len(self.rows),
                **{m: {c: {k: (None if math.isnan(v) else v) for k, v in self.correlations[m][c].items()}
                       for c in CATEGORIES} for m in METRIC_NAMES}}

    def summary(self) -> str:
        return "\n".join(f"by {metric}: " + ", ".join(f"{c} ratio vs gap "
                                                      f"r={self.correlations[metric][c]['pearson']:+.2f}"
                                                      for c in CATEGORIES) for metric in METRIC_NAMES)


def load_study_aggregate_inputs(run_dir: Path, grid: GridParams) -> StudyInputs:
    """Every cell's metrics/rof.json (each cell's folder: netunits.stage_table.study_cell)."""
    runs = {}
    for noise in grid.label_noise:
        for seed in grid.seeds:
            path = stage_paths("rof_sweep", study_cell(run_dir, noise, seed))["rof_metrics"]
            if not path.exists():
                raise PipelineError(f"{path}: missing; run `make study` (dvc repro study/dvc.yaml)")
            runs[(noise, seed)] = read_json(path)
    return StudyInputs(runs)


def run_study_aggregate(inputs: StudyInputs, grid: GridParams, config: AggregateParams) -> StudyResult:
    rows = [summary_row(noise, seed, metrics, config.turning_point) for (noise, seed), metrics in inputs.runs.items()]
    corr = correlations(rows)
    figure = ratios_figure(rows, grid.label_noise, config.turning_point, corr)
    return StudyResult(rows, markdown_table(rows, grid.label_noise), figure, corr)


def write_study_aggregate(result: StudyResult, paths: dict[str, Path], config: AggregateParams) -> None:
    write_csv(result.rows, paths["study_summary"])
    write_text(result.table, paths["study_table"])
    save_figure(result.figure, paths["study_figure"], config.dpi)
    close(result.figure)
    write_json(result.metrics(), paths["study_metrics"])
