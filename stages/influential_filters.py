"""Stage influential_filters: per class, the few units of influence.layer that carry it
("Decomposing the Deep"): class sets from L1-normalised frequency histograms over the training
subset, the final layer rebuilt from them alone, their essentiality under noise, the classes'
overlap by mutual information, and their place in ROF's roles.

Reads params `influence`, artifacts/train/model.pt (its final layer), artifacts/features/*.pt
and artifacts/rof/{units.json,unit_roles.csv}; writes artifacts/influence/sets.json (every k's
class sets), by_k.csv (one row per k), by_class.csv (one row per k and class), units.csv (the
per-unit role table with the classes each unit is influential for at influence.table_k) and
artifacts/metrics/influence.json.
"""
import torch

from netunits.errors import PipelineError
from netunits.files import load_checked, read_csv, read_json, remove_stale_temps, write_csv, write_json
from netunits.methods import influence
from netunits.models.checkpoint import load_checkpoint_file
from netunits.models.registry import get_architecture
from netunits.runtime import run_stage, stage_args, stage_config
from netunits.stage_table import stage_paths

FEATURE_KEYS = {"features": lambda v: isinstance(v, dict), "labels": lambda v: isinstance(v, torch.Tensor),
                "logits": lambda v: isinstance(v, torch.Tensor), "checkpoint_sha256": lambda v: isinstance(v, str)}


def load_subset(path, layer, checkpoint, n_units):
    data = load_checked(path, FEATURE_KEYS, "features file")
    if data["checkpoint_sha256"] != checkpoint["sha256"]:
        raise PipelineError(f"{path}: extracted from a different checkpoint; rerun `dvc repro extract_features`")
    if layer not in data["features"] or data["features"][layer].shape[1] != n_units:
        raise PipelineError(f"{path}: holds no features of {layer} with the {n_units} units the final layer reads; "
                            f"rerun `dvc repro extract_features`")
    features = data["features"][layer]
    if data["logits"].shape[1] != checkpoint["n_classes"] or int(data["labels"].max()) >= checkpoint["n_classes"]:
        raise PipelineError(f"{path}: labels or logits do not fit the checkpoint's {checkpoint['n_classes']} classes; "
                            f"rerun `dvc repro`")
    return features, data["labels"], data["logits"]


def main(argv=None):
    args = stage_args(__doc__.splitlines()[0], argv)
    config = stage_config(args, "influence")
    params, source = config.influence, config.source
    paths = stage_paths("influential_filters", args.run_dir)
    metrics_path = paths["influence_metrics"]
    remove_stale_temps(*(paths[name] for name in ("influence_sets", "influence_by_k", "influence_by_class",
                                                  "influence_units", "influence_metrics")))
    checkpoint = load_checkpoint_file(paths["model"])
    layer = get_architecture(checkpoint["arch"]).pooled_layer
    weight, bias = checkpoint["state_dict"]["fc.weight"], checkpoint["state_dict"]["fc.bias"]
    n_classes, n_units = weight.shape
    if n_classes != checkpoint["n_classes"] or n_classes < 2:
        raise PipelineError(f"{paths['model']}: records {checkpoint['n_classes']} classes but its "
                            f"final layer has {n_classes}; rebuild it with `dvc repro -f train`")
    too_large = [k for k in params.k + [params.k_image] if k != "same" and k > n_units]
    if too_large:
        raise PipelineError(f"{source}: 'influence.k' or 'influence.k_image' is {too_large[0]} but "
                            f"{layer} has only {n_units} units")
    train_f, train_y, _ = load_subset(paths["train_features"], layer, checkpoint, n_units)
    test_f, test_y, test_logits = load_subset(paths["test_features"], layer, checkpoint, n_units)
    units = read_json(paths["rof_units"])
    roles = read_csv(paths["rof_roles"], numeric=False)
    if len(roles["unit"]) != n_units:
        raise PipelineError(f"{paths['rof_roles']}: {len(roles['unit'])} units, the final layer "
                            f"reads {n_units}; rerun `dvc repro rof_sweep`")
    definition = units["turning_point"]
    u0 = {(subset, metric): set(units["subsets"][subset]["U0"][definition][metric])
          for subset in ("train", "test") for metric in ("acc", "loss")}

    full = influence.decomposed_logits(test_f, weight, bias, torch.ones(n_classes, n_units, dtype=torch.bool))
    metrics = {"layer": layer, "n_units": n_units, "accuracy_model": influence.accuracy(test_logits, test_y),
               "accuracy_full": influence.accuracy(full, test_y), "by_k": {}}
    results = influence.sweep(train_f, train_y, test_f, test_y, weight, bias, params.k, params.k_image,
                              params.noise_seed)
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
        for subset in ("train", "test"):       # the share of set members that ROF counts as highly active
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
                   for subset in ("train", "test") for metric in ("acc", "loss")},
                "units": ";".join(map(str, members)),
                "roles_acc": ";".join(roles["category_acc"][u] for u in members)})
    influential_for = {u: [] for u in range(n_units)}
    for c, entry in all_sets[str(params.table_k)].items():
        for u in entry["units"]:
            influential_for[u].append(c)
    write_json({"layer": layer, "k_image": params.k_image, "sets": all_sets}, paths["influence_sets"])
    write_csv(by_k, paths["influence_by_k"])
    write_csv(by_class, paths["influence_by_class"])
    write_csv([{"unit": u, "rank_train": roles["rank_train"][u], "rank_test": roles["rank_test"][u],
                "category_acc": roles["category_acc"][u], "category_loss": roles["category_loss"][u],
                f"influential_for_k{params.table_k}": ";".join(influential_for[u])} for u in range(n_units)],
              paths["influence_units"])
    write_json(metrics, metrics_path)
    print(f"{layer}: accuracy {metrics['accuracy_full']:.4f} with the full final layer; decomposed: "
          + ", ".join(f"k={r['k']} {r['accuracy_decomposed']:.4f}" for r in by_k))


if __name__ == "__main__":
    run_stage(main)
