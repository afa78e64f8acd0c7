"""`python -m bench.dissect`: network dissection's speed and memory against a plain implementation.

1. The dissect stage itself, as `dvc repro` runs it (every layer of dissect.layers over the whole
   probe set, both activation passes), on the project's cached checkpoint and probe set: wall
   time and peak resident memory.
2. The IoU counting alone, on the first --images probe images and --units units of each layer:
   the vectorised tally (netunits.methods.dissection) against a plain implementation that loops
   over units and images, upsampling one map and comparing it with one concept mask at a time,
   as NetDissect-Lite does. Both start from the same activation maps and thresholds, must give
   the same IoU, and are reported per (unit, image) pair and as a ratio.
Needs `dvc repro` (or at least the train, probe_concepts and dissect stages) first.
Usage: python -m bench.dissect [--images 200] [--units 16]
"""
import argparse
import time

import numpy as np
import torch
import torch.nn.functional as F

from bench.run import ROOT, stage_in_scratch
from netunits.activations import iterate_activations
from netunits.data.probe import load_probe, unpack_masks
from netunits.methods.dissection import IoUTally, dissect_batch_chunks, unit_masks
from netunits.models.registry import load_checkpoint
from netunits.params import load_params


def stage_run():
    """(wall s, peak RSS MiB, the stage's own line) of `python -m stages.dissect` in a scratch folder."""
    wall, rss, _, err = stage_in_scratch("dissect", ["artifacts/train/model.pt", "data/probe/probe.pt"])
    return wall, rss, [line for line in err.splitlines() if "done in" in line][-1]


def plain_iou(maps, thresholds, pixel, image_labels, annotated, category, mask_size):
    """Per unit, per image, per concept, in numpy (NetDissect's definition, as bench reference)."""
    n_images, n_units = maps.shape[:2]
    n_pixel = pixel.shape[1]
    n_concepts = n_pixel + image_labels.shape[1]
    inter, unit_area, concept_area = np.zeros((n_units, n_concepts)), np.zeros((n_units, annotated.shape[1])), \
        np.zeros(n_concepts)
    for u in range(n_units):
        for i in range(n_images):
            up = F.interpolate(maps[i:i + 1, u:u + 1], size=(mask_size, mask_size), mode="bilinear",
                               align_corners=False)[0, 0].numpy().ravel()
            mask = up > float(thresholds[u])
            area = mask.sum()
            for k in range(annotated.shape[1]):
                if annotated[i, k]:
                    unit_area[u, k] += area
            for c in range(n_concepts):
                concept = pixel[i, c] if c < n_pixel else np.full(mask.shape, image_labels[i, c - n_pixel])
                inter[u, c] += np.logical_and(mask, concept).sum()
                if u == 0:
                    concept_area[c] += concept.sum()
    union = unit_area[:, category] + concept_area[None, :] - inter
    return np.where(union > 0, inter / np.maximum(union, 1e-12), 0.0)


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--images", type=int, default=200)
    parser.add_argument("--units", type=int, default=16)
    args = parser.parse_args()
    params = load_params(ROOT / "params.yaml", required=("dissect",)).dissect.model_dump()
    wall, rss, line = stage_run()
    print(f"dissect stage ({', '.join(params['layers'])}): {wall:.1f} s wall with process start, peak RSS "
          f"{rss:.0f} MiB\n  {line}")

    model, checkpoint = load_checkpoint(ROOT / "artifacts/train/model.pt")
    probe = load_probe(ROOT / "data/probe/probe.pt")
    images = probe["images"][:args.images]
    mask_size = probe["mask_size"]
    concepts = probe["concepts"]
    n_pixel = sum(c["level"] == "pixel" for c in concepts)
    category = [probe["categories"].index(c["category"]) for c in concepts]
    pixel = unpack_masks(probe["pixel_masks"][:args.images], mask_size)
    labels, annotated = probe["image_labels"][:args.images], probe["annotated"][:args.images]
    maps = {name: [] for name in params["layers"]}
    for _, outputs, _ in iterate_activations(model, images, params["layers"], 50, torch.device("cpu"), "fp32",
                                             checkpoint["input"]):
        for name, value in outputs.items():
            maps[name].append(value.float())
    print(f"IoU counting on {len(images)} images, {args.units} units per layer, {len(concepts)} concepts:")
    print("| layer | vectorised us per unit-image | plain us per unit-image | ratio | same IoU |")
    print("|---|---:|---:|---:|---|")
    for name, parts in maps.items():
        layer_maps = torch.cat(parts)[:, :args.units]
        thresholds = torch.quantile(layer_maps.transpose(0, 1).flatten(1), 0.995, dim=1)
        start = time.perf_counter()
        tally = IoUTally(args.units, n_pixel, len(concepts) - n_pixel, category, len(probe["categories"]))
        for first, last in dissect_batch_chunks(len(images), args.units, mask_size * mask_size):
            tally.update(unit_masks(layer_maps[first:last], thresholds, mask_size), pixel[first:last],
                         labels[first:last], annotated[first:last])
        fast = time.perf_counter() - start
        start = time.perf_counter()
        reference = plain_iou(layer_maps, thresholds, pixel.numpy(), labels.numpy(), annotated.numpy(),
                              np.array(category), mask_size)
        slow = time.perf_counter() - start
        pairs = len(images) * args.units
        same = np.allclose(tally.iou().numpy(), reference)
        print(f"| {name} | {fast / pairs * 1e6:.1f} | {slow / pairs * 1e6:.1f} | {slow / fast:.0f}x | {same} |")


if __name__ == "__main__":
    main()
