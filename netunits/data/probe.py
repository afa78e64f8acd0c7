"""The probe set that network dissection reads (written by the probe_concepts stage).

A dict with images (uint8 N x C x S x S, the model's input size), labels, mask_size M,
pixel_masks (uint8 N x pixel concepts x ceil(M * M / 8): each mask bit-packed, numpy.packbits
order), image_labels (bool N x image concepts), annotated (bool N x categories: the categories
annotated on each image), concepts (one dict per concept: name, category, level, description;
pixel-level first), categories (names) and source.
"""
from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import torch
from numpy.typing import ArrayLike

from netunits.errors import PipelineError
from netunits.files import load_checked

PROBE_KEYS = {
    "images": lambda v: isinstance(v, torch.Tensor) and v.dtype == torch.uint8 and v.dim() == 4,
    "mask_size": lambda v: isinstance(v, int) and v > 0,
    "pixel_masks": lambda v: isinstance(v, torch.Tensor) and v.dtype == torch.uint8 and v.dim() == 3,
    "image_labels": lambda v: isinstance(v, torch.Tensor) and v.dtype == torch.bool and v.dim() == 2,
    "annotated": lambda v: isinstance(v, torch.Tensor) and v.dtype == torch.bool and v.dim() == 2,
    "concepts": lambda v: isinstance(v, list) and all(isinstance(c, dict) for c in v),
    "categories": lambda v: isinstance(v, list),
}


def pack_masks(masks: ArrayLike) -> torch.Tensor:
    """bool N x C x H x W -> uint8 N x C x ceil(H * W / 8)."""
    masks = np.asarray(masks, dtype=bool)
    n, n_concepts, height, width = masks.shape
    return torch.from_numpy(np.packbits(masks.reshape(n, n_concepts, height * width), axis=2))


def unpack_masks(packed: torch.Tensor, mask_size: int) -> torch.Tensor:
    """uint8 N x C x bytes -> bool N x C x (mask_size^2)."""
    if packed.shape[1] == 0:
        return torch.zeros(packed.shape[0], 0, mask_size * mask_size, dtype=torch.bool)
    bits = np.unpackbits(packed.numpy(), axis=2, count=mask_size * mask_size)
    return torch.from_numpy(bits.astype(bool))


def load_probe(path: str | Path) -> dict[str, Any]:
    probe = load_checked(path, PROBE_KEYS, "probe set")
    n = len(probe["images"])
    n_pixel = sum(c["level"] == "pixel" for c in probe["concepts"])
    if probe["pixel_masks"].shape[:2] != (n, n_pixel) or len(probe["image_labels"]) != n or \
            probe["image_labels"].shape[1] != len(probe["concepts"]) - n_pixel or \
            probe["annotated"].shape != (n, len(probe["categories"])):
        raise PipelineError(f"{path}: masks, labels and concepts do not pair up; rebuild it with "
                            f"`dvc repro -f probe_concepts`")
    return probe


PER_IMAGE = ("images", "labels", "pixel_masks", "image_labels", "annotated")


def probe_subset(probe: dict[str, Any], indices: torch.Tensor,
                 annotations_from: torch.Tensor | None = None) -> dict[str, Any]:
    """The probe set restricted to some images (indices), every per-image entry indexed alike.
    annotations_from: for each kept image, the image whose masks, labels and annotated
    categories it takes instead of its own (a permutation test's relabelled probe set)."""
    subset = dict(probe)
    source = indices if annotations_from is None else annotations_from
    for key in PER_IMAGE:
        if key in probe:
            subset[key] = probe[key][indices if key in ("images", "labels") else source]
    return subset
