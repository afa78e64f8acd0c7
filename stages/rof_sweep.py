"""Stage rof_sweep: ROF curves, turning points and the role taxonomy, on the training and the
test subset separately.

Reads params `rof`, artifacts/train/model.pt (the fc layer) and artifacts/features/*.pt;
writes artifacts/rof/curve_{train,test}.csv (accuracy and loss per n_units for every
ranking), artifacts/rof/units.json (ranked units and the U0 sets), artifacts/rof/unit_roles.csv
(per-unit table), artifacts/rof/category_counts.csv and artifacts/metrics/rof.json.
"""
from pathlib import Path

import torch

from stages.common import (CHECKPOINT_KEYS, PipelineError, file_sha256, load_checked, load_params,
                           remove_stale_temps, run_stage, write_csv, write_json)
from stages.rof import (CATEGORIES, RANKINGS, area_under_curve, categorize, category_counts,
                        highly_active, is_degenerate, retrieval_curves, turning_points, unit_l1_norms,
                        unit_order)

CHECKPOINT = Path("artifacts/train/model.pt")
FEATURES = {name: Path(f"artifacts/features/{name}.pt") for name in ("train", "test")}
OUT_DIR = Path("artifacts/rof")
METRICS = Path("artifacts/metrics/rof.json")
SUBSETS = ("train", "test")
DEFINITIONS = ("exact", "tolerance")
METRIC_NAMES = ("acc", "loss")

FEATURE_KEYS = {
    "features": lambda v: isinstance(v, torch.Tensor) and v.dim() == 2 and v.is_floating_point(),
    "logits": lambda v: isinstance(v, torch.Tensor) and v.dim() == 2,
    "labels": lambda v: isinstance(v, torch.Tensor) and v.dim() == 1 and v.dtype == torch.int64,
    "checkpoint_sha256": lambda v: isinstance(v, str),
}


def load_inputs():
    """(fc weight, fc bias, {subset: features dict}), checked against each other."""
    checkpoint = load_checked(CHECKPOINT, CHECKPOINT_KEYS, "model checkpoint")
    sha256 = file_sha256(CHECKPOINT)
    weight, bias = checkpoint["state_dict"]["fc.weight"], checkpoint["state_dict"]["fc.bias"]
    subsets = {}
    for name, path in FEATURES.items():
        data = load_checked(path, FEATURE_KEYS, "features file")
        n, n_units = data["features"].shape
        if data["checkpoint_sha256"] != sha256:
            raise PipelineError(f"{path}: extracted from a different checkpoint than {CHECKPOINT}; "
                                f"rerun `dvc repro extract_features`")
        if n_units != weight.shape[1] or len(data["labels"]) != n or data["logits"].shape != (n, weight.shape[0]):
            raise PipelineError(f"{path}: shapes do not match {CHECKPOINT} (features {tuple(data['features'].shape)}, "
                                f"fc {tuple(weight.shape)}); rerun `dvc repro extract_features`")
        subsets[name] = data
    return weight, bias, subsets


def sweep_subset(data, weight, bias, seed):
    """Every ranking's order and curves on one subset, checked against the model's own accuracy."""
    features, labels = data["features"], data["labels"]
    model_accuracy = float((data["logits"].argmax(1) == labels).double().mean())
    result = {}
    for ranking in RANKINGS:
        order = unit_order(features, ranking, seed)
        accuracy, loss = retrieval_curves(features, labels, weight, bias, order)
        if float(accuracy[-1]) != model_accuracy:
            raise PipelineError(f"ROF with all {len(order)} units gives accuracy {float(accuracy[-1]):.6f} but the "
                                f"model's own is {model_accuracy:.6f}; features and fc disagree")
        result[ranking] = {"order": order, "accuracy": accuracy, "loss": loss}
    return result


def build_taxonomy(curves, ranking, acc_tolerance, loss_tolerance):
    """Turning points per subset and the categories per definition and metric."""
    points = {name: turning_points(curves[name][ranking]["accuracy"], curves[name][ranking]["loss"],
                                   acc_tolerance, loss_tolerance) for name in SUBSETS}
    n_units = len(curves["train"][ranking]["order"])
    categories, u0 = {}, {}
    for definition in DEFINITIONS:
        for metric in METRIC_NAMES:
            masks = {name: highly_active(curves[name][ranking]["order"], points[name][definition][metric])
                     for name in SUBSETS}
            u0[(definition, metric)] = masks
            categories[(definition, metric)] = categorize(masks["train"], masks["test"])
    degenerate = {key: any(is_degenerate(points[name][key[0]][key[1]], n_units) for name in SUBSETS)
                  for key in categories}
    return points, categories, u0, degenerate


def main():
    params = load_params("rof")
    outputs = [OUT_DIR / "curve_train.csv", OUT_DIR / "curve_test.csv", OUT_DIR / "units.json",
               OUT_DIR / "unit_roles.csv", OUT_DIR / "category_counts.csv", METRICS]
    remove_stale_temps(*outputs)
    weight, bias, subsets = load_inputs()
    ranking = params["ranking"]
    curves = {name: sweep_subset(subsets[name], weight, bias, params["seed"]) for name in SUBSETS}
    points, categories, u0, degenerate = build_taxonomy(curves, ranking, params["acc_tolerance"],
                                                        params["loss_tolerance"])

    for name in SUBSETS:
        c = curves[name]
        rows = []
        for n in range(len(c[ranking]["accuracy"])):
            row = {"n_units": n, "accuracy": float(c[ranking]["accuracy"][n]), "loss": float(c[ranking]["loss"][n])}
            for r in RANKINGS:
                row[f"accuracy_{r}"] = float(c[r]["accuracy"][n])
                row[f"loss_{r}"] = float(c[r]["loss"][n])
            rows.append(row)
        write_csv(rows, OUT_DIR / f"curve_{name}.csv")

    chosen = params["turning_point"]
    l1 = {name: unit_l1_norms(subsets[name]["features"]) for name in SUBSETS}
    rank = {}
    for name in SUBSETS:
        rank[name] = torch.empty_like(curves[name][ranking]["order"])
        rank[name][curves[name][ranking]["order"]] = torch.arange(len(rank[name]))
    write_csv([{"unit": u, "l1_train": float(l1["train"][u]), "l1_test": float(l1["test"][u]),
                "rank_train": int(rank["train"][u]) + 1, "rank_test": int(rank["test"][u]) + 1,
                "category_acc": categories[(chosen, "acc")][u], "category_loss": categories[(chosen, "loss")][u]}
               for u in range(len(l1["train"]))], OUT_DIR / "unit_roles.csv")
    counts = {key: category_counts(cats) for key, cats in categories.items()}
    write_csv([{"category": cat, "acc": counts[(chosen, "acc")][cat], "loss": counts[(chosen, "loss")][cat]}
               for cat in CATEGORIES], OUT_DIR / "category_counts.csv")

    units = {"ranking": ranking, "turning_point": chosen, "subsets": {}}
    for name in SUBSETS:
        units["subsets"][name] = {
            "order": curves[name][ranking]["order"].tolist(),
            "n0": points[name],
            "U0": {d: {m: torch.nonzero(u0[(d, m)][name]).flatten().tolist() for m in METRIC_NAMES}
                   for d in DEFINITIONS},
        }
    write_json(units, OUT_DIR / "units.json")

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
    metrics["taxonomy"] = {d: {m: {**counts[(d, m)], "degenerate": degenerate[(d, m)]} for m in METRIC_NAMES}
                           for d in DEFINITIONS}
    write_json(metrics, METRICS)
    for name in SUBSETS:
        m = metrics[name]
        print(f"{name}: n0_acc {m['n0_acc']} (tolerance {m['n0_acc_tol']}), n0_loss {m['n0_loss']} "
              f"(tolerance {m['n0_loss_tol']}), accuracy with all units {m['full_accuracy']:.4f}")
    for metric in METRIC_NAMES:
        print(f"categories by {metric} ({chosen}): " + ", ".join(
            f"{cat} {counts[(chosen, metric)][cat]}" for cat in CATEGORIES))


if __name__ == "__main__":
    run_stage(main)
