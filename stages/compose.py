"""Stage compose: compositional explanations: for every unit of compose.layers, the logical formula
over the probe set's concepts whose mask best matches the unit's, by beam search, with its score,
length and the best single concept beside it.

A unit's mask is network dissection's: its activation map above the threshold dissect found
(the dissect.quantile of its activations). Reads params `compose` and dissect's batch_size,
device, precision and threads (the activations are dissect's, recomputed), artifacts/train/model.pt,
data/probe/probe.pt and artifacts/dissect/tallies.pt; writes artifacts/compose/formulas.csv,
artifacts/compose/top_masks.pt (each formula's mask on its unit's top images, for the report),
artifacts/metrics/compose.json and artifacts/plots/compose_lengths.png.
"""
import numpy as np
import torch

from netunits.data.probe import load_probe, pack_masks
from netunits.errors import PipelineError
from netunits.files import file_sha256, load_checked, remove_stale_temps, save_torch, write_csv, write_json
from netunits.methods.compose import Primitives, concept_masks, formula_mask_on, search_units, to_string, unit_positions
from netunits.models.registry import load_checkpoint
from netunits.plots import close, formula_length_figure, save_figure
from netunits.runtime import progress, resolve_compute, run_stage, stage_args, stage_config


def main(argv=None):
    args = stage_args(__doc__.splitlines()[0], argv)
    config = stage_config(args, "compose", "compute")
    params, source = config.compose.model_dump(), config.source
    run_dir = args.run_dir
    table_path, metrics_path = run_dir / "artifacts/compose/formulas.csv", run_dir / "artifacts/metrics/compose.json"
    figure_path = run_dir / "artifacts/plots/compose_lengths.png"
    masks_path = run_dir / "artifacts/compose/top_masks.pt"
    remove_stale_temps(table_path, metrics_path, figure_path, masks_path)
    tallies = load_checked(run_dir / "artifacts/dissect/tallies.pt", {"per_layer": lambda v: isinstance(v, dict)},
                           "dissection tallies")
    for layer in params["layers"]:
        if layer not in tallies["per_layer"]:
            raise PipelineError(f"{source}: 'compose.layers' has {layer!r}, which was not dissected; dissected "
                                f"layers (dissect.layers): {', '.join(tallies['per_layer'])}")
    if tallies.get("checkpoint_sha256") != file_sha256(run_dir / "artifacts/train/model.pt"):
        raise PipelineError("artifacts/dissect/tallies.pt: made from another checkpoint than artifacts/train/model.pt; "
                            "rerun `dvc repro dissect`")
    runtime = resolve_compute(config.compute, analysis=True, source=source)
    device = runtime.device
    run = dict(batch_size=params["batch_size"], device=device, input_spec=None, key="compose.layers",
               precision=runtime.precision)
    model, checkpoint = load_checkpoint(run_dir / "artifacts/train/model.pt")
    model.to(device, memory_format=torch.channels_last)
    run["input_spec"] = checkpoint["input"]
    probe = load_probe(run_dir / "data/probe/probe.pt")
    search = {k: params[k] for k in ("connectors", "beam", "max_length", "candidates", "score")}
    search.update(r=params["imrou_r"], penalty=params["length_penalty"])

    rows, metrics = [], {"resolution": params["resolution"], "score": params["score"],
                         "connectors": params["connectors"], "expand": params["expand"], "layers": {}}
    scores_by_length, gains, top_masks = {}, {}, {}
    for layer in params["layers"]:
        per_layer = tallies["per_layer"][layer]
        thresholds = per_layer["thresholds"]
        grid = per_layer["top_maps"].shape[-1]                       # the layer's own cells per side
        size = probe["mask_size"] if params["resolution"] == "mask" else grid
        primitives = Primitives(concept_masks(probe, params["resolution"], size, params["downsample_min"]), grid,
                                params["connectors"], params["expand"])
        positions = unit_positions(model, probe, layer, thresholds, size, primitives.words, run)
        found = search_units(primitives, positions, progress=lambda items, desc: progress(items, f"{layer} {desc}"),
                             **search)
        explained = [r for r in found if r["formula"] is not None]
        # where each formula holds on its unit's top-activating images (dissect's), for the report
        top_images = per_layer["top_images"]
        masks = torch.zeros(len(found), top_images.shape[1], size, size, dtype=torch.bool)
        for unit, result in enumerate(found):
            if result["formula"] is not None:
                masks[unit] = formula_mask_on(probe, top_images[unit], result["formula"], params["resolution"], size,
                                              params["downsample_min"], grid)
        top_masks[layer] = {"top_images": top_images, "size": size, "masks": pack_masks(masks.numpy())}
        for unit, result in enumerate(found):
            rows.append({"layer": layer, "unit": unit,
                         "formula": "" if result["formula"] is None else to_string(result["formula"]),
                         "length": result["length"], "score": result["score"], "iou": result["iou"],
                         "single": result["single"] or "", "single_score": result["single_score"],
                         "single_iou": result["single_iou"], "iou_gain": result["iou"] - result["single_iou"]})
        by_length = {n: [r["best_by_length"][n] for r in explained if n in r["best_by_length"]]
                     for n in range(1, params["max_length"] + 1)}
        scores_by_length[layer] = {n: v for n, v in by_length.items() if v}
        gains[layer] = [r["iou"] - r["single_iou"] for r in explained]
        lengths = [r["length"] for r in explained]
        metrics["layers"][layer] = {
            "units": len(found), "units_with_mask": len(explained),
            "mean_score_by_length": {str(n): float(np.mean(v)) for n, v in scores_by_length[layer].items()},
            "mean_score": float(np.mean([r["score"] for r in explained])) if explained else None,
            "mean_iou": float(np.mean([r["iou"] for r in explained])) if explained else None,
            "mean_single_iou": float(np.mean([r["single_iou"] for r in explained])) if explained else None,
            "share_gain_at_least_min_gain": (float(np.mean([g >= params["min_gain"] - 1e-12 for g in gains[layer]]))
                                             if explained else None),
            "formulas_by_length": {str(n): lengths.count(n) for n in range(1, params["max_length"] + 1)},
            "unique_formulas": len({r["formula"] for r in rows if r["layer"] == layer and r["formula"]})}

    # every check is done: now the outputs
    write_csv(rows, table_path)
    save_torch({"checkpoint_sha256": tallies["checkpoint_sha256"], "per_layer": top_masks}, masks_path)
    write_json(metrics, metrics_path)
    figure = formula_length_figure(scores_by_length, gains, params["min_gain"])
    save_figure(figure, figure_path, 110)
    close(figure)
    for layer, m in metrics["layers"].items():
        print(f"{layer}: mean score by length {m['mean_score_by_length']}; "
              f"{m['share_gain_at_least_min_gain']} of units gain at least {params['min_gain']} IoU over one concept")


if __name__ == "__main__":
    run_stage(main)
