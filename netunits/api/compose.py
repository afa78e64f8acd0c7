"""The compose stage as one library call: compositional explanations of a model's units."""
from __future__ import annotations

from typing import Mapping

import numpy as np
import torch

from netunits.activations import iterate_activations
from netunits.methods.formula_masks import unit_mask_positions


def unit_positions(model: torch.nn.Module, probe: Mapping, layer: str, thresholds: torch.Tensor, size: int,
                   words: int, run: dict) -> list[np.ndarray]:
    """Each unit's mask as flat positions (image * words * 64 + position), from batches of
    activations: upsampled to size x size (resolution mask) or at the layer's own grid."""
    found = []
    for start, outputs, _ in iterate_activations(model, probe["images"], [layer], desc=f"{layer} masks", **run):
        image, unit, position = unit_mask_positions(outputs[layer], thresholds, size)
        found.append((unit.numpy(), (image.numpy() + start) * words * 64 + position.numpy()))
    units = np.concatenate([u for u, _ in found])
    positions = np.concatenate([p for _, p in found])
    order = np.argsort(units, kind="stable")
    bounds = np.searchsorted(units[order], np.arange(len(thresholds) + 1))
    return [np.sort(positions[order][bounds[u]:bounds[u + 1]]) for u in range(len(thresholds))]
