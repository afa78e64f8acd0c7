"""Statistics over many runs of the pipeline: correlation of the role ratios with the
generalization gap, and the summary tables."""
from __future__ import annotations

from typing import Any, Mapping, Sequence

import numpy as np
from numpy.typing import ArrayLike

from netunits.methods.rof import CATEGORIES, METRIC_NAMES


def pearson(x: ArrayLike, y: ArrayLike) -> float:
    x, y = np.asarray(x, dtype=float), np.asarray(y, dtype=float)
    if len(x) < 3 or x.std() == 0 or y.std() == 0:
        return float("nan")  # undefined: too few runs, or one side constant
    return float(np.corrcoef(x, y)[0, 1])


def average_ranks(values: ArrayLike) -> np.ndarray:
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


def spearman(x: ArrayLike, y: ArrayLike) -> float:
    return pearson(average_ranks(x), average_ranks(y))


def summary_row(label_noise: float, seed: int, rof_metrics: Mapping[str, Any], definition: str) -> dict:
    """One run's row: accuracies (the training subset's with the labels it was trained on), the
    gap, the turning points and the role ratios."""
    train, test = rof_metrics["train"], rof_metrics["test"]
    row = {"label_noise": label_noise, "seed": seed, "train_accuracy": train["full_accuracy"],
           "test_accuracy": test["full_accuracy"],
           "generalization_gap": train["full_accuracy"] - test["full_accuracy"]}
    suffix = "" if definition == "exact" else "_tol"
    for subset in ("train", "test"):
        for metric in METRIC_NAMES:
            row[f"n0_{metric}_{subset}"] = rof_metrics[subset][f"n0_{metric}{suffix}"]
    for metric in METRIC_NAMES:
        for category in CATEGORIES:
            row[f"{category}_ratio_{metric}"] = rof_metrics["taxonomy"][definition][metric][f"{category}_ratio"]
    return row


def correlations(rows: Sequence[Mapping[str, Any]]) -> dict[str, dict[str, dict[str, float]]]:
    gap = [r["generalization_gap"] for r in rows]
    return {metric: {category: {"pearson": pearson([r[f"{category}_ratio_{metric}"] for r in rows], gap),
                                "spearman": spearman([r[f"{category}_ratio_{metric}"] for r in rows], gap)}
                     for category in CATEGORIES} for metric in METRIC_NAMES}


def markdown_table(rows: Sequence[Mapping[str, Any]], noise_levels: Sequence[float]) -> str:
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
