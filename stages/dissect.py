"""Stage dissect: the activation passes of network dissection over the probe set, for every layer
of dissect.layers: each unit's threshold (the dissect.quantile of its activations) in a first
pass, the IoU counts against every concept, each unit's activation histogram and its
top-activating images in a second.

Reads params `dissect` (but iou_threshold, which only dissect_report reads) and `compute`,
artifacts/train/model.pt and data/probe/probe.pt; writes artifacts/dissect/tallies.pt: per
layer the thresholds, intersections, areas and each unit's top images with their raw maps.
"""
import torch

from netunits.activations import iterate_activations
from netunits.data.probe import load_probe, unpack_masks
from netunits.errors import PipelineError
from netunits.files import remove_stale_temps, save_torch
from netunits.methods.dissection import (IoUTally, TopValues, add_histogram, dissect_batch_chunks,
                                         quantile_from_top, unit_masks, values_needed)
from netunits.models.registry import load_checkpoint
from netunits.runtime import resolve_compute, run_stage, stage_args, stage_config


HISTOGRAM_BINS = 40    # each unit's activations over the probe set, from 0 to its largest, for the report


def main(argv=None):
    args = stage_args(__doc__.splitlines()[0], argv)
    config = stage_config(args, "dissect", "compute")
    params, source = config.dissect.model_dump(), config.source
    out = args.run_dir / "artifacts/dissect/tallies.pt"
    remove_stale_temps(out)
    runtime = resolve_compute(config.compute, analysis=True, source=source)
    device, precision = runtime.device, runtime.precision
    model, checkpoint = load_checkpoint(args.run_dir / "artifacts/train/model.pt")
    model.to(device, memory_format=torch.channels_last)
    probe = load_probe(args.run_dir / "data/probe/probe.pt")
    if probe["images"].shape[-1] != checkpoint["image_size"]:
        raise PipelineError(f"data/probe/probe.pt: images are {probe['images'].shape[-1]} px but the model was "
                            f"trained on {checkpoint['image_size']} px; rerun `dvc repro probe_concepts`")
    layers, images, spec = params["layers"], probe["images"], checkpoint["input"]
    run = dict(batch_size=params["batch_size"], device=device, precision=precision, input_spec=spec,
               key="dissect.layers", source=source)

    # pass 1: every unit's largest activations, enough for the exact quantile
    top, n_values = {}, {}
    for _, outputs, _ in iterate_activations(model, images, layers, desc="thresholds", **run):
        for name, maps in outputs.items():
            if maps.dim() != 4:
                raise PipelineError(f"{source}: 'dissect.layers' has {name!r}, whose output has no spatial "
                                    f"maps (shape {tuple(maps.shape)})")
            if name not in top:
                n_values[name] = len(images) * maps.shape[2] * maps.shape[3]
                top[name] = TopValues(maps.shape[1], values_needed(n_values[name], params["quantile"]))
            top[name].update(maps.float().transpose(0, 1).flatten(1))
    thresholds = {name: quantile_from_top(t.values, n_values[name], params["quantile"]) for name, t in top.items()}

    # pass 2: IoU counts and top-activating images
    concepts = probe["concepts"]
    n_pixel = sum(c["level"] == "pixel" for c in concepts)
    category = [probe["categories"].index(c["category"]) for c in concepts]
    mask_size, k = probe["mask_size"], params["top_images"]
    tallies = {name: IoUTally(len(t), n_pixel, len(concepts) - n_pixel, category, len(probe["categories"]))
               for name, t in thresholds.items()}
    best = {name: (torch.full((len(t), 0), -float("inf")), torch.zeros(len(t), 0, dtype=torch.int64), None)
            for name, t in thresholds.items()}
    histograms = {name: torch.zeros(len(t), HISTOGRAM_BINS, dtype=torch.int64) for name, t in thresholds.items()}
    for start, outputs, _ in iterate_activations(model, images, layers, desc="IoU", **run):
        n = next(iter(outputs.values())).shape[0]
        pixel_masks = unpack_masks(probe["pixel_masks"][start:start + n], mask_size)
        image_labels, annotated = probe["image_labels"][start:start + n], probe["annotated"][start:start + n]
        for name, maps in outputs.items():
            maps = maps.float()
            add_histogram(histograms[name], maps.transpose(0, 1).flatten(1), top[name].values[:, 0])
            for first, last in dissect_batch_chunks(n, maps.shape[1], mask_size * mask_size):
                masks = unit_masks(maps[first:last], thresholds[name], mask_size)
                tallies[name].update(masks, pixel_masks[first:last], image_labels[first:last], annotated[first:last])
            # each unit's top images by their largest activation, with the raw maps for the strips
            peak = maps.flatten(2).amax(dim=2).T                                   # units x n
            values, indices, kept = best[name]
            values = torch.cat([values, peak], dim=1)
            indices = torch.cat([indices, torch.arange(start, start + n).expand(len(peak), -1)], dim=1)
            kept_maps = maps.transpose(0, 1) if kept is None else torch.cat([kept, maps.transpose(0, 1)], dim=1)
            # stable: among equal peaks the earlier image stays, whatever the batch size
            order = torch.sort(-values, dim=1, stable=True).indices[:, :k]
            best[name] = (values.gather(1, order), indices.gather(1, order),
                          kept_maps[torch.arange(len(order))[:, None], order])
    save_torch({"layers": layers, "quantile": params["quantile"], "mask_size": mask_size,
                "concepts": concepts, "categories": probe["categories"], "checkpoint_sha256": checkpoint["sha256"],
                "per_layer": {name: {"thresholds": thresholds[name], "intersection": t.intersection,
                                     "unit_area": t.unit_area, "concept_area": t.concept_area,
                                     "category": t.category, "top_images": best[name][1],
                                     "top_maps": best[name][2].contiguous(), "histogram": histograms[name],
                                     "histogram_top": top[name].values[:, 0]}
                              for name, t in tallies.items()}}, out)
    for name, t in tallies.items():
        iou = t.iou().max(dim=1).values
        print(f"{name}: {len(iou)} units, mean best IoU {float(iou.mean()):.4f}")


if __name__ == "__main__":
    run_stage(main)
