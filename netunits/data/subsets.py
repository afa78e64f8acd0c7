"""From a data set's official split to the prepared subset: selection, resizing, label noise."""
from __future__ import annotations

import torch
import torch.nn.functional as F

from netunits.errors import PipelineError


def select_indices(labels: torch.Tensor, size: int, selection: str, seed: int, key: str, n_classes: int,
                   source: str = "params.yaml") -> torch.Tensor:
    """Indices (ascending) of the chosen samples.

    first: the first `size` samples (the ROF notebook's choice). stratified: `size // n_classes`
    per class, the remainder going to the lowest class labels, drawn with a generator seeded
    by `seed`.
    """
    if size > len(labels):
        raise PipelineError(f"{source}: '{key}' is {size} but the split has only {len(labels)} samples")
    if selection == "first":
        return torch.arange(size)
    generator = torch.Generator().manual_seed(seed)
    chosen = []
    for cls in range(n_classes):
        want = size // n_classes + (1 if cls < size % n_classes else 0)
        members = torch.nonzero(labels == cls).flatten()
        if want > len(members):
            raise PipelineError(f"{source}: '{key}' is {size}; a stratified selection needs {want} "
                                f"samples of class {cls} but the split has {len(members)}")
        chosen.append(members[torch.randperm(len(members), generator=generator)[:want]])
    return torch.sort(torch.cat(chosen)).values


def resize_uint8(images: torch.Tensor, image_size: int, chunk: int = 2048) -> torch.Tensor:
    """Bilinear (antialiased) resize of uint8 N x H x W or N x C x H x W to N x C x S x S,
    rounded back to uint8.

    Matches torchvision's transforms.Resize on PIL images up to rounding; done once when the
    data is prepared so that no later stage resizes.
    """
    if images.dim() == 3:
        images = images.unsqueeze(1)
    out = torch.empty((len(images), images.shape[1], image_size, image_size), dtype=torch.uint8)
    for start in range(0, len(images), chunk):
        block = images[start:start + chunk].float()
        if (image_size, image_size) != tuple(block.shape[-2:]):
            block = F.interpolate(block, size=(image_size, image_size), mode="bilinear",
                                  align_corners=False, antialias=True)
        out[start:start + chunk] = block.round_().clamp_(0, 255).to(torch.uint8)
    return out


def corrupt_labels(labels: torch.Tensor, fraction: float, seed: int,
                   n_classes: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Replace round(fraction * N) labels, chosen with a generator seeded by `seed`, by a wrong
    label drawn uniformly from the other n_classes - 1. Returns (noisy labels, changed mask)."""
    generator = torch.Generator().manual_seed(seed)
    n_changed = round(fraction * len(labels))
    changed = torch.zeros(len(labels), dtype=torch.bool)
    changed[torch.randperm(len(labels), generator=generator)[:n_changed]] = True
    offsets = torch.randint(1, n_classes, (len(labels),), generator=generator)
    noisy = torch.where(changed, (labels + offsets) % n_classes, labels)
    return noisy, changed
