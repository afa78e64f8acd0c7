"""The probe set that network dissection reads (written by the probe_concepts stage).

A dict with images (uint8 N x C x S x S, the model's input size), labels, mask_size M,
pixel_masks (uint8 N x pixel concepts x ceil(M * M / 8): each mask bit-packed, numpy.packbits
order; a Broden-format probe holds a SparsePackedMasks instead, which indexes alike),
image_labels (bool N x image concepts), annotated (bool N x categories: the categories
annotated on each image), concepts (one dict per concept: name, category, level, description;
pixel-level first), categories (names) and source.

load_probe maps the file into memory rather than reading it (torch.load's mmap): a pass over
the probe reads its images batch by batch from the page cache, so a probe larger than memory
still runs.
"""
from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import torch
from numpy.typing import ArrayLike
from torch.utils.serialization import config as serialization_config

from netunits.errors import PipelineError
from netunits.files import load_checked

class SparsePackedMasks:
    """Bit-packed pixel masks stored only where a concept is present on an image: a probe of a
    thousand concepts with a few on each image (Broden: 1,197 and about ten) holds a few masks
    per image, not a thousand. Indexing gives what the dense uint8 N x concepts x bytes tensor
    would: masks[a:b], masks[indices] (a tensor or list of image indices) and masks[:, j:k].

    image, concept: int64 (pairs), sorted by image then concept; bits: uint8 pairs x bytes.
    """

    def __init__(self, image: torch.Tensor, concept: torch.Tensor, bits: torch.Tensor, n_images: int,
                 n_concepts: int) -> None:
        self.image, self.concept, self.bits = image, concept, bits
        self.n_images, self.n_concepts = int(n_images), int(n_concepts)

    def __reduce__(self):
        # rebuilt from tensors and ints, so torch.load(weights_only=True) reads it (add_safe_globals below)
        return SparsePackedMasks, (self.image, self.concept, self.bits, self.n_images, self.n_concepts)

    @classmethod
    def from_dense(cls, packed: torch.Tensor) -> "SparsePackedMasks":
        """From a dense uint8 N x concepts x bytes tensor."""
        image, concept = (packed != 0).any(dim=2).nonzero(as_tuple=True)
        return cls(image, concept, packed[image, concept].clone(), packed.shape[0], packed.shape[1])

    @property
    def shape(self) -> tuple[int, int, int]:
        return self.n_images, self.n_concepts, self.bits.shape[1]

    def __len__(self) -> int:
        return self.n_images

    def _dense(self, pairs: torch.Tensor, rows: torch.Tensor, n_rows: int, columns: range) -> torch.Tensor:
        """The dense tensor of the pairs `pairs` (indices into image/concept/bits), placed at
        row rows[i] and their concept's column within `columns`."""
        out = torch.zeros(n_rows, len(columns), self.bits.shape[1], dtype=torch.uint8)
        concept = self.concept[pairs]
        keep = (concept >= columns.start) & (concept < columns.stop)
        out[rows[keep], concept[keep] - columns.start] = self.bits[pairs[keep]]
        return out

    def __getitem__(self, key) -> torch.Tensor:
        columns = range(self.n_concepts)
        if isinstance(key, tuple):
            key, column_key = key
            if not isinstance(column_key, slice) or column_key.step not in (None, 1):
                raise TypeError("SparsePackedMasks: concepts are indexed by a slice a:b only")
            columns = range(*column_key.indices(self.n_concepts))
        if isinstance(key, slice):
            start, stop, step = key.indices(self.n_images)
            if step != 1:
                raise TypeError("SparsePackedMasks: images are indexed by a slice of step 1 or by indices")
            stop = max(start, stop)
            lo, hi = (int(v) for v in torch.searchsorted(self.image, torch.tensor([start, stop])))
            pairs = torch.arange(lo, hi)
            return self._dense(pairs, self.image[pairs] - start, stop - start, columns)
        indices = torch.as_tensor(key, dtype=torch.int64).flatten()
        if len(indices) and (int(indices.min()) < -self.n_images or int(indices.max()) >= self.n_images):
            raise IndexError(f"SparsePackedMasks: an image index is outside 0 to {self.n_images - 1}")
        indices = indices % max(1, self.n_images)
        lo = torch.searchsorted(self.image, indices)
        hi = torch.searchsorted(self.image, indices, right=True)
        counts = hi - lo
        rows = torch.repeat_interleave(torch.arange(len(indices)), counts)
        # each requested image's run of pairs, lo[i] .. hi[i] - 1
        offsets = torch.arange(int(counts.sum())) - torch.repeat_interleave(counts.cumsum(0) - counts, counts)
        pairs = torch.repeat_interleave(lo, counts) + offsets
        return self._dense(pairs, rows, len(indices), columns)


torch.serialization.add_safe_globals([SparsePackedMasks])


def packed_masks_valid(value: Any) -> bool:
    if isinstance(value, SparsePackedMasks):
        return value.bits.dtype == torch.uint8 and value.bits.dim() == 2 and \
            len(value.image) == len(value.concept) == len(value.bits)
    return isinstance(value, torch.Tensor) and value.dtype == torch.uint8 and value.dim() == 3


def concept_shares(pixel_masks: torch.Tensor | SparsePackedMasks, mask_size: int) -> np.ndarray:
    """Each pixel concept's share of the probe's mask pixels (its mean mask), from the packed
    masks without unpacking them all."""
    bits_set = np.unpackbits(np.arange(256, dtype=np.uint8)[:, None], axis=1).sum(axis=1)
    n_images, n_concepts, _ = pixel_masks.shape
    if isinstance(pixel_masks, SparsePackedMasks):
        per_pair = bits_set[pixel_masks.bits.numpy()].sum(axis=1)
        totals = np.bincount(pixel_masks.concept.numpy(), weights=per_pair, minlength=n_concepts)
    else:
        totals = bits_set[pixel_masks.numpy()].sum(axis=(0, 2))
    return totals / max(1, n_images * mask_size * mask_size)


PROBE_KEYS = {
    "images": lambda v: isinstance(v, torch.Tensor) and v.dtype == torch.uint8 and v.dim() == 4,
    "mask_size": lambda v: isinstance(v, int) and v > 0,
    "pixel_masks": packed_masks_valid,
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
    """uint8 N x C x bytes (or a SparsePackedMasks) -> bool N x C x (mask_size^2)."""
    if isinstance(packed, SparsePackedMasks):
        packed = packed[:]
    if packed.shape[1] == 0:
        return torch.zeros(packed.shape[0], 0, mask_size * mask_size, dtype=torch.bool)
    bits = np.unpackbits(packed.numpy(), axis=2, count=mask_size * mask_size)
    return torch.from_numpy(bits.astype(bool))


def load_probe(path: str | Path) -> dict[str, Any]:
    mmap_config = serialization_config.load
    before, mmap_config.mmap = mmap_config.mmap, True
    try:
        probe = load_checked(path, PROBE_KEYS, "probe set")
    finally:
        mmap_config.mmap = before
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
