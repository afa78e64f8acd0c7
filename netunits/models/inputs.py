"""How prepared uint8 images become a model's input: scaled to [0, 1], grey repeated to the
model's channels, normalised where the checkpoint says so."""
from __future__ import annotations

from typing import Any, Mapping

import torch

from netunits.errors import PipelineError

INPUT_NORMS = {
    "none": None,                                                     # x / 255, as the ROF notebook
    "imagenet": ([0.485, 0.456, 0.406], [0.229, 0.224, 0.225]),       # torchvision's ImageNet weights
}


def input_spec(in_channels: int, input_norm: str) -> dict[str, Any]:
    """What the checkpoint records about the model's input."""
    norm = INPUT_NORMS[input_norm]
    return {"channels": in_channels, "norm": input_norm,
            "mean": norm[0] if norm else None, "std": norm[1] if norm else None}


def images_to_input(images_u8: torch.Tensor, device: torch.device | str, channels_last: bool,
                    spec: Mapping[str, Any] | None = None) -> torch.Tensor:
    """uint8 N x C x H x W -> float N x channels x H x W: / 255, one grey channel repeated to the
    model's channels (never stored), then (x - mean) / std where the spec has a normalisation."""
    channels = spec["channels"] if spec else 3
    x = images_u8.to(device, non_blocking=True).float().div_(255.0)
    if x.shape[1] != channels:
        x = x.expand(-1, channels, -1, -1)
    if spec and spec["mean"] is not None:
        mean = torch.tensor(spec["mean"], device=device).view(1, -1, 1, 1)
        std = torch.tensor(spec["std"], device=device).view(1, -1, 1, 1)
        x = (x - mean) / std
    memory_format = torch.channels_last if channels_last else torch.contiguous_format
    return x.contiguous(memory_format=memory_format)


def check_channels(image_channels: int, spec: Mapping[str, Any], what: str) -> None:
    if image_channels not in (1, spec["channels"]):
        raise PipelineError(f"{what}: images have {image_channels} channels but the model takes "
                            f"{spec['channels']}; only grey images are repeated to fit")


