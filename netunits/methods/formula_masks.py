"""Formulas' masks on dense tensors (bool images x S x S) and their scores, by definition.

The beam search (netunits.methods.compose_search) never builds these masks per unit; it counts
on bit-packed masks instead. These are the straightforward definitions it must agree with (the
tests and the benchmark compare them), and what the report shows: a formula's mask on a unit's
top images.

Spatial connectors work on the layer's grid of cells: CLOSE TO keeps A's positions whose cell
has a cell of B within its neighbourhood (the 5 x 5 cells without the corners); an expanded
primitive `<name>-X` adds the positions with at least 3 of their 8 neighbours set (neighbours
one cell away: `step` positions).
"""
from __future__ import annotations

from typing import Any, Iterator, Mapping

import numpy as np
import torch
import torch.nn.functional as F
from numpy.typing import ArrayLike

from netunits.data.probe import unpack_masks
from netunits.errors import PipelineError
from netunits.methods.dissection import may_fire, upsample
from netunits.methods.formula import CONNECTORS, EXPANDED, Formula, leaves


def close_kernel() -> torch.Tensor:
    kernel = torch.ones(5, 5)
    kernel[0, 0] = kernel[0, 4] = kernel[4, 0] = kernel[4, 4] = 0
    return kernel


def near(masks: torch.Tensor, grid: int) -> torch.Tensor:
    """The positions whose cell (of a grid x grid partition of the S x S positions, nearest
    cell) has, within the 21-cell neighbourhood (5 x 5 without corners), a cell holding any
    position of `masks`."""
    size = masks.shape[-1]
    occupied = F.adaptive_max_pool2d(masks.float()[:, None], grid)
    reach = F.conv2d(occupied, close_kernel()[None, None], padding=2) > 0
    if size != grid:
        reach = F.interpolate(reach.float(), size=(size, size), mode="nearest") > 0
    return reach[:, 0]


def expand(masks: torch.Tensor, step: int = 1) -> torch.Tensor:
    """Positions set, or with at least 3 of the 8 positions `step` away (one cell) set."""
    padded = F.pad(masks.float()[:, None], (step, step, step, step))[:, 0]
    size = masks.shape[-1]
    count = torch.zeros(masks.shape, dtype=torch.float32)
    for dy in (-step, 0, step):
        for dx in (-step, 0, step):
            if dy or dx:
                count += padded[:, step + dy:step + dy + size, step + dx:step + dx + size]
    return masks | (count >= 3)


def downsample(masks: torch.Tensor, grid: int, min_share: float) -> torch.Tensor:
    """indres' concept masks at the layer's resolution: a cell is set when the mask covers at
    least min_share of it (indres: 100 of 256 pixels)."""
    return F.adaptive_avg_pool2d(masks.float()[:, None], grid)[:, 0] >= min_share - 1e-9


def concept_masks(probe: Mapping, resolution: str, size: int, min_share: float) -> Iterator[tuple[str, torch.Tensor]]:
    """(name, bool images x size x size) per concept: pixel-level masks from the probe (downsampled
    to the layer's grid at resolution layer), image-level labels as whole-image masks."""
    n, mask_size = len(probe["images"]), probe["mask_size"]
    n_pixel = sum(c["level"] == "pixel" for c in probe["concepts"])
    for index, concept in enumerate(probe["concepts"]):
        if index < n_pixel:
            mask = unpack_masks(probe["pixel_masks"][:, index:index + 1], mask_size)[:, 0].view(n, mask_size, mask_size)
            yield concept["name"], downsample(mask, size, min_share) if resolution == "layer" else mask
        else:
            label = probe["image_labels"][:, index - n_pixel]
            yield concept["name"], label[:, None, None].expand(n, size, size).clone()


def formula_mask_on(probe: Mapping, indices: torch.Tensor, formula: Formula, resolution: str, size: int,
                    min_share: float, grid: int) -> torch.Tensor:
    """A formula's dense mask (bool k x size x size) on some probe images, from their concept masks
    as the search saw them (expanded primitives included)."""
    subset = {"images": probe["images"][indices], "mask_size": probe["mask_size"], "concepts": probe["concepts"],
              "pixel_masks": probe["pixel_masks"][indices], "image_labels": probe["image_labels"][indices]}
    masks = dict(concept_masks(subset, resolution, size, min_share))
    for name in leaves(formula):
        if name not in masks and name.endswith(EXPANDED):
            masks[name] = expand(masks[name[:-len(EXPANDED)]], max(1, round(size / grid)))
    return evaluate(formula, masks, grid)


def evaluate(formula: Formula, masks: Mapping[str, torch.Tensor], grid: int) -> torch.Tensor:
    """The dense mask of a formula: masks maps each primitive's name to bool images x S x S."""
    if isinstance(formula, str):
        return masks[formula]
    op, left, right = formula
    a, b = evaluate(left, masks, grid), evaluate(right, masks, grid)
    if op == "OR":
        return a | b
    if op == "AND":
        return a & b
    if op == "AND NOT":
        return a & ~b
    if op == "WITH":
        return a & b.flatten(1).any(1)[:, None, None]
    if op == "CLOSE TO":
        return a & near(b, grid)
    if op == "CLOSE":
        return (a & near(b, grid)) | (b & near(a, grid))
    raise PipelineError(f"unknown connector {op!r}; allowed: {', '.join(CONNECTORS)}")


def score_from_counts(inter: ArrayLike, area: ArrayLike, unit_area: float, dot: ArrayLike, length: ArrayLike,
                      score: str = "iou", r: float = 0.75, cells: int = 1, unit_square: float = 0.0,
                      penalty: float = 0.0) -> np.ndarray:
    """The score of formulas from counts (numpy arrays or numbers):
    iou    |U and F| / |U or F|;
    imrou  (|U and F| - r / cells * sum_i |U_i| |F_i|) / |U or F|, divided by the unit's own
           score (|U| - r / cells * sum_i |U_i|^2) / |U|   (dot = sum_i |U_i| |F_i|,
           unit_square = sum_i |U_i|^2, cells = positions per image);
    then times (1 - penalty (length - 1))."""
    inter, area, dot = (np.asarray(x, dtype=np.float64) for x in (inter, area, dot))
    union = unit_area + area - inter
    safe = np.where(union > 0, union, 1.0)
    if score == "iou":
        value = np.where(union > 0, inter / safe, 0.0)
    else:
        own = (unit_area - r / cells * unit_square) / unit_area if unit_area > 0 else 0.0
        value = np.where(union > 0, (inter - r / cells * dot) / safe, 0.0)
        value = value / own if own > 0 else np.zeros_like(value)
    return value * (1.0 - penalty * (np.asarray(length, dtype=np.float64) - 1))


def plain_score(unit_mask: torch.Tensor, formula_mask: torch.Tensor, length: int, **options: Any) -> float:
    """score_from_counts computed straight from two dense masks (images x S x S)."""
    unit_per_image = unit_mask.flatten(1).sum(1).double()
    formula_per_image = formula_mask.flatten(1).sum(1).double()
    return float(score_from_counts(float((unit_mask & formula_mask).sum()), float(formula_per_image.sum()),
                                   float(unit_per_image.sum()), float(unit_per_image @ formula_per_image), length,
                                   cells=unit_mask[0].numel(), unit_square=float(unit_per_image @ unit_per_image),
                                   **options))


def unit_mask_positions(maps: torch.Tensor, thresholds: torch.Tensor, size: int,
                        budget: int = 1 << 24) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """(image, unit, position) of every set position of the units' masks on a batch of maps
    (images x units x h x w): each map upsampled bilinearly to size x size (as network dissection
    does) and above its unit's threshold, or the map itself when it is size x size already.
    Only the maps that may fire are upsampled (netunits.methods.dissection.may_fire)."""
    thresholds = thresholds.float()
    image, unit = may_fire(maps, thresholds)
    found = [[], [], []]
    step = max(1, budget // (size * size))
    for first in range(0, len(image), step):
        i, u = image[first:first + step], unit[first:first + step]
        selected = upsample(maps[i, u][:, None], size)
        pair, position = torch.nonzero(selected.flatten(1) > thresholds[u][:, None], as_tuple=True)
        for kept, values in zip(found, (i[pair], u[pair], position)):
            kept.append(values)
    return tuple(torch.cat(values) if values else torch.zeros(0, dtype=torch.int64) for values in found)
