"""The figures: ROF curves with their turning points, role counts, and the study's ratios
against the generalization gap. Files carry no creation date, so the same inputs give
byte-identical figures."""
from __future__ import annotations

import math
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402

from netunits.files import atomic_path  # noqa: E402
from netunits.methods.rof import CATEGORIES, RANKINGS  # noqa: E402

CONTROL_COLOURS = {"l1": "tab:purple", "random": "tab:blue", "ascending": "tab:green"}
PDF_METADATA = {"CreationDate": None, "ModDate": None, "Producer": None}


def save_figure(figure, path, dpi):
    path = Path(path)
    with atomic_path(path) as tmp:
        metadata = PDF_METADATA if path.suffix == ".pdf" else {"Software": None}
        figure.savefig(tmp, format=path.suffix[1:], dpi=dpi, metadata=metadata, bbox_inches="tight")


def close(figure):
    plt.close(figure)


def model_label(arch, layer):
    """How titles name the analysed units' model: 'ResNet18', or the registry name, and the layer
    when it is not the pooled features."""
    name = "ResNet18" if arch == "resnet18" else arch
    return name if layer == "avgpool" else f"{name} ({layer})"


def rof_figure(curves, rof_metrics, baseline_accuracy, ranking, label):
    """2 x 2: accuracy (top) and loss (bottom) against n_units, train (left) and test (right).
    The accuracy panels' baselines: `baseline_accuracy` (the model's test accuracy) on the test
    panel, rof_metrics["train"]["full_accuracy"] (its accuracy on the train subset) on the train one."""
    figure, axes = plt.subplots(2, 2, figsize=(11, 7.5), sharex=True)
    for col, subset in enumerate(("train", "test")):
        c, m = curves[subset], rof_metrics[subset]
        for row, (metric, title_metric) in enumerate((("accuracy", "accuracy"), ("loss", "cross-entropy loss"))):
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
                # each panel's own subset: the model's accuracy there with every unit
                baseline = baseline_accuracy if subset == "test" else m["full_accuracy"]
                ax.axhline(baseline, color="red", ls="--", lw=1, label=f"baseline ({subset}) = {baseline:.3f}")
            n_total = int(c["n_units"][-1])
            flags = [name for name, n0 in (("exact", exact), ("tolerance", tolerant)) if n0 in (0, n_total)]
            title = f"{subset}: {title_metric}"
            if flags:
                title += f"\ndegenerate ({', '.join(flags)}): U0 holds {'all' if exact == n_total else 'no'} units"
            ax.set_title(title, fontsize=10, color="firebrick" if flags else "black")
            ax.set_ylabel(title_metric)
            if row == 1:
                ax.set_xlabel("number of units activated (top-ranked first)")
            ax.legend(fontsize=7, loc="lower right" if metric == "accuracy" else "upper right")
            ax.grid(alpha=0.3)
    n_units = int(curves["train"]["n_units"][-1])
    figure.suptitle(f"ROF: retrieval of function over the {n_units} pooled units of {label}")
    figure.tight_layout()
    return figure


def category_figure(taxonomy, n_units):
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
    axes[0].set_ylabel(f"units (of {n_units})")
    figure.suptitle("Unit roles: in U0 of the training set, of the test set, of both, of neither")
    figure.tight_layout()
    return figure


def _fmt(value):
    return "n/a" if math.isnan(value) else f"{value:+.2f}"


def ratios_figure(rows, noise_levels, definition, corr, metric_names=("acc", "loss")):
    """Each role's ratio against the generalization gap, one panel per role and metric."""
    figure, axes = plt.subplots(2, 4, figsize=(15, 7), sharex=True)
    colours = plt.get_cmap("viridis")(np.linspace(0, 0.9, len(noise_levels)))
    for row, metric in enumerate(metric_names):
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
                ax.set_ylabel("share of the layer's units")
            if row == 1:
                ax.set_xlabel("generalization gap (train - test accuracy)")
    axes[0, 0].legend(fontsize=7)
    figure.suptitle(f"Unit-role ratios against the generalization gap ({definition} turning points); "
                    f"dots: runs, squares: mean ± sd over seeds")
    figure.tight_layout()
    return figure


def probe_figure(images, masks, names, what="digits"):
    """A few probe images (uint8 N x S x S grey or N x S x S x 3) and their pixel-level concept masks
    (bool N x C x M x M); `what` the probe's images are, for the title."""
    n, n_concepts = masks.shape[:2]
    figure, axes = plt.subplots(n, n_concepts + 1, figsize=(1.1 * (n_concepts + 1), 1.2 * n), squeeze=False)
    for row in range(n):
        axes[row, 0].imshow(images[row], cmap="gray")
        for col in range(n_concepts):
            axes[row, col + 1].imshow(masks[row, col], cmap="magma", vmin=0, vmax=1)
    for col, title in enumerate(["image"] + list(names)):
        axes[0, col].set_title(title.replace("_", "\n"), fontsize=7)
    for ax in axes.flat:
        ax.set_xticks([])
        ax.set_yticks([])
    figure.suptitle(f"Probe {what} and their concept masks")
    figure.tight_layout()
    return figure


IOU_DIGITS = 4   # as the explorer's tables and the stages' summary lines print IoUs


def iou_text(value: float) -> str:
    """An IoU as figures print it: 0.0394 stays 0.0394, never rounded up to a threshold of 0.04."""
    return f"{value:.{IOU_DIGITS}f}"


def concepts_per_layer_figure(counts, threshold=None):
    """counts: {layer: {concept: detectors}}; one bar chart per layer (the source document's). A
    layer without detectors gets a sentence instead of an empty axis."""
    figure, axes = plt.subplots(len(counts), 1, figsize=(11, 2.6 * len(counts)), squeeze=False)
    reach = f"IoU {threshold}" if threshold is not None else "the detector threshold"
    for ax, (layer, per_concept) in zip(axes[:, 0], counts.items()):
        items = sorted(per_concept.items(), key=lambda kv: (-kv[1], kv[0]))
        if not items:
            ax.axis("off")
            ax.text(0.5, 0.5, f"{layer}: no detectors: no unit's best concept reaches {reach}",
                    ha="center", va="center", fontsize=10, transform=ax.transAxes)
            continue
        ax.bar(range(len(items)), [v for _, v in items], color="tab:blue")
        ax.set_xticks(range(len(items)), [k for k, _ in items], rotation=60, ha="right", fontsize=7)
        ax.set_ylabel("detectors")
        ax.set_title(f"{layer}: {sum(per_concept.values())} detectors of {len(items)} concepts", fontsize=9)
        ax.grid(axis="y", alpha=0.3)
    at = f"at or above {threshold}" if threshold is not None else "at or above the threshold"
    figure.suptitle(f"Units per concept (best concept, IoU {at})")
    figure.tight_layout()
    return figure


def strip_label(layer: str, unit: int, concept: str, iou: float) -> str:
    """A strip's row label: the unit, its best concept and that concept's IoU."""
    return f"{layer} unit {unit}\n{concept}\nIoU {iou_text(iou)}"


def strips_title(ious, threshold) -> str:
    """What the strips show: "best detectors" only when every drawn unit passes the threshold."""
    head = "Top-activating probe images with the unit's mask"
    if threshold is None or ious is None:
        return f"{head} (units with the highest IoU)"
    passing = sum(iou >= threshold for iou in ious)
    if passing == len(ious):
        return f"{head} (best detectors, IoU at or above {threshold})"
    if passing == 0:
        return f"{head} (best units by IoU, none passes {threshold})"
    return f"{head} (best units by IoU, {passing} of {len(ious)} pass {threshold})"


def strips_figure(rows, threshold=None):
    """rows: (title, [(image S x S uint8, unit mask M x M bool), ...]) or (title, images, best IoU);
    NetDissect's image strips. With `threshold` and every row's IoU the title says how many of the
    drawn units are detectors."""
    n_cols = max(len(row[1]) for row in rows)
    ious = [row[2] for row in rows] if all(len(row) == 3 for row in rows) else None
    figure, axes = plt.subplots(len(rows), n_cols, figsize=(1.3 * n_cols, 1.45 * len(rows)), squeeze=False)
    for r, (title, images, *_) in enumerate(rows):
        for c in range(n_cols):
            ax = axes[r, c]
            ax.set_xticks([])
            ax.set_yticks([])
            if c >= len(images):
                ax.axis("off")
                continue
            image, mask = images[c]
            ax.imshow(image, cmap="gray", extent=(0, 1, 1, 0))
            ax.imshow(np.ma.masked_where(~mask, mask), cmap="autumn", alpha=0.55, extent=(0, 1, 1, 0))
        axes[r, 0].set_ylabel(title, fontsize=7, rotation=0, ha="right", va="center")
    figure.suptitle(strips_title(ious, threshold))
    figure.tight_layout()
    return figure


def descriptions_figure(counts, top, title):
    """counts: {layer: {description: units}}; per layer (side by side) its `top` most frequent
    descriptions as horizontal bars (ties by name), with the layer's unique count."""
    figure, axes = plt.subplots(1, len(counts), figsize=(4.2 * len(counts), 0.28 * top + 1.6), squeeze=False)
    for ax, (layer, per_description) in zip(axes[0], counts.items()):
        items = sorted(per_description.items(), key=lambda kv: (-kv[1], kv[0]))[:top]
        ax.barh(range(len(items)), [v for _, v in items], color="tab:blue")
        ax.set_yticks(range(len(items)), [k for k, _ in items], fontsize=7)
        ax.invert_yaxis()
        ax.set_xlabel("units")
        ax.set_title(f"{layer}: {sum(per_description.values())} units, {len(per_description)} unique", fontsize=9)
        ax.grid(axis="x", alpha=0.3)
    figure.suptitle(title)
    figure.tight_layout()
    return figure


def formula_length_figure(scores, gains, min_gain):
    """scores: {layer: {length: [each unit's best score at that length]}}; gains: {layer: [each
    unit's formula IoU minus its best concept's]}. Score against formula length, and the gains."""
    figure, (left, right) = plt.subplots(1, 2, figsize=(10, 3.6))
    for layer, by_length in scores.items():
        lengths = sorted(by_length)
        values = [np.asarray(by_length[n], dtype=float) for n in lengths]
        left.plot(lengths, [v.mean() for v in values], marker="o", label=f"{layer} (mean)")
        left.fill_between(lengths, [np.percentile(v, 25) for v in values], [np.percentile(v, 75) for v in values],
                          alpha=0.2)
        right.hist(gains[layer], bins=30, alpha=0.6, label=layer)
    left.set_xlabel("formula length (concepts)")
    left.set_ylabel("best score found (band: quartiles)")
    left.set_xticks(sorted({n for by_length in scores.values() for n in by_length}))
    left.grid(alpha=0.3)
    left.legend(fontsize=8)
    right.axvline(min_gain, color="k", linestyle="--", linewidth=1, label=f"gain {min_gain}")
    right.set_xlabel("formula IoU - best single concept's IoU")
    right.set_ylabel("units")
    right.legend(fontsize=8)
    right.grid(alpha=0.3)
    figure.suptitle("Compositional explanations: score against formula length")
    figure.tight_layout()
    return figure
