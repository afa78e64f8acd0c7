"""The data-set registry: what prepare_data can read, and what each data set is.

A data set is a name in DATASETS with its number of classes, image channels, split sizes, the
sources it can be read from and a loader. A loader returns {"train": (images, labels), "test":
(images, labels)}: uint8 images N x H x W (one channel) or N x C x H x W, int64 labels in
0..n_classes-1, in the data set's official order. Adding a data set is one entry here and one
module with its loader.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Callable

from netunits.data import cifar10, mnist
from netunits.errors import PipelineError


@dataclass(frozen=True)
class DatasetSpec:
    name: str
    n_classes: int
    channels: int
    split_sizes: dict          # split name -> number of images
    sources: tuple             # values of data.source it accepts
    load: Callable             # load(source, data.dir, raw_dir) -> splits
    description: str


DATASETS = {
    "mnist": DatasetSpec("mnist", n_classes=10, channels=1, split_sizes={"train": 60_000, "test": 10_000},
                         sources=("packaged", "idx", "torchvision"), load=mnist.load_source,
                         description="handwritten digits 0-9, 28 x 28 grey (LeCun et al. 1998)"),
    "cifar10": DatasetSpec("cifar10", n_classes=10, channels=3, split_sizes={"train": 50_000, "test": 10_000},
                           sources=("jpeg", "batches"), load=cifar10.load_source,
                           description="32 x 32 colour photographs of 10 classes (Krizhevsky 2009)"),
}


def get_dataset(name: str, key: str = "data.dataset", source: str = "params.yaml") -> DatasetSpec:
    if name not in DATASETS:
        raise PipelineError(f"{source}: '{key}' is {name!r}; allowed data sets: {', '.join(DATASETS)}")
    return DATASETS[name]


def check_request(spec: DatasetSpec, params: Any, source: str = "params.yaml") -> None:
    """Refuse, before any data is read, sizes a split cannot give, sources the data set lacks and
    label noise that leaves nothing to learn."""
    if params.source not in spec.sources:
        raise PipelineError(f"{source}: 'data.source' is {params.source!r}; {spec.name} can be read "
                            f"from {', '.join(spec.sources)}")
    most_noise = (spec.n_classes - 1) / spec.n_classes
    if params.label_noise > most_noise:
        # beyond this a wrong label is more frequent than the right one in every class
        raise PipelineError(f"{source}: 'data.label_noise' is {params.label_noise}; with {spec.n_classes} "
                            f"classes it must be at most {most_noise:.3g}")
    for split, total in spec.split_sizes.items():
        size = getattr(params, f"{split}_size")
        if size > total:
            raise PipelineError(f"{source}: 'data.{split}_size' is {size}; it must be an integer from 1 "
                                f"to {total} (the {split} split of {spec.name})")
