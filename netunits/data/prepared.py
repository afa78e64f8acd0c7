"""The prepared format that prepare_data writes and every later stage reads.

A dict with images (uint8 N x C x S x S, the data set's own channels), labels (int64 N: the
labels training uses, with label noise if data.label_noise > 0), indices (int64 N: positions
in the official split), image_size, dataset and n_classes; with label noise also clean_labels.
"""
from __future__ import annotations

from pathlib import Path
from typing import Any

import torch

from netunits.errors import PipelineError
from netunits.files import load_checked

PREPARED_KEYS = {
    "images": lambda v: isinstance(v, torch.Tensor) and v.dtype == torch.uint8 and v.dim() == 4,
    "labels": lambda v: isinstance(v, torch.Tensor) and v.dtype == torch.int64 and v.dim() == 1,
    "indices": lambda v: isinstance(v, torch.Tensor) and v.dim() == 1,
    "image_size": lambda v: isinstance(v, int),
    "dataset": lambda v: isinstance(v, str),
    "n_classes": lambda v: isinstance(v, int) and v >= 2,
}


def load_prepared(path: str | Path) -> dict[str, Any]:
    """A prepare_data output, checked: images and labels pair up, labels in 0..n_classes-1."""
    subset = load_checked(path, PREPARED_KEYS, "prepared subset")
    labels = subset["labels"]
    if len(subset["images"]) != len(labels) or len(labels) == 0 or labels.min() < 0 or \
            labels.max() >= subset["n_classes"]:
        raise PipelineError(f"{path}: images and labels do not pair up or labels are outside "
                            f"0..{subset['n_classes'] - 1}; rebuild it with `dvc repro -f prepare_data`")
    return subset
