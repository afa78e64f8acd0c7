"""Stage dissect_report: network dissection's answers from the tallies: per unit its best concepts
and IoU, detectors (best IoU at or above dissect.iou_threshold), unique concepts per layer, the
units of the block that feeds the final layer (ROF's units) joined with ROF's roles, and the figures.

Reads params dissect.iou_threshold, artifacts/train/model.pt (its architecture), artifacts/dissect/tallies.pt,
data/probe/probe.pt (for the image strips) and artifacts/rof/unit_roles.csv; writes
artifacts/dissect/layers/<layer>.csv per layer, artifacts/dissect/unit_roles.csv (ROF's table with the
concept and IoU), artifacts/metrics/dissect.json, artifacts/plots/dissect_concepts.png and
artifacts/plots/dissect_strips.png.
"""

from netunits.data.probe import load_probe
from netunits.errors import PipelineError
from netunits.files import load_checked, read_csv, remove_stale_temps, write_csv, write_json
from netunits.methods.dissection import best_concepts, iou_from_counts, unit_masks
from netunits.methods.rof import CATEGORIES
from netunits.plots import close, concepts_per_layer_figure, save_figure, strips_figure
from netunits.models.checkpoint import load_checkpoint_file
from netunits.models.registry import get_architecture
from netunits.runtime import run_stage, stage_args, stage_config

STRIP_UNITS = 8


def picture(image):
    """uint8 C x S x S -> S x S (grey) or S x S x 3 for imshow."""
    return image[0].numpy() if image.shape[0] == 1 else image.permute(1, 2, 0).numpy()


def main(argv=None):
    args = stage_args(__doc__.splitlines()[0], argv)
    config = stage_config(args, "dissect")
    run, threshold = args.run_dir, config.dissect.iou_threshold
    # the block whose channels are ROF's units (the final layer reads their pooled values)
    arch = load_checkpoint_file(run / "artifacts/train/model.pt")["arch"]
    params = {"rof_layer": get_architecture(arch).last_block}
    out_dir = run / "artifacts/dissect"
    metrics_path = run / "artifacts/metrics/dissect.json"
    figures = run / "artifacts/plots/dissect_concepts.png", run / "artifacts/plots/dissect_strips.png"
    tallies = load_checked(run / "artifacts/dissect/tallies.pt", {"per_layer": lambda v: isinstance(v, dict),
                                                                  "concepts": lambda v: isinstance(v, list)},
                           "dissection tallies")
    layer_outputs = [out_dir / "layers" / f"{name}.csv" for name in tallies["per_layer"]]
    remove_stale_temps(*layer_outputs, out_dir / "unit_roles.csv", metrics_path, *figures)
    if params["rof_layer"] not in tallies["per_layer"]:
        raise PipelineError(f"{config.source}: 'dissect.layers' is {list(tallies['per_layer'])!r}; it must include "
                            f"{params['rof_layer']}, the block of {arch} whose channels are ROF's units")
    roles = read_csv(run / "artifacts/rof/unit_roles.csv", numeric=False)
    n_rof_units = len(tallies["per_layer"][params["rof_layer"]]["thresholds"])
    if len(roles["unit"]) != n_rof_units:
        raise PipelineError(f"{run / 'artifacts/rof/unit_roles.csv'}: {len(roles['unit'])} units, but "
                            f"{params['rof_layer']} has {n_rof_units}; rerun `dvc repro rof_sweep`")
    names = [c["name"] for c in tallies["concepts"]]
    category = [c["category"] for c in tallies["concepts"]]
    tables, metrics, per_concept = {}, {"iou_threshold": threshold, "layers": {}}, {}
    for layer, t in tallies["per_layer"].items():
        iou = iou_from_counts(t["intersection"], t["unit_area"], t["concept_area"], t["category"])
        values, indices = best_concepts(iou, 3)
        rows = []
        for unit in range(len(iou)):
            row = {"unit": unit, "concept": names[indices[unit, 0]], "category": category[indices[unit, 0]],
                   "iou": float(values[unit, 0]), "threshold": float(t["thresholds"][unit]),
                   "detector": int(values[unit, 0] >= threshold)}
            for rank in (1, 2):
                row[f"concept_{rank + 1}"] = names[indices[unit, rank]]
                row[f"iou_{rank + 1}"] = float(values[unit, rank])
            rows.append(row)
        tables[layer] = rows
        detected = [r["concept"] for r in rows if r["detector"]]
        per_concept[layer] = {c: detected.count(c) for c in dict.fromkeys(detected)}
        metrics["layers"][layer] = {"units": len(rows), "detectors": len(detected),
                                    "unique_concepts": len(set(detected)),
                                    "mean_best_iou": sum(r["iou"] for r in rows) / len(rows)}
    all_rows = [r for rows in tables.values() for r in rows]
    metrics["overall"] = {"units": len(all_rows), "detectors": sum(r["detector"] for r in all_rows),
                          "unique_concepts": len({r["concept"] for r in all_rows if r["detector"]}),
                          "mean_best_iou": sum(r["iou"] for r in all_rows) / len(all_rows)}

    # every check is done: now the outputs
    for layer, rows in tables.items():
        write_csv(rows, out_dir / "layers" / f"{layer}.csv")
    # joined with ROF: the role table gains the ROF layer's concepts
    rof_rows = tables[params["rof_layer"]]
    joined = [{**{key: values[u] for key, values in roles.items()}, "concept": rof_rows[u]["concept"],
               "iou": rof_rows[u]["iou"], "detector": rof_rows[u]["detector"]} for u in range(len(rof_rows))]
    write_csv(joined, out_dir / "unit_roles.csv")
    metrics["by_role"] = {}
    for role in CATEGORIES:
        members = [r for r in joined if r["category_acc"] == role]
        metrics["by_role"][role] = {
            "units": len(members),
            "detector_share": sum(r["detector"] for r in members) / len(members) if members else None,
            "mean_best_iou": sum(r["iou"] for r in members) / len(members) if members else None}
    write_json(metrics, metrics_path)

    figure = concepts_per_layer_figure(per_concept)
    save_figure(figure, figures[0], 110)
    close(figure)
    probe = load_probe(run / "data/probe/probe.pt")
    layer, t = params["rof_layer"], tallies["per_layer"][params["rof_layer"]]
    strongest = sorted(range(len(rof_rows)), key=lambda u: -rof_rows[u]["iou"])[:STRIP_UNITS]
    strip_rows = []
    for unit in strongest:
        maps = t["top_maps"][unit][:, None]                                        # k x 1 x h x w
        masks = unit_masks(maps.transpose(0, 1), t["thresholds"][unit:unit + 1], tallies["mask_size"])[0]
        pictures = [(picture(probe["images"][int(i)]), masks[j].view(tallies["mask_size"], -1).numpy())
                    for j, i in enumerate(t["top_images"][unit])]
        strip_rows.append((f"{layer} unit {unit}\n{rof_rows[unit]['concept']}\nIoU {rof_rows[unit]['iou']:.2f}",
                           pictures))
    figure = strips_figure(strip_rows)
    save_figure(figure, figures[1], 110)
    close(figure)
    for name, m in metrics["layers"].items():
        print(f"{name}: {m['detectors']} of {m['units']} units are detectors, {m['unique_concepts']} unique "
              f"concepts, mean best IoU {m['mean_best_iou']:.4f}")


if __name__ == "__main__":
    run_stage(main)
