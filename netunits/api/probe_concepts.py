"""The probe set network dissection compares units with: images, their pixel-level concept masks
and image-level labels (netunits/data/probe.py), and a figure of a few images with their masks.

mnist: official test digits that the ROF test subset does not use, with the concepts of
netunits/concepts.py computed at probe.mask_size. cifar10: CIFAR-10 training images that the ROF
training subset does not use (the test set stays whole for the reference's accuracies), with the
colour, edge, lightness, texture and position masks and the class, dominant colour, brightness
and colourfulness labels of netunits/concepts_colour.py (colours named by probe.colour_rule).
broden: the first probe.size images of a Broden-format folder (netunits/data/broden.py). From a
notebook: `run_probe_concepts(ProbeConceptsInputs(images=..., labels=...), ProbeParams(...),
DataParams(...))` with the split the probe is drawn from (PROBE_SPLITS) as uint8 images and labels.
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from netunits.concepts import CONCEPTS, concept_annotations
from netunits.concepts_colour import concept_table, natural_probe
from netunits.data import cifar10
from netunits.data.broden import load_broden
from netunits.data.probe import concept_shares, pack_masks, unpack_masks
from netunits.data.registry import get_dataset
from netunits.data.subsets import resize_uint8, select_indices
from netunits.errors import PipelineError
from netunits.files import save_torch
from netunits.params import DataParams, ProbeParams
from netunits.plots import close, probe_figure, save_figure
from netunits.runtime import check_fits

SHOWN_IMAGES, SHOWN_CONCEPTS = 6, 16
# A computed probe's data set: the split its images come from, what they are (in messages and the
# figure) and the number of its pixel-level concepts. MNIST's probe takes test digits after the ROF
# test subset; CIFAR-10's takes training images after the ROF training subset, because "Decomposing
# the Deep" reports its accuracies on the whole test set (cifar/params.yaml frees them with
# data.train_size). The released ResNet20 was trained on every training image: the CIFAR-10 probe
# is unused by ROF, not unseen by the network.
PROBE_SPLITS = {"mnist": "test", "cifar10": "train"}
PROBE_IMAGES = {"mnist": "digits", "cifar10": "images"}
SPLIT_WORDS = {"train": "training", "test": "test"}


def pixel_concept_count(source: str) -> int:
    if source == "cifar10":
        return sum(level == "pixel" for _, _, level, _ in concept_table(list(cifar10.CLASSES)))
    return len(CONCEPTS)


def check_probe_request(config: ProbeParams, data: DataParams, source: str = "params.yaml") -> None:
    """Refuse, before any image is read, a computed probe of another data set than data.dataset or
    larger than what the ROF subset leaves of its split."""
    if config.source not in PROBE_SPLITS:
        return
    spec = get_dataset(data.dataset, source=source)
    if spec.name != config.source:
        what = "handwritten digits" if config.source == "mnist" else "CIFAR-10's natural colour images"
        raise PipelineError(f"{source}: 'probe.source' is {config.source!r} but 'data.dataset' is {spec.name!r}; the "
                            f"computed concepts are those of {what}")
    split = PROBE_SPLITS[config.source]
    used = getattr(data, f"{split}_size")
    left = spec.split_sizes[split] - used
    if config.size > left:
        if config.source == "mnist":
            raise PipelineError(f"{source}: 'probe.size' is {config.size}; after the {used} ROF test digits the "
                                f"test split has {left} left")
        raise _too_large(config.size, left, split, used, f"the {spec.split_sizes[split]}", source)


def _too_large(size: int, left: int, split: str, used: int, total: str, source: str) -> PipelineError:
    return PipelineError(f"{source}: 'probe.size' is {size}; it must be at most {left}, the {SPLIT_WORDS[split]} "
                         f"images that the {used} of data.{split}_size (ROF's subset) leave of {total}")


@dataclass
class ProbeConceptsInputs:
    images: torch.Tensor | None = None     # mnist, cifar10: the split PROBE_SPLITS names (uint8), whose free
                                           # images are drawn
    labels: torch.Tensor | None = None
    probe: dict | None = None              # broden: the probe set as read from the folder


@dataclass
class ProbeConceptsResult:
    probe: dict                            # the probe set (data/probe/probe.pt)
    figure: object                         # a few images and their masks

    def summary(self) -> str:
        probe = self.probe
        shares = concept_shares(probe["pixel_masks"], probe["mask_size"])
        n_pixel = len(shares)
        what = PROBE_IMAGES.get(probe.get("source"), "images")
        return (f"probe: {len(probe['labels'])} {what} at {probe['images'].shape[-1]} px, masks at "
                f"{probe['mask_size']} px; "
                + ", ".join(f"{c['name']} {s:.3f}" for c, s in zip(probe["concepts"], shares))
                + "\nimage-level concepts: "
                + ", ".join(f"{c['name']} {int(n)}"
                            for c, n in zip(probe["concepts"][n_pixel:], probe["image_labels"].sum(0))))


def load_probe_concepts_inputs(config: ProbeParams, data: DataParams, raw_dir: Path, source: str = "params.yaml",
                               out_dir: Path | None = None) -> ProbeConceptsInputs:
    """The images the probe set is drawn from, after the request is checked (and its size against
    memory and `out_dir`'s disk)."""
    check_probe_request(config, data, source)
    check_fits(config.size * (3 * data.image_size ** 2 + pixel_concept_count(config.source) * config.mask_size ** 2),
               out_dir, "the probe set")
    if config.source == "broden":
        return ProbeConceptsInputs(probe=load_broden(config.dir, data.image_size, config.mask_size, config.size,
                                                     source))
    spec = get_dataset(data.dataset, source=source)
    images, labels = spec.load(data.source, data.dir, raw_dir)[PROBE_SPLITS[config.source]]
    return ProbeConceptsInputs(images=images, labels=labels)


def free_indices(labels: torch.Tensor, data: DataParams, split: str, size: int,
                 source: str = "params.yaml") -> torch.Tensor:
    """The first `size` indices of the split that its ROF subset (data.<split>_size, data.selection)
    does not use (with selection first: those after it)."""
    used = select_indices(labels, getattr(data, f"{split}_size"), data.selection, data.seed, f"data.{split}_size",
                          get_dataset(data.dataset).n_classes, source)
    free = torch.ones(len(labels), dtype=torch.bool)
    free[used] = False
    return torch.nonzero(free).flatten()[:size]


def mnist_probe(images: torch.Tensor, labels: torch.Tensor, config: ProbeParams, data: DataParams,
                source: str = "params.yaml") -> tuple[dict, np.ndarray]:
    """The first digits that the ROF test subset does not use (with selection first: those after
    it), with the computed concepts."""
    indices = free_indices(labels, data, "test", config.size, source)
    images, labels = images[indices], labels[indices]
    greys = resize_uint8(images, config.mask_size)[:, 0].float().numpy() / 255.0
    masks, image_labels = concept_annotations(greys, labels.numpy())
    categories = list(dict.fromkeys(c[1] for c in CONCEPTS))
    return {"images": resize_uint8(images, data.image_size), "labels": labels.clone(),
            "indices": indices, "mask_size": config.mask_size,
            "pixel_masks": pack_masks(masks), "image_labels": torch.from_numpy(image_labels),
            "annotated": torch.ones(len(labels), len(categories), dtype=torch.bool),
            "concepts": [{"name": n, "category": c, "level": lv, "description": d} for n, c, lv, d in CONCEPTS],
            "categories": categories, "source": "mnist"}, masks


def cifar10_probe(images: torch.Tensor, labels: torch.Tensor, config: ProbeParams, data: DataParams,
                  source: str = "params.yaml") -> tuple[dict, np.ndarray]:
    """The first training images that the ROF training subset does not use, with the concepts of
    netunits/concepts_colour.py computed at probe.mask_size, colours named by probe.colour_rule."""
    indices = free_indices(labels, data, "train", config.size, source)
    if len(indices) < config.size:     # a folder holding fewer images than CIFAR-10's split
        raise _too_large(config.size, len(indices), "train", data.train_size, f"the {len(labels)} in {data.dir}",
                         source)
    probe, masks = natural_probe(resize_uint8(images[indices], data.image_size), labels[indices], indices,
                                 config.mask_size, cifar10.CLASSES, "cifar10", config.colour_rule)
    probe["split"] = "train"
    return probe, masks


def run_probe_concepts(inputs: ProbeConceptsInputs, config: ProbeParams, data: DataParams,
                       source: str = "params.yaml") -> ProbeConceptsResult:
    if inputs.probe is not None:
        probe = inputs.probe
    elif config.source == "cifar10":
        probe, _ = cifar10_probe(inputs.images, inputs.labels, config, data, source)
    else:
        probe, _ = mnist_probe(inputs.images, inputs.labels, config, data, source)
    shown = probe["images"][:SHOWN_IMAGES].permute(0, 2, 3, 1).numpy()
    size = probe["mask_size"]
    shown_masks = probe["pixel_masks"][:SHOWN_IMAGES, :SHOWN_CONCEPTS]
    masks = unpack_masks(shown_masks, size).view(*shown_masks.shape[:2], size, size).numpy()
    figure = probe_figure(shown[..., 0] if shown.shape[-1] == 1 else shown, masks,
                          [c["name"] for c in probe["concepts"] if c["level"] == "pixel"][:SHOWN_CONCEPTS],
                          PROBE_IMAGES.get(config.source, "digits"))
    return ProbeConceptsResult(probe, figure)


def write_probe_concepts(result: ProbeConceptsResult, paths: dict[str, Path]) -> None:
    save_torch(result.probe, paths["probe"])
    save_figure(result.figure, paths["probe_figure"], 100)
    close(result.figure)
