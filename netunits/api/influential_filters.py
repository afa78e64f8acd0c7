"""Influential filters ("Decomposing the Deep") on a trained model's pooled features: per class
the few units that carry it, the final layer rebuilt from them, their essentiality under noise,
the classes' overlap, and their place in ROF's roles; the tables the stage writes.

From a notebook: `run_influential_filters(InfluenceInputs(...), InfluenceParams(...))` with the
final layer, the train and test features of its input layer, and ROF's U0 sets and role table.
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import torch

from netunits.errors import PipelineError
from netunits.files import load_checked, read_csv, read_json, write_csv, write_json
from netunits.methods import influence
from netunits.models.checkpoint import load_checkpoint_file
from netunits.models.registry import get_architecture
from netunits.params import InfluenceParams

FEATURE_KEYS = {"features": lambda v: isinstance(v, dict), "labels": lambda v: isinstance(v, torch.Tensor),
                "logits": lambda v: isinstance(v, torch.Tensor), "checkpoint_sha256": lambda v: isinstance(v, str)}
SUBSETS, METRICS = ("train", "test"), ("acc", "loss")


@dataclass
class InfluenceInputs:
    layer: str                         # the units' layer (the final layer's input), for the records
    weight: torch.Tensor               # the final layer: n_classes x n_units
    bias: torch.Tensor
    features: dict[str, torch.Tensor]  # "train", "test" -> N x n_units
    labels: dict[str, torch.Tensor]
    test_logits: torch.Tensor          # the model's own
    u0: dict[tuple[str, str], set]     # ROF's highly active units per (subset, metric)
    roles: dict[str, list]             # ROF's per-unit table (unit_roles.csv), as strings


@dataclass
class InfluenceResult:
    sets: dict                         # every k's class sets (sets.json)
    by_k: list[dict]
    by_class: list[dict]
    units: list[dict]                  # ROF's roles with the classes each unit is influential for
    metrics: dict

    def summary(self) -> str:
        return (f"{self.metrics['layer']}: accuracy {self.metrics['accuracy_full']:.4f} with the full final layer; "
                "decomposed: " + ", ".join(f"k={r['k']} {r['accuracy_decomposed']:.4f}" for r in self.by_k))


def _subset(path: Path, layer: str, checkpoint: dict, n_units: int):
    data = load_checked(path, FEATURE_KEYS, "features file")
    if data["checkpoint_sha256"] != checkpoint["sha256"]:
        raise PipelineError(f"{path}: extracted from a different checkpoint; rerun `dvc repro extract_features`")
    if layer not in data["features"] or data["features"][layer].shape[1] != n_units:
        raise PipelineError(f"{path}: holds no features of {layer} with the {n_units} units the final layer reads; "
                            f"rerun `dvc repro extract_features`")
    if data["logits"].shape[1] != checkpoint["n_classes"] or int(data["labels"].max()) >= checkpoint["n_classes"]:
        raise PipelineError(f"{path}: labels or logits do not fit the checkpoint's {checkpoint['n_classes']} classes; "
                            f"rerun `dvc repro`")
    return data["features"][layer], data["labels"], data["logits"]


def load_influential_filters_inputs(paths: dict[str, Path]) -> InfluenceInputs:
    checkpoint = load_checkpoint_file(paths["model"])
    layer = get_architecture(checkpoint["arch"]).pooled_layer
    weight, bias = checkpoint["state_dict"]["fc.weight"], checkpoint["state_dict"]["fc.bias"]
    n_classes, n_units = weight.shape
    if n_classes != checkpoint["n_classes"] or n_classes < 2:
        raise PipelineError(f"{paths['model']}: records {checkpoint['n_classes']} classes but its "
                            f"final layer has {n_classes}; rebuild it with `dvc repro -f train`")
    loaded = {s: _subset(paths[f"{s}_features"], layer, checkpoint, n_units) for s in SUBSETS}
    units = read_json(paths["rof_units"])
    roles = read_csv(paths["rof_roles"], numeric=False)
    if len(roles["unit"]) != n_units:
        raise PipelineError(f"{paths['rof_roles']}: {len(roles['unit'])} units, the final layer "
                            f"reads {n_units}; rerun `dvc repro rof_sweep`")
    definition = units["turning_point"]
    u0 = {(s, m): set(units["subsets"][s]["U0"][definition][m]) for s in SUBSETS for m in METRICS}
    return InfluenceInputs(layer, weight, bias, {s: loaded[s][0] for s in SUBSETS},
                           {s: loaded[s][1] for s in SUBSETS}, loaded["test"][2], u0, roles)


def run_influential_filters(inputs: InfluenceInputs, config: InfluenceParams,
                            source: str = "params.yaml") -> InfluenceResult:
    weight, bias, u0, roles = inputs.weight, inputs.bias, inputs.u0, inputs.roles
    n_classes, n_units = weight.shape
    too_large = [k for k in config.k + [config.k_image] if k != "same" and k > n_units]
    if too_large:
        raise PipelineError(f"{source}: 'influence.k' or 'influence.k_image' is {too_large[0]} but "
                            f"{inputs.layer} has only {n_units} units")
    test_f, test_y = inputs.features["test"], inputs.labels["test"]
    full = influence.decomposed_logits(test_f, weight, bias, torch.ones(n_classes, n_units, dtype=torch.bool))
    metrics = {"layer": inputs.layer, "n_units": n_units,
               "accuracy_model": influence.accuracy(inputs.test_logits, test_y),
               "accuracy_full": influence.accuracy(full, test_y), "by_k": {}}
    results = influence.sweep(inputs.features["train"], inputs.labels["train"], test_f, test_y, weight, bias,
                              config.k, config.k_image, config.noise_seed)
    full_predictions = full.argmax(dim=1)
    by_k, by_class, all_sets = [], [], {}
    for k, r in results.items():
        n_test = len(test_y)
        row = {"k": k, "k_image": r["k_image"], "accuracy_full": metrics["accuracy_full"],
               "accuracy_decomposed": float((r["decomposed"] == test_y).double().mean()),
               "kept_set_noised": sum(kept for _, kept in r["kept"]["set"]) / n_test,
               "kept_others_noised": sum(kept for _, kept in r["kept"]["others"]) / n_test,
               "mi_distinct": r["mi_distinct"], "mi_with_self": r["mi_with_self"],
               "units_in_some_set": r["units_in_some_set"]}
        for subset in SUBSETS:       # the share of set members that ROF counts as highly active
            row[f"in_u0_{subset}_acc"] = sum(len(u0[(subset, "acc")] & set(s.tolist())) for s in r["sets"]) \
                / (n_classes * k)
        by_k.append(row)
        metrics["by_k"][str(k)] = {key: value for key, value in row.items() if key not in ("k", "accuracy_full")}
        all_sets[str(k)] = {str(c): {"units": r["sets"][c].tolist(), "frequency": r["counts"][c][r["sets"][c]].tolist()}
                            for c in range(n_classes)}
        for c in range(n_classes):
            members, of_class = r["sets"][c].tolist(), test_y == c
            by_class.append({
                "k": k, "class": c, "n_test": r["kept"]["set"][c][0],
                "correct_full": int((full_predictions[of_class] == c).sum()),
                "correct_decomposed": int((r["decomposed"][of_class] == c).sum()),
                "kept_set_noised": r["kept"]["set"][c][1], "kept_others_noised": r["kept"]["others"][c][1],
                **{f"in_u0_{subset}_{metric}": len(u0[(subset, metric)] & set(members))
                   for subset in SUBSETS for metric in METRICS},
                "units": ";".join(map(str, members)),
                "roles_acc": ";".join(roles["category_acc"][u] for u in members)})
    influential_for = {u: [] for u in range(n_units)}
    for c, entry in all_sets[str(config.table_k)].items():
        for u in entry["units"]:
            influential_for[u].append(c)
    units = [{"unit": u, "rank_train": roles["rank_train"][u], "rank_test": roles["rank_test"][u],
              "category_acc": roles["category_acc"][u], "category_loss": roles["category_loss"][u],
              f"influential_for_k{config.table_k}": ";".join(influential_for[u])} for u in range(n_units)]
    return InfluenceResult({"layer": inputs.layer, "k_image": config.k_image, "sets": all_sets}, by_k, by_class,
                           units, metrics)


def write_influential_filters(result: InfluenceResult, paths: dict[str, Path]) -> None:
    write_json(result.sets, paths["influence_sets"])
    write_csv(result.by_k, paths["influence_by_k"])
    write_csv(result.by_class, paths["influence_by_class"])
    write_csv(result.units, paths["influence_units"])
    write_json(result.metrics, paths["influence_metrics"])
