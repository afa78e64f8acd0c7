"""Stage plot: the ROF figure (seed 000's rof_curve_turning_points.pdf) and the category figure.

Reads params `plot`, artifacts/rof/curve_{train,test}.csv, artifacts/rof/category_counts.csv,
artifacts/metrics/{train,rof}.json; writes artifacts/plots/rof_curve_turning_points.{pdf,png}
and artifacts/plots/unit_categories.png.
"""
import json
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402

from stages.common import PipelineError, atomic_path, load_params, read_csv, remove_stale_temps, run_stage  # noqa: E402
from stages.rof import CATEGORIES, RANKINGS  # noqa: E402

OUT_DIR = Path("artifacts/plots")
ROF_FIGURE = OUT_DIR / "rof_curve_turning_points"
CATEGORY_FIGURE = OUT_DIR / "unit_categories.png"
# Fixed metadata so the same inputs give byte-identical files (no creation date).
CONTROL_COLOURS = {"l1": "tab:purple", "random": "tab:blue", "ascending": "tab:green"}
PDF_METADATA = {"CreationDate": None, "ModDate": None, "Producer": None}


def read_json(path):
    try:
        return json.loads(Path(path).read_text())
    except FileNotFoundError:
        raise PipelineError(f"{path}: file not found; run `dvc repro` to create it") from None
    except json.JSONDecodeError as exc:
        raise PipelineError(f"{path}: not valid JSON ({exc}); rerun `dvc repro -f`") from None


def save_figure(figure, path, dpi):
    path = Path(path)
    with atomic_path(path) as tmp:
        metadata = PDF_METADATA if path.suffix == ".pdf" else {"Software": None}
        figure.savefig(tmp, format=path.suffix[1:], dpi=dpi, metadata=metadata, bbox_inches="tight")


def rof_figure(curves, rof_metrics, baseline_accuracy, ranking):
    """2 x 2: accuracy (top) and loss (bottom) against n_units, train (left) and test (right)."""
    figure, axes = plt.subplots(2, 2, figsize=(11, 7.5), sharex=True)
    for col, subset in enumerate(("train", "test")):
        c, m = curves[subset], rof_metrics[subset]
        for row, (metric, label) in enumerate((("accuracy", "accuracy"), ("loss", "cross-entropy loss"))):
            ax = axes[row, col]
            for control in RANKINGS:
                if control != ranking:
                    ax.plot(c["n_units"], c[f"{metric}_{control}"], lw=0.8, alpha=0.45,
                            color=CONTROL_COLOURS[control], label=f"control: {control} order")
            ax.plot(c["n_units"], c[metric], color="black", lw=1.5, label=f"{ranking} order")
            key = "acc" if metric == "accuracy" else "loss"
            exact, tolerant = m[f"n0_{key}"], m[f"n0_{key}_tol"]
            ax.axvline(exact, color="orange", lw=1.5, label=f"n0_{key} exact = {exact}")
            ax.axvline(tolerant, color="orange", lw=1.5, ls=":", label=f"n0_{key} tolerance = {tolerant}")
            if metric == "accuracy":
                ax.axhline(baseline_accuracy, color="red", ls="--", lw=1,
                           label=f"baseline (test) = {baseline_accuracy:.3f}")
            n_total = int(c["n_units"][-1])
            flags = [name for name, n0 in (("exact", exact), ("tolerance", tolerant)) if n0 in (0, n_total)]
            title = f"{subset}: {label}"
            if flags:
                title += f"\ndegenerate ({', '.join(flags)}): U0 holds {'all' if exact == n_total else 'no'} units"
            ax.set_title(title, fontsize=10, color="firebrick" if flags else "black")
            ax.set_ylabel(label)
            if row == 1:
                ax.set_xlabel("number of units activated (top-ranked first)")
            ax.legend(fontsize=7, loc="lower right" if metric == "accuracy" else "upper right")
            ax.grid(alpha=0.3)
    figure.suptitle("ROF: retrieval of function over the 512 pooled units of ResNet18")
    figure.tight_layout()
    return figure


def category_figure(taxonomy):
    """Category counts by accuracy and by loss, side by side, for both turning-point definitions."""
    figure, axes = plt.subplots(1, 2, figsize=(11, 4), sharey=True)
    width = 0.38
    for ax, definition in zip(axes, ("exact", "tolerance")):
        for shift, metric in ((-width / 2, "acc"), (width / 2, "loss")):
            counts = [taxonomy[definition][metric][cat] for cat in CATEGORIES]
            bars = ax.bar([i + shift for i in range(len(CATEGORIES))], counts, width, label=f"by {metric}")
            ax.bar_label(bars, fontsize=8)
        flagged = [m for m in ("acc", "loss") if taxonomy[definition][m]["degenerate"]]
        title = f"{definition} turning points"
        if flagged:
            title += f"\ndegenerate by {', '.join(flagged)} (a U0 holds all units or none)"
        ax.set_title(title, fontsize=10, color="firebrick" if flagged else "black")
        ax.set_xticks(range(len(CATEGORIES)), CATEGORIES)
        ax.legend(fontsize=8)
        ax.grid(axis="y", alpha=0.3)
    axes[0].set_ylabel("units (of 512)")
    figure.suptitle("Unit roles: in U0 of the training set, of the test set, of both, of neither")
    figure.tight_layout()
    return figure


def main():
    params = load_params("plot")
    remove_stale_temps(ROF_FIGURE.with_suffix(".pdf"), ROF_FIGURE.with_suffix(".png"), CATEGORY_FIGURE)
    curves = {s: read_csv(f"artifacts/rof/curve_{s}.csv") for s in ("train", "test")}
    rof_metrics = read_json("artifacts/metrics/rof.json")
    baseline = read_json("artifacts/metrics/train.json")["baseline_accuracy"]
    ranking = read_json("artifacts/rof/units.json")["ranking"]
    figure = rof_figure(curves, rof_metrics, baseline, ranking)
    save_figure(figure, ROF_FIGURE.with_suffix(".pdf"), params["dpi"])
    save_figure(figure, ROF_FIGURE.with_suffix(".png"), params["dpi"])
    plt.close(figure)
    figure = category_figure(rof_metrics["taxonomy"])
    save_figure(figure, CATEGORY_FIGURE, params["dpi"])
    plt.close(figure)
    print(f"wrote {ROF_FIGURE}.pdf, {ROF_FIGURE}.png and {CATEGORY_FIGURE}")


if __name__ == "__main__":
    run_stage(main)
