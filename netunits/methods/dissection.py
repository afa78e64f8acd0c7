"""Network dissection (Bau et al. 2017) as streaming statistics on tensors.

A unit's threshold is the `quantile` (default 0.995) of its activations over every probe image
and position; its mask on an image is its activation map, upsampled bilinearly to the concept
masks' size, above the threshold. IoU(unit, concept) = sum over images of |unit mask AND
concept mask| / sum over images of |unit mask OR concept mask|, where an image-level concept is
a mask over the whole image, and, as the original NetDissect does, the unit's part of the union
counts only images on which the concept's category is annotated (NetDissect-Lite counts every
image, which lowers the IoU of concepts annotated on few images).

Everything accumulates batch by batch, so no map of any layer is held beyond its batch:
TopValues keeps each unit's largest activations, enough for the exact quantile; IoUTally keeps
the intersection and area counts. Both merge exactly over disjoint sets of probe images (shards):
the largest values of the union are the largest of the shards' largest (merge_top_values), and
counts add.
"""
from __future__ import annotations

import math
from typing import Any, Mapping, Sequence

import numpy as np
import torch
import torch.nn.functional as F


def values_needed(n_values: int, quantile: float) -> int:
    """How many of the largest values numpy's (linear) quantile of n_values reads."""
    return n_values - math.floor((n_values - 1) * quantile)


class TopValues:
    """Each unit's `keep` largest values seen so far (units x values, descending)."""

    def __init__(self, n_units: int, keep: int) -> None:
        self.keep = keep
        self.values = torch.empty(n_units, 0)

    def update(self, values: torch.Tensor) -> None:
        """values: units x n (any n)."""
        merged = torch.cat([self.values, values.float()], dim=1)
        self.values = merged.topk(min(self.keep, merged.shape[1]), dim=1).values


def merge_top_values(parts: Sequence[torch.Tensor], keep: int) -> torch.Tensor:
    """Each unit's `keep` largest values over disjoint sets of values, from each set's largest
    (units x any, descending, as TopValues keeps them): the top of their concatenation, exactly
    TopValues' values over the union. One part is returned as it is."""
    if len(parts) == 1 and parts[0].shape[1] <= keep:
        return parts[0]
    merged = torch.cat(list(parts), dim=1)
    return merged.topk(min(keep, merged.shape[1]), dim=1).values


def add_histogram(histogram: torch.Tensor, values: torch.Tensor, top: torch.Tensor) -> None:
    """Add units x n activations to units x bins counts over [0, top] per unit (values above top
    land in the last bin; a unit that never fires keeps its counts in the first)."""
    bins = histogram.shape[1]
    scaled = values / top.clamp_min(torch.finfo(torch.float32).tiny)[:, None] * bins
    index = scaled.floor().clamp_(0, bins - 1).long()
    histogram.scatter_add_(1, index, torch.ones_like(index, dtype=histogram.dtype))


def quantile_from_top(top_descending: torch.Tensor, n_values: int, quantile: float) -> torch.Tensor:
    """numpy.quantile(all values, quantile) per unit, from the largest values only (exact)."""
    h = (n_values - 1) * quantile
    lo, hi = math.floor(h), math.ceil(h)
    # ascending position i is descending position n_values - 1 - i
    below, above = top_descending[:, n_values - 1 - lo], top_descending[:, n_values - 1 - hi]
    return below + (h - lo) * (above - below)


def upsample(maps: torch.Tensor, mask_size: int) -> torch.Tensor:
    """Maps (images x units x h x w) upsampled bilinearly to mask_size x mask_size, in fp32, plane
    by plane: the channels-last kernel rounds differently in the last bit, and a unit's mask must
    not depend on the memory layout its maps come in, nor on which other maps share the batch."""
    maps = maps.float().contiguous()
    if maps.shape[-1] == mask_size and maps.shape[-2] == mask_size:
        return maps
    return F.interpolate(maps, size=(mask_size, mask_size), mode="bilinear", align_corners=False)


def unit_masks(maps: torch.Tensor, thresholds: torch.Tensor, mask_size: int) -> torch.Tensor:
    """Bool images x units x (mask_size^2): maps upsampled bilinearly, above the threshold (strictly,
    as NetDissect-Lite: a unit silent on more than 0.5% of positions has threshold 0, and its
    mask must not become the whole image)."""
    return (upsample(maps, mask_size) > thresholds.view(1, -1, 1, 1)).flatten(2)


def may_fire(maps: torch.Tensor, thresholds: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """(image, unit) of the maps (images x units x h x w) whose mask can have a set position, in
    image-major order. Bilinear upsampling mixes source values with weights that sum to one, so
    it never exceeds the map's largest value by more than rounding; a map whose largest value is
    below the threshold by more than a generous rounding margin has an empty mask."""
    flat = maps.flatten(2)
    peaks = flat.amax(2)
    margin = 1e-5 * flat.abs().amax(2)
    return torch.nonzero(peaks + margin >= thresholds.view(1, -1), as_tuple=True)


def firing_unit_masks(maps: torch.Tensor, thresholds: torch.Tensor, mask_size: int,
                      budget: int = 1 << 24) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """unit_masks for the maps that may fire only: (image, unit, masks bool K x mask_size^2), image
    major. Every other map's mask is empty. Each map is upsampled on its own (upsample: the same
    values as unit_masks gives), so a unit that fires on a few images costs a few upsamplings."""
    image, unit = may_fire(maps, thresholds)
    step = max(1, budget // (mask_size * mask_size))
    rows = []
    for first in range(0, len(image), step):
        i, u = image[first:first + step], unit[first:first + step]
        rows.append(upsample(maps[i, u][:, None], mask_size).flatten(1) > thresholds[u].view(-1, 1))
    masks = torch.cat(rows) if rows else torch.zeros(0, mask_size * mask_size, dtype=torch.bool)
    return image, unit, masks


class IoUTally:
    """Intersections and areas for IoU(unit, concept), added up over batches of images.

    concept_category: for each concept (pixel-level first, then image-level) its category index.
    """

    def __init__(self, n_units: int, n_pixel_concepts: int, n_image_concepts: int,
                 concept_category: Sequence[int] | torch.Tensor, n_categories: int) -> None:
        n_concepts = n_pixel_concepts + n_image_concepts
        self.n_units = n_units
        self.n_pixel = n_pixel_concepts
        self.category = torch.as_tensor(concept_category, dtype=torch.int64)
        self.intersection = torch.zeros(n_units, n_concepts, dtype=torch.float64)
        self.unit_area = torch.zeros(n_units, n_categories, dtype=torch.float64)
        self.concept_area = torch.zeros(n_concepts, dtype=torch.float64)

    def update(self, masks: torch.Tensor, pixel_masks: torch.Tensor, image_labels: torch.Tensor,
               annotated: torch.Tensor) -> None:
        """masks: bool B x units x P; pixel_masks: bool B x pixel concepts x P; image_labels: bool
        B x image concepts; annotated: bool B x categories."""
        image, unit = masks.any(dim=2).nonzero(as_tuple=True)
        present = pixel_masks.any(dim=2)                                           # B x pixel concepts
        self._update(image, unit, masks[image, unit], present, lambda b, columns: pixel_masks[b, columns],
                     image_labels, annotated)

    def update_packed(self, masks: torch.Tensor, packed: torch.Tensor, image_labels: torch.Tensor,
                      annotated: torch.Tensor) -> None:
        """update() with the pixel masks bit-packed (uint8 B x pixel concepts x ceil(P / 8),
        numpy.packbits order, as the probe set holds them)."""
        image, unit = masks.any(dim=2).nonzero(as_tuple=True)
        self.update_rows(image, unit, masks[image, unit], packed, image_labels, annotated)

    def update_rows(self, image: torch.Tensor, unit: torch.Tensor, masks: torch.Tensor, packed: torch.Tensor,
                    image_labels: torch.Tensor, annotated: torch.Tensor) -> None:
        """update_packed() with the unit masks given as rows (firing_unit_masks): masks[k] is unit
        unit[k]'s on image image[k] (image-major order); every mask not given is empty. Only the
        concept masks present on an image are unpacked, so a probe of a thousand concepts and a
        few per image costs what a few concepts cost."""
        positions = masks.shape[1]
        present = (packed != 0).any(dim=2)

        def pixel_rows(b, columns):
            return torch.from_numpy(np.unpackbits(packed[b, columns].numpy(), axis=-1, count=positions).view(bool))
        self._update(image, unit, masks, present, pixel_rows, image_labels, annotated)

    def _update(self, image, unit, masks, present, pixel_rows, image_labels, annotated) -> None:
        """The counts of update_rows(). present: bool B x pixel concepts; pixel_rows(b, columns):
        image b's masks of those concepts (bool len(columns) x P). Per image, its firing units'
        masks times its present concept masks: the sums are whole numbers, exact in float32 below
        2^24, and an empty or absent mask adds nothing."""
        n_batch, positions = len(annotated), masks.shape[1]
        as_float = masks.float()
        area = torch.zeros(n_batch, self.n_units, dtype=torch.float64)             # B x units
        area[image, unit] = as_float.sum(dim=1).double()
        if self.n_pixel:
            bounds = torch.searchsorted(image, torch.arange(n_batch + 1)).tolist()
            for b in range(n_batch):
                columns = present[b].nonzero().flatten()
                if not len(columns):
                    continue
                rows = pixel_rows(b, columns)                                      # present concepts x P
                self.concept_area[columns] += rows.sum(dim=1).double()
                lo, hi = bounds[b], bounds[b + 1]
                if hi > lo:
                    self.intersection[unit[lo:hi, None], columns[None]] += (as_float[lo:hi] @ rows.float().T).double()
        self.intersection[:, self.n_pixel:] += area.T @ image_labels.double()
        self.unit_area += area.T @ annotated.double()
        self.concept_area[self.n_pixel:] += image_labels.sum(dim=0).double() * positions

    def iou(self) -> torch.Tensor:
        """units x concepts."""
        return iou_from_counts(self.intersection, self.unit_area, self.concept_area, self.category)


def iou_from_counts(intersection: torch.Tensor, unit_area: torch.Tensor, concept_area: torch.Tensor,
                    category: torch.Tensor) -> torch.Tensor:
    union = unit_area[:, category] + concept_area[None, :] - intersection
    return torch.where(union > 0, intersection / union.clamp_min(1e-12), torch.zeros_like(union))


def best_concepts(iou: torch.Tensor, n: int = 3) -> tuple[torch.Tensor, torch.Tensor]:
    """(values, indices) of each unit's n best concepts, best first; ties to the lower index."""
    order = torch.sort(-iou, dim=1, stable=True).indices[:, :n]
    return iou.gather(1, order), order


def dissect_batch_chunks(n_images: int, n_units: int, positions: int, budget: int = 1 << 24) -> list[tuple[int, int]]:
    """Image chunks whose unit masks stay under `budget` elements (64 MiB in float32)."""
    step = max(1, budget // max(1, n_units * positions))
    return [(start, min(n_images, start + step)) for start in range(0, n_images, step)]


def merge_top_images(kept: tuple[torch.Tensor, torch.Tensor, torch.Tensor] | None, maps: torch.Tensor, first: int,
                     k: int) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Each unit's k top images by their largest activation, after one more batch.

    kept: (values units x m, image indices units x m, maps units x m x h x w) from earlier
    batches, or None before the first; maps: this batch's fp32 maps B x units x h x w, the probe
    images first .. first + B - 1. Returns the merged triple, each unit's images by descending
    peak; among equal peaks the earlier image stays, whatever the batch size (a stable sort).
    """
    peak = maps.flatten(2).amax(dim=2).T                                       # units x B
    indices = torch.arange(first, first + maps.shape[0]).expand(len(peak), -1)
    unit_maps = maps.transpose(0, 1)
    if kept is not None:
        peak = torch.cat([kept[0], peak], dim=1)
        indices = torch.cat([kept[1], indices], dim=1)
        unit_maps = torch.cat([kept[2], unit_maps], dim=1)
    order = torch.sort(-peak, dim=1, stable=True).indices[:, :k]
    return peak.gather(1, order), indices.gather(1, order), unit_maps[torch.arange(len(order))[:, None], order]


def merge_kept_top_images(parts: Sequence[tuple[torch.Tensor, torch.Tensor, torch.Tensor]],
                          k: int) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """merge_top_images' triples from disjoint runs of probe images, given in image order, as one:
    each unit's k best by descending peak, among equal peaks the earlier image (a stable sort of
    the concatenation), which is what one merge_top_images over all the images keeps. One part is
    returned as it is."""
    if len(parts) == 1:
        return parts[0]
    peak, indices, unit_maps = (torch.cat([part[i] for part in parts], dim=1) for i in range(3))
    order = torch.sort(-peak, dim=1, stable=True).indices[:, :k]
    return peak.gather(1, order), indices.gather(1, order), unit_maps[torch.arange(len(order))[:, None], order]


# --------------------------------------------------------------------------------------------
# the tables dissect_report writes
# --------------------------------------------------------------------------------------------
def unit_rows(iou: torch.Tensor, thresholds: torch.Tensor, names: Sequence[str], categories: Sequence[str],
              iou_threshold: float, n_best: int = 3) -> list[dict[str, Any]]:
    """One row per unit: its best concept, category and IoU, threshold, whether it is a detector
    (best IoU at or above iou_threshold), and the runners-up concept_2, iou_2, ... concept_n, iou_n.

    iou: units x concepts; thresholds: units; names, categories: per concept."""
    values, indices = best_concepts(iou, n_best)
    rows = []
    for unit in range(len(iou)):
        row = {"unit": unit, "concept": names[indices[unit, 0]], "category": categories[indices[unit, 0]],
               "iou": float(values[unit, 0]), "threshold": float(thresholds[unit]),
               "detector": int(values[unit, 0] >= iou_threshold)}
        for rank in range(1, n_best):
            row[f"concept_{rank + 1}"] = names[indices[unit, rank]]
            row[f"iou_{rank + 1}"] = float(values[unit, rank])
        rows.append(row)
    return rows


def detectors_per_concept(rows: Sequence[Mapping[str, Any]]) -> dict[str, int]:
    """{concept: detectors} of unit_rows' detectors, concepts in order of first appearance."""
    detected = [r["concept"] for r in rows if r["detector"]]
    return {c: detected.count(c) for c in dict.fromkeys(detected)}


def detector_summary(rows: Sequence[Mapping[str, Any]]) -> dict[str, int | float]:
    """units, detectors, unique concepts among the detectors and mean best IoU of unit_rows' rows."""
    detected = [r["concept"] for r in rows if r["detector"]]
    return {"units": len(rows), "detectors": len(detected), "unique_concepts": len(set(detected)),
            "mean_best_iou": sum(r["iou"] for r in rows) / len(rows)}


def role_summary(rows: Sequence[Mapping[str, Any]], roles: Sequence[str]) -> dict[str, dict[str, int | float | None]]:
    """Per role, the units of rows (unit_rows joined with ROF's 'category_acc') in it, the share of
    them that are detectors and their mean best IoU (None for a role with no units)."""
    summary = {}
    for role in roles:
        members = [r for r in rows if r["category_acc"] == role]
        summary[role] = {
            "units": len(members),
            "detector_share": sum(r["detector"] for r in members) / len(members) if members else None,
            "mean_best_iou": sum(r["iou"] for r in members) / len(members) if members else None}
    return summary
