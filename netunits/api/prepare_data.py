"""A data set's train and test subsets as compact uint8 tensors (the prepared format,
netunits/data/prepared.py): the chosen samples at the chosen size, with seeded label noise.

From a notebook: `run_prepare_data(PrepareDataInputs(spec, {"train": (images, labels), "test":
(images, labels)}), DataParams(...))` with the official splits as uint8 images and int64 labels.
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import torch

from netunits.data.registry import DatasetSpec, check_request, get_dataset
from netunits.data.subsets import corrupt_labels, resize_uint8, select_indices
from netunits.files import save_torch
from netunits.params import DataParams
from netunits.runtime import check_fits

SPLITS = ("train", "test")


@dataclass
class PrepareDataInputs:
    spec: DatasetSpec
    splits: dict[str, tuple[torch.Tensor, torch.Tensor]]   # the official splits: (uint8 images, labels)


@dataclass
class PrepareDataResult:
    subsets: dict[str, dict]           # "train", "test" -> the prepared subset
    notes: dict[str, str]

    def summary(self) -> str:
        return "\n".join(
            f"{split}: {len(s['indices'])} {s['dataset']} images at {s['image_size']} px, per class "
            f"{s['labels'].bincount(minlength=s['n_classes']).tolist()}{self.notes[split]}"
            for split, s in self.subsets.items())


def load_prepare_data_inputs(config: DataParams, raw_dir: Path, source: str = "params.yaml",
                             out_dir: Path | None = None) -> PrepareDataInputs:
    """The official splits, after the request is checked against the data set (sizes, source,
    label noise) and the subsets' size against memory and `out_dir`'s disk."""
    spec = get_dataset(config.dataset, source=source)
    check_request(spec, config, source)
    n_images = sum(getattr(config, f"{split}_size") for split in SPLITS)
    check_fits(n_images * spec.channels * config.image_size ** 2, out_dir, "the prepared images")
    return PrepareDataInputs(spec, spec.load(config.source, config.dir, raw_dir))


def run_prepare_data(inputs: PrepareDataInputs, config: DataParams, source: str = "params.yaml") -> PrepareDataResult:
    spec, subsets, notes = inputs.spec, {}, {}
    for split in SPLITS:
        images, labels = inputs.splits[split]
        indices = select_indices(labels, getattr(config, f"{split}_size"), config.selection, config.seed,
                                 f"data.{split}_size", spec.n_classes, source)
        subset = {"images": resize_uint8(images[indices], config.image_size), "labels": labels[indices].clone(),
                  "indices": indices, "image_size": config.image_size, "dataset": spec.name,
                  "n_classes": spec.n_classes}
        notes[split] = ""
        if split == "train" and config.label_noise > 0:
            subset["clean_labels"] = subset["labels"]
            subset["labels"], changed = corrupt_labels(subset["labels"], config.label_noise, config.seed,
                                                       spec.n_classes)
            notes[split] = f", {int(changed.sum())} labels replaced by wrong ones"
        subsets[split] = subset
    return PrepareDataResult(subsets, notes)


def write_prepare_data(result: PrepareDataResult, paths: dict[str, Path]) -> None:
    for split, subset in result.subsets.items():
        save_torch(subset, paths[f"{split}_set"])
