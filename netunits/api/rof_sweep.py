"""ROF on a trained model's pooled features: curves, turning points, the role taxonomy and the
four tables the stage rof_sweep writes.

From a notebook: `run_rof_sweep(RofSweepInputs(weight, bias, {"train": s, "test": s}), RofParams(...))`
with each subset a dict of units (N x n_units features), labels and logits (and clean_labels
where the labels carry noise).
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import torch

from netunits.errors import PipelineError
from netunits.files import load_checked, write_csv, write_json
from netunits.methods.rof import (
    CATEGORIES,
    DEFINITIONS,
    METRIC_NAMES,
    RANKINGS,
    SUBSETS,
    area_under_curve,
    build_taxonomy,
    category_counts,
    sweep_subset,
    unit_l1_norms,
)
from netunits.models.checkpoint import load_checkpoint_file
from netunits.models.registry import get_architecture
from netunits.params import RofParams

FEATURE_KEYS = {
    "features": lambda v: isinstance(v, dict) and all(isinstance(t, torch.Tensor) and t.dim() == 2
                                                      and t.is_floating_point() for t in v.values()),
    "logits": lambda v: isinstance(v, torch.Tensor) and v.dim() == 2,
    "labels": lambda v: isinstance(v, torch.Tensor) and v.dim() == 1 and v.dtype == torch.int64,
    "checkpoint_sha256": lambda v: isinstance(v, str),
}


@dataclass
class RofSweepInputs:
    weight: torch.Tensor               # the final layer: n_classes x n_units
    bias: torch.Tensor
    subsets: dict[str, dict]           # "train", "test" -> units, labels, logits (, clean_labels)


@dataclass
class RofSweepResult:
    curves: dict[str, list[dict]]      # per subset: one row per n_units, every ranking's accuracy and loss
    units: dict                        # the ranked units and the U0 sets (units.json)
    roles: list[dict]                  # one row per unit: L1 norms, ranks, roles (unit_roles.csv)
    counts: list[dict]                 # units per role (category_counts.csv)
    metrics: dict                      # turning points, AUCs, the taxonomy (metrics/rof.json)

    def summary(self) -> str:
        lines = [f"{name}: n0_acc {m['n0_acc']} (tolerance {m['n0_acc_tol']}), n0_loss {m['n0_loss']} "
                 f"(tolerance {m['n0_loss_tol']}), accuracy with all units {m['full_accuracy']:.4f}"
                 for name, m in ((s, self.metrics[s]) for s in SUBSETS)]
        chosen = self.units["turning_point"]
        lines += [f"categories by {metric} ({chosen}): " + ", ".join(f"{row['category']} {row[metric]}"
                                                                     for row in self.counts) for metric in METRIC_NAMES]
        return "\n".join(lines)


def load_rof_sweep_inputs(paths: dict[str, Path]) -> RofSweepInputs:
    """The final layer from the checkpoint and, per subset, the features of the layer it reads
    (the architecture's pooled layer); refuses features of another checkpoint."""
    checkpoint = load_checkpoint_file(paths["model"])
    layer = get_architecture(checkpoint["arch"]).pooled_layer
    weight, bias = checkpoint["state_dict"]["fc.weight"], checkpoint["state_dict"]["fc.bias"]
    subsets = {}
    for name in SUBSETS:
        path = paths[f"{name}_features"]
        data = load_checked(path, FEATURE_KEYS, "features file")
        if data["checkpoint_sha256"] != checkpoint["sha256"]:
            raise PipelineError(f"{path}: extracted from a different checkpoint than {paths['model']}; "
                                f"rerun `dvc repro extract_features`")
        if layer not in data["features"] or data["features"][layer].shape[1] != weight.shape[1]:
            raise PipelineError(f"{path}: holds no features of {layer} with the {weight.shape[1]} units the final "
                                f"layer reads; rerun `dvc repro extract_features`")
        units = data["features"][layer]
        n = len(units)
        if len(data["labels"]) != n or data["logits"].shape != (n, weight.shape[0]):
            raise PipelineError(f"{path}: shapes do not match {paths['model']} (features {tuple(units.shape)}, "
                                f"fc {tuple(weight.shape)}); rerun `dvc repro extract_features`")
        subsets[name] = {**data, "units": units}
    return RofSweepInputs(weight, bias, subsets)


def curve_rows(curves: dict, ranking: str) -> list[dict]:
    """One row per n_units: the chosen ranking's accuracy and loss, then every ranking's."""
    rows = []
    for n in range(len(curves[ranking]["accuracy"])):
        row = {"n_units": n, "accuracy": float(curves[ranking]["accuracy"][n]),
               "loss": float(curves[ranking]["loss"][n])}
        for r in RANKINGS:
            row[f"accuracy_{r}"] = float(curves[r]["accuracy"][n])
            row[f"loss_{r}"] = float(curves[r]["loss"][n])
        rows.append(row)
    return rows


def role_rows(subsets: dict, orders: dict, categories: dict, chosen: str) -> list[dict]:
    """One row per unit: its L1 norm and rank (1 = first retrieved) per subset, its roles."""
    l1 = {name: unit_l1_norms(subsets[name]["units"]) for name in SUBSETS}
    rank = {}
    for name in SUBSETS:
        rank[name] = torch.empty_like(orders[name])
        rank[name][orders[name]] = torch.arange(len(rank[name]))
    return [{"unit": u, "l1_train": float(l1["train"][u]), "l1_test": float(l1["test"][u]),
             "rank_train": int(rank["train"][u]) + 1, "rank_test": int(rank["test"][u]) + 1,
             "category_acc": categories[(chosen, "acc")][u], "category_loss": categories[(chosen, "loss")][u]}
            for u in range(len(l1["train"]))]


def rof_metrics(curves: dict, subsets: dict, ranking: str, points: dict, counts: dict, degenerate: dict) -> dict:
    metrics = {}
    for name in SUBSETS:
        c = curves[name][ranking]
        metrics[name] = {
            "n0_acc": points[name]["exact"]["acc"], "n0_loss": points[name]["exact"]["loss"],
            "n0_acc_tol": points[name]["tolerance"]["acc"], "n0_loss_tol": points[name]["tolerance"]["loss"],
            "max_accuracy": float(c["accuracy"].max()), "min_loss": float(c["loss"].min()),
            "full_accuracy": float(c["accuracy"][-1]), "full_loss": float(c["loss"][-1]),
            **{f"auc_{r}": area_under_curve(curves[name][r]["accuracy"]) for r in RANKINGS},
        }
        if "clean_labels" in subsets[name]:   # with label noise: how many labels, and the clean accuracy
            clean, logits = subsets[name]["clean_labels"], subsets[name]["logits"]
            metrics[name]["labels_changed"] = int((clean != subsets[name]["labels"]).sum())
            metrics[name]["accuracy_clean_labels"] = float((logits.argmax(1) == clean).double().mean())
    metrics["taxonomy"] = {d: {m: {**counts[(d, m)], "degenerate": degenerate[(d, m)]} for m in METRIC_NAMES}
                           for d in DEFINITIONS}
    return metrics


def run_rof_sweep(inputs: RofSweepInputs, config: RofParams) -> RofSweepResult:
    ranking, chosen = config.ranking, config.turning_point
    curves = {name: sweep_subset(s["units"], s["labels"], s["logits"], inputs.weight, inputs.bias, config.seed)
              for name, s in inputs.subsets.items()}
    points, categories, u0, degenerate = build_taxonomy(curves, ranking, config.acc_tolerance, config.loss_tolerance)
    orders = {name: curves[name][ranking]["order"] for name in SUBSETS}
    counts = {key: category_counts(cats) for key, cats in categories.items()}
    units = {"ranking": ranking, "turning_point": chosen, "subsets": {
        name: {"order": orders[name].tolist(), "n0": points[name],
               "U0": {d: {m: torch.nonzero(u0[(d, m)][name]).flatten().tolist() for m in METRIC_NAMES}
                      for d in DEFINITIONS}}
        for name in SUBSETS}}
    return RofSweepResult(
        curves={name: curve_rows(curves[name], ranking) for name in SUBSETS}, units=units,
        roles=role_rows(inputs.subsets, orders, categories, chosen),
        counts=[{"category": cat, "acc": counts[(chosen, "acc")][cat], "loss": counts[(chosen, "loss")][cat]}
                for cat in CATEGORIES],
        metrics=rof_metrics(curves, inputs.subsets, ranking, points, counts, degenerate))


def write_rof_sweep(result: RofSweepResult, paths: dict[str, Path]) -> None:
    for name in SUBSETS:
        write_csv(result.curves[name], paths[f"rof_curve_{name}"])
    write_csv(result.roles, paths["rof_roles"])
    write_csv(result.counts, paths["rof_counts"])
    write_json(result.units, paths["rof_units"])
    write_json(result.metrics, paths["rof_metrics"])
