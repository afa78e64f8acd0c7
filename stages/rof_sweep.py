"""Stage rof_sweep: ROF curves, turning points and the role taxonomy of the units of rof.layer
(default avgpool: ResNet's pooled features, which the final layer reads), on the training and
the test subset separately.

Reads params `rof`, artifacts/train/model.pt (its final layer) and artifacts/features/*.pt;
writes artifacts/rof/curve_{train,test}.csv (accuracy and loss per n_units for every
ranking), artifacts/rof/units.json (ranked units and the U0 sets), artifacts/rof/unit_roles.csv
(per-unit table), artifacts/rof/category_counts.csv and artifacts/metrics/rof.json.
"""
import torch

from netunits.errors import PipelineError
from netunits.files import load_checked, remove_stale_temps, write_csv, write_json
from netunits.methods.rof import (CATEGORIES, DEFINITIONS, METRIC_NAMES, RANKINGS, SUBSETS, area_under_curve,
                                  build_taxonomy, category_counts, sweep_subset, unit_l1_norms)
from netunits.models.checkpoint import load_checkpoint_file
from netunits.models.registry import get_architecture
from netunits.runtime import run_stage, stage_args, stage_config
from netunits.stage_table import stage_paths

FEATURE_KEYS = {
    "features": lambda v: isinstance(v, dict) and all(isinstance(t, torch.Tensor) and t.dim() == 2
                                                      and t.is_floating_point() for t in v.values()),
    "logits": lambda v: isinstance(v, torch.Tensor) and v.dim() == 2,
    "labels": lambda v: isinstance(v, torch.Tensor) and v.dim() == 1 and v.dtype == torch.int64,
    "checkpoint_sha256": lambda v: isinstance(v, str),
}


def load_inputs(paths):
    """(fc weight, fc bias, {subset: features dict with the pooled layer's features under 'units'})."""
    checkpoint_path = paths["model"]
    checkpoint = load_checkpoint_file(checkpoint_path)
    layer = get_architecture(checkpoint["arch"]).pooled_layer
    weight, bias = checkpoint["state_dict"]["fc.weight"], checkpoint["state_dict"]["fc.bias"]
    subsets = {}
    for name in SUBSETS:
        path = paths[f"{name}_features"]
        data = load_checked(path, FEATURE_KEYS, "features file")
        if data["checkpoint_sha256"] != checkpoint["sha256"]:
            raise PipelineError(f"{path}: extracted from a different checkpoint than {checkpoint_path}; "
                                f"rerun `dvc repro extract_features`")
        if layer not in data["features"] or data["features"][layer].shape[1] != weight.shape[1]:
            raise PipelineError(f"{path}: holds no features of {layer} with the {weight.shape[1]} units the final "
                                f"layer reads; rerun `dvc repro extract_features`")
        units = data["features"][layer]
        n = len(units)
        if len(data["labels"]) != n or data["logits"].shape != (n, weight.shape[0]):
            raise PipelineError(f"{path}: shapes do not match {checkpoint_path} (features {tuple(units.shape)}, "
                                f"fc {tuple(weight.shape)}); rerun `dvc repro extract_features`")
        subsets[name] = {**data, "units": units}
    return weight, bias, subsets


def main(argv=None):
    args = stage_args(__doc__.splitlines()[0], argv)
    params = stage_config(args, "rof").rof
    paths = stage_paths("rof_sweep", args.run_dir)
    metrics_path = paths["rof_metrics"]
    remove_stale_temps(*(paths[name] for name in ("rof_curve_train", "rof_curve_test", "rof_units", "rof_roles",
                                                  "rof_counts", "rof_metrics")))
    weight, bias, subsets = load_inputs(paths)
    ranking = params.ranking
    curves = {name: sweep_subset(s["units"], s["labels"], s["logits"], weight, bias, params.seed)
              for name, s in subsets.items()}
    points, categories, u0, degenerate = build_taxonomy(curves, ranking, params.acc_tolerance,
                                                        params.loss_tolerance)

    for name in SUBSETS:
        c = curves[name]
        rows = []
        for n in range(len(c[ranking]["accuracy"])):
            row = {"n_units": n, "accuracy": float(c[ranking]["accuracy"][n]), "loss": float(c[ranking]["loss"][n])}
            for r in RANKINGS:
                row[f"accuracy_{r}"] = float(c[r]["accuracy"][n])
                row[f"loss_{r}"] = float(c[r]["loss"][n])
            rows.append(row)
        write_csv(rows, paths[f"rof_curve_{name}"])

    chosen = params.turning_point
    l1 = {name: unit_l1_norms(subsets[name]["units"]) for name in SUBSETS}
    rank = {}
    for name in SUBSETS:
        rank[name] = torch.empty_like(curves[name][ranking]["order"])
        rank[name][curves[name][ranking]["order"]] = torch.arange(len(rank[name]))
    write_csv([{"unit": u, "l1_train": float(l1["train"][u]), "l1_test": float(l1["test"][u]),
                "rank_train": int(rank["train"][u]) + 1, "rank_test": int(rank["test"][u]) + 1,
                "category_acc": categories[(chosen, "acc")][u], "category_loss": categories[(chosen, "loss")][u]}
               for u in range(len(l1["train"]))], paths["rof_roles"])
    counts = {key: category_counts(cats) for key, cats in categories.items()}
    write_csv([{"category": cat, "acc": counts[(chosen, "acc")][cat], "loss": counts[(chosen, "loss")][cat]}
               for cat in CATEGORIES], paths["rof_counts"])

    units = {"ranking": ranking, "turning_point": chosen, "subsets": {}}
    for name in SUBSETS:
        units["subsets"][name] = {
            "order": curves[name][ranking]["order"].tolist(),
            "n0": points[name],
            "U0": {d: {m: torch.nonzero(u0[(d, m)][name]).flatten().tolist() for m in METRIC_NAMES}
                   for d in DEFINITIONS},
        }
    write_json(units, paths["rof_units"])

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
    write_json(metrics, metrics_path)
    for name in SUBSETS:
        m = metrics[name]
        print(f"{name}: n0_acc {m['n0_acc']} (tolerance {m['n0_acc_tol']}), n0_loss {m['n0_loss']} "
              f"(tolerance {m['n0_loss_tol']}), accuracy with all units {m['full_accuracy']:.4f}")
    for metric in METRIC_NAMES:
        print(f"categories by {metric} ({chosen}): " + ", ".join(
            f"{cat} {counts[(chosen, metric)][cat]}" for cat in CATEGORIES))


if __name__ == "__main__":
    run_stage(main)
