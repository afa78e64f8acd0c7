"""Stage aggregate (study/dvc.yaml): do the unit roles track generalization?

Reads study/params.yaml (section `grid`, and `run.turning_point`) and every cell's JSON in
artifacts/study/runs/; writes artifacts/study/summary.csv (one row per run),
artifacts/study/summary.md (mean and spread per noise level), artifacts/study/ratios_vs_gap.png
and artifacts/metrics/study.json (Pearson and Spearman correlation of each category ratio with
the generalization gap, over all runs).
"""
import json
import math
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402

from stages.common import PipelineError, load_params, remove_stale_temps, run_stage, write_csv, write_json, write_text  # noqa: E402,E501
from stages.plot import save_figure  # noqa: E402
from stages.rof import CATEGORIES  # noqa: E402
from stages.study_run import PARAMS, RUNS_DIR, STUDY_SCHEMA, run_name  # noqa: E402

OUT_DIR = Path("artifacts/study")
METRICS = Path("artifacts/metrics/study.json")
METRIC_NAMES = ("acc", "loss")


def pearson(x, y):
    x, y = np.asarray(x, dtype=float), np.asarray(y, dtype=float)
    if len(x) < 3 or x.std() == 0 or y.std() == 0:
        return float("nan")  # undefined: too few runs, or one side constant
    return float(np.corrcoef(x, y)[0, 1])


def average_ranks(values):
    """Ranks 1..n, ties sharing their mean rank (what Spearman's rho needs)."""
    values = np.asarray(values, dtype=float)
    order = np.argsort(values, kind="stable")
    ranks = np.empty(len(values))
    i = 0
    while i < len(values):
        j = i
        while j + 1 < len(values) and values[order[j + 1]] == values[order[i]]:
            j += 1
        ranks[order[i:j + 1]] = (i + j) / 2 + 1
        i = j + 1
    return ranks


def spearman(x, y):
    return pearson(average_ranks(x), average_ranks(y))


def load_runs(grid):
    runs = []
    for noise in grid["label_noise"]:
        for seed in grid["seeds"]:
            path = RUNS_DIR / f"{run_name(noise, seed)}.json"
            try:
                runs.append(json.loads(path.read_text()))
            except FileNotFoundError:
                raise PipelineError(f"{path}: missing; run `make study` (dvc repro study/dvc.yaml)") from None
            except json.JSONDecodeError as exc:
                raise PipelineError(f"{path}: not valid JSON ({exc}); rerun `dvc repro -f study/dvc.yaml`") from None
    return runs


def summary_rows(runs, definition):
    rows = []
    for run in runs:
        row = {"label_noise": run["label_noise"], "seed": run["seed"], "train_accuracy": run["train_accuracy"],
               "test_accuracy": run["test_accuracy"], "generalization_gap": run["generalization_gap"]}
        for subset in ("train", "test"):
            for metric in METRIC_NAMES:
                row[f"n0_{metric}_{subset}"] = run["n0"][subset][definition][metric]
        for metric in METRIC_NAMES:
            for category in CATEGORIES:
                row[f"{category}_ratio_{metric}"] = run["taxonomy"][definition][metric][f"{category}_ratio"]
        rows.append(row)
    return rows


def correlations(rows):
    gap = [r["generalization_gap"] for r in rows]
    return {metric: {category: {"pearson": pearson([r[f"{category}_ratio_{metric}"] for r in rows], gap),
                                "spearman": spearman([r[f"{category}_ratio_{metric}"] for r in rows], gap)}
                     for category in CATEGORIES} for metric in METRIC_NAMES}


def markdown_table(rows, noise_levels):
    columns = ["train_accuracy", "test_accuracy", "generalization_gap"] + \
        [f"{c}_ratio_{m}" for m in METRIC_NAMES for c in CATEGORIES]
    lines = ["| label noise | runs | " + " | ".join(columns) + " |", "|---:|---:|" + "---:|" * len(columns)]
    for noise in noise_levels:
        group = [r for r in rows if r["label_noise"] == noise]
        cells = []
        for column in columns:
            values = np.array([r[column] for r in group])
            cells.append(f"{values.mean():.3f} ± {values.std(ddof=1) if len(values) > 1 else 0:.3f}")
        lines.append(f"| {noise} | {len(group)} | " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n\nmean ± sample standard deviation over seeds\n"


def ratios_figure(rows, noise_levels, definition, corr):
    figure, axes = plt.subplots(2, 4, figsize=(15, 7), sharex=True)
    colours = plt.get_cmap("viridis")(np.linspace(0, 0.9, len(noise_levels)))
    for row, metric in enumerate(METRIC_NAMES):
        for col, category in enumerate(CATEGORIES):
            ax = axes[row, col]
            for colour, noise in zip(colours, noise_levels):
                group = [r for r in rows if r["label_noise"] == noise]
                gap = np.array([r["generalization_gap"] for r in group])
                ratio = np.array([r[f"{category}_ratio_{metric}"] for r in group])
                ax.scatter(gap, ratio, color=colour, s=18, alpha=0.6)
                ax.errorbar(gap.mean(), ratio.mean(), xerr=gap.std(), yerr=ratio.std(), color=colour,
                            marker="s", ms=6, capsize=3, label=f"noise {noise}")
            c = corr[metric][category]
            ax.set_title(f"{category} (by {metric})\nPearson {_fmt(c['pearson'])}, Spearman {_fmt(c['spearman'])}",
                         fontsize=9)
            ax.grid(alpha=0.3)
            if col == 0:
                ax.set_ylabel("share of the 512 units")
            if row == 1:
                ax.set_xlabel("generalization gap (train - test accuracy)")
    axes[0, 0].legend(fontsize=7)
    figure.suptitle(f"Unit-role ratios against the generalization gap ({definition} turning points); "
                    f"dots: runs, squares: mean ± sd over seeds")
    figure.tight_layout()
    return figure


def _fmt(value):
    return "n/a" if math.isnan(value) else f"{value:+.2f}"


def main():
    grid = load_params("grid", PARAMS, STUDY_SCHEMA)
    definition = load_params("run", PARAMS, STUDY_SCHEMA)["turning_point"]
    outputs = [OUT_DIR / "summary.csv", OUT_DIR / "summary.md", OUT_DIR / "ratios_vs_gap.png", METRICS]
    remove_stale_temps(*outputs)
    rows = summary_rows(load_runs(grid), definition)
    corr = correlations(rows)
    write_csv(rows, OUT_DIR / "summary.csv")
    write_text(markdown_table(rows, grid["label_noise"]), OUT_DIR / "summary.md")
    figure = ratios_figure(rows, grid["label_noise"], definition, corr)
    save_figure(figure, OUT_DIR / "ratios_vs_gap.png", 110)
    plt.close(figure)
    # NaN is not JSON: an undefined correlation is written as null
    write_json({"n_runs": len(rows),
                **{m: {c: {k: (None if math.isnan(v) else v) for k, v in corr[m][c].items()} for c in CATEGORIES}
                   for m in METRIC_NAMES}}, METRICS)
    for metric in METRIC_NAMES:
        print(f"by {metric}: " + ", ".join(f"{c} ratio vs gap r={_fmt(corr[metric][c]['pearson'])}"
                                             for c in CATEGORIES))


if __name__ == "__main__":
    run_stage(main)
